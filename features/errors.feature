@ORCH-2006 @OC-CTRL-2030 @OC-CTRL-2031 @ORCH-3093
Feature: Error taxonomy (SPEC §3.6)
  Bad requests get 400 INVALID_PARAMS before anything is queued; engine
  faults end the stream with a terminal error event, never an end; every
  JSON error uses the envelope {code, message, retriable, …}.

  Background:
    Given a pool "p" of model "tiny-llama" with 1 replica of 2 slots and queue capacity 8

  @ORCH-2006 @OC-CTRL-2030 @ORCH-2001 @OC-CORE-1020 @OC-CORE-1021
  Scenario Outline: a bad request (<case>) gets 400 INVALID_PARAMS [OC-CTRL-2030]
    When I post the task body <body>
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    And the response field "retriable" is false
    And the error message mentions "<mentions>"

    Examples:
      | case                   | body                                                                                                                  | mentions       |
      | unknown field          | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","colour":"red"}                        | colour         |
      | missing task_id        | {"session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi"}                                                         | task_id        |
      | task_id not a uuid     | {"task_id":"task-1","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi"}                                      | task_id        |
      | session_id missing     | {"task_id":"$uuid","model_ref":"tiny-llama","prompt":"hi"}                                                            | session_id     |
      | workload embedding     | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","workload":"embedding","inputs":["hi"]}             | embedding      |
      | workload rerank        | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","workload":"rerank","inputs":["hi"]}                | rerank         |
      | unknown model_ref      | {"task_id":"$uuid","session_id":"$uuid","model_ref":"gpt-9","engine":"llamacpp","prompt":"hi"}                        | tiny-llama     |
      | engine not served      | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","engine":"vllm","prompt":"hi"}                       | tiny-llama     |
      | ctx above pool's limit | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","ctx":100000}                          | ctx            |
      | token budget exceeded  | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","max_tokens":5000}                     | max_tokens     |
      | over max_tokens_limit  | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","max_tokens":40000}                    | max_tokens     |
      | malformed JSON         | {"task_id":"$uuid","session_id":                                                                                      | JSON           |
      | not an object          | ["hello"]                                                                                                             | JSON object    |
      | wrong type             | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","max_tokens":"many"}                   | max_tokens     |
      | tenant in the body     | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","tenant":"t2"}                         | tenant         |
      | no prompt              | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama"}                                                     | prompt         |
      | bad priority           | {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","priority":"urgent"}                   | priority       |

  @ORCH-2006 @OC-CTRL-2031
  Scenario Outline: an engine failing after the first token (<fault>) ends the stream with WORKER_RESET [OC-CTRL-2031]
    Given the engine fails with "<fault>"
    And task "a" was submitted for 16 tokens
    When reader "r" reads the stream of task "a"
    Then the first event of reader "r" is "started"
    And reader "r" got at least 1 token numbered from 0
    And the last event of reader "r" is an error with code "WORKER_RESET"
    And reader "r" got no "end" event

    Examples:
      | fault                |
      | midstream-error      |
      | midstream-disconnect |
      | malformed            |

  @ORCH-2006 @OC-CTRL-2031
  Scenario: an engine failing before the first token ends the stream with REPLICA_EXHAUSTED [OC-CTRL-2031]
    Given the engine fails with "start-500"
    And task "a" was submitted for 16 tokens
    When reader "r" reads the stream of task "a"
    Then the last event of reader "r" is an error with code "REPLICA_EXHAUSTED"
    And reader "r" got no "token" event
    And reader "r" got no "end" event

  @ORCH-2007 @OC-CTRL-2011 @OC-POOL-3001
  Scenario: a pool whose only replica is still loading answers 503 POOL_UNREADY [OC-POOL-3001, ORCH-2007]
    Given the engine is still loading its model
    When I submit task "a" for 4 tokens
    Then the response status is 503
    And the response is an error with code "POOL_UNREADY"
    And the response field "retriable" is true
    And the response header "Retry-After" is an integer of at least 1
    And the response header "X-Backoff-Ms" is an integer of at least 1
    When I GET "/readyz" with no key
    Then the response status is 503

  @OC-CORE-1020 @OC-CORE-1021
  Scenario: the engine's smaller per-slot context is the pool's limit [OC-CORE-1020]
    Given the engine has a context of 1024 tokens per slot
    When I post the task body {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","ctx":2000,"max_tokens":16}
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    And the error message mentions "1024"
    When I post the task body {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","max_tokens":2000}
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    When I post the task body {"task_id":"$uuid","session_id":"$uuid","model_ref":"tiny-llama","prompt":"hi","ctx":1000,"max_tokens":16}
    Then the response status is 202

  @OC-CTRL-2052 @ORCH-2006 @OC-CTRL-2040
  Scenario: an oversized request body gets a clear 4xx JSON error with X-Correlation-Id [OC-CTRL-2052]
    When I post a task body declared as 3000000 bytes, sending only its first KiB
    Then the response status is a client error
    And the response is a JSON error envelope
    And the response header "X-Correlation-Id" is not empty

  # Bug: orchd answers 413 as soon as Content-Length exceeds the limit and
  # closes the connection at once; a client still writing its body (as
  # net/http and curl do) often gets "connection reset by peer" instead of
  # the 413, because the unread body in the server's receive buffer turns the
  # close into a TCP RST. Fix: drain (bounded) or half-close and linger
  # before closing, as net/http's server does.
  @OC-CTRL-2040 @ORCH-2006
  Scenario: a client sending a whole oversized body still receives the 4xx [OC-CTRL-2040]
    When I post a task body of 3000000 bytes
    Then the response status is a client error
    And the response is a JSON error envelope

  @OC-CTRL-2052 @ORCH-2006 @OC-CTRL-2040
  Scenario: oversized request headers get a clear 4xx JSON error with X-Correlation-Id [OC-CTRL-2052]
    When I GET "/healthz" with a 20000-byte "X-Big" header
    Then the response status is a client error
    And the response is a JSON error envelope
    And the response header "X-Correlation-Id" is not empty
