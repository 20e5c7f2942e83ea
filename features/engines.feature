@OC-ADAPT-5001 @OC-ADAPT-5011 @ORCH-3054 @ORCH-3055 @ORCH-3056 @ORCH-3057 @ORCH-3058
Feature: Every engine behind one canonical stream (SPEC §5, §6, §11)
  A pool may run on any engine that has an adapter: llama.cpp, TGI, Triton
  (vLLM backend) and vLLM, here each on its canned fake speaking the engine's
  real wire format. Whatever the engine, a task streams started → token* →
  metrics → end, the same seeded request gives the same text, engine faults
  map to the same error codes, and the queue policies behave alike.

  Each outline has one row per engine: adding an engine to the suite is one
  row in each Examples table (and one entry in engineKinds).

  @OC-ADAPT-5001 @OC-ADAPT-5011 @OC-CTRL-2020 @OC-CTRL-2023 @ORCH-3027
  Scenario Outline: a <engine> pool streams a task canonically: started, gap-free tokens, metrics, end with the engine's own tokens_out [OC-ADAPT-5001..5011]
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8
    And the engine ends its text after 5 tokens
    And the gateway serves the pool on engine "<engine>"
    And task "a" was submitted to the pool's engine for 4 tokens
    When reader "r" reads the stream of task "a"
    Then the first event of reader "r" is "started"
    And the "started" event of reader "r" has field "engine" = "<engine>"
    And the "started" event of reader "r" has field "engine_version" = "<version>"
    And the "started" event of reader "r" has field "pool_id" = "p"
    And the "started" event of reader "r" has field "replica_id" = "r0"
    And reader "r" got 4 tokens numbered 0 to 3
    And the event ids of reader "r" count 0, 1, 2, … without gaps
    And reader "r" got a "metrics" event between the last token and the end
    And the last event of reader "r" is "end" with tokens_out 4
    And the "end" event of reader "r" has field "finish_reason" = "length"
    # The model ends its text itself after 5 tokens: the end of sequence is
    # not a token event, but the engine counts it in tokens_out.
    Given task "b" was submitted to the pool's engine for 8 tokens
    When reader "r2" reads the stream of task "b"
    Then reader "r2" got 5 tokens numbered 0 to 4
    And the last event of reader "r2" is "end" with tokens_out <eos_tokens_out>
    And the "end" event of reader "r2" has field "finish_reason" = "stop"
    And the metric tasks_started_total{engine="<engine>",engine_version="<version>",pool_id="p",replica_id="r0",priority="interactive"} sums to 2
    And the <engine> engines of the pool get back to 0 requests in flight

    Examples:
      | engine   | version          | eos_tokens_out |
      | llamacpp | b10470-34af94cd9 | 6              |
      | tgi      | 3.3.7            | 6              |
      | triton   | 2.73.0           | 6              |
      | vllm     | 0.11.0           | 6              |

  @OC-TEST-7001 @OC-TEST-7002 @OC-TEST-7003 @ORCH-3045 @ORCH-3046 @ORCH-3047
  Scenario Outline: on <engine>, the same seed and prompt on both replicas of a set give identical tokens: the fake model's words [OC-TEST-7001..7003, ORCH-3045..3047]
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8
    And session "s0" hashes to replica "r0"
    And session "s1" hashes to replica "r1"
    And the gateway serves the pool on engine "<engine>"
    And every replica is ready
    And task "a" in session "s0" was submitted to the pool's engine for 12 tokens with seed 42
    And task "b" in session "s1" was submitted to the pool's engine for 12 tokens with seed 42
    When reader "r0" reads the stream of task "a"
    And reader "r1" reads the stream of task "b"
    Then the "started" events of readers "r0" and "r1" name different replicas
    And readers "r0" and "r1" got the same tokens
    And the token texts of reader "r0" are the fake model's words for seed 42 and prompt "Hello there"

    Examples:
      | engine   |
      | llamacpp |
      | tgi      |
      | triton   |
      | vllm     |

  @OC-TEST-7001 @OC-TEST-7002 @OC-TEST-7003 @ORCH-3045 @ORCH-3046 @ORCH-3047 @OC-ADAPT-5001
  Scenario: the same seeded request on every engine gives the same canonical stream and the same token text [OC-TEST-7001..7003, ORCH-3045..3047]
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8
    And the gateway serves the pool's model on each of these engines:
      | engine   |
      | llamacpp |
      | tgi      |
      | triton   |
      | vllm     |
    When the same task with prompt "The capital of France is" and seed 42 for 12 tokens is streamed once on each of those engines
    Then each of those engines streamed "started", 12 tokens numbered 0 to 11, "metrics" and "end" with tokens_out 12
    And each of those engines streamed the fake model's words for seed 42 and prompt "The capital of France is"

  # <refusal> is how that engine says "overloaded" or "unavailable" before
  # any token: llama.cpp's loading 503, TGI's overloaded frame in a 200
  # stream, Triton's 503 "Exceeds maximum queue size", a 429 in front of vLLM.
  @ORCH-3054 @ORCH-3055 @OC-CORE-1011 @ORCH-3010
  Scenario Outline: on <engine>, a replica refusing before the first token (<refusal>) is retried on the other replica: one complete stream [ORCH-3054..3058]
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8
    And replica "r1" fails with "<refusal>"
    And session "s" hashes to replica "r1"
    And the gateway serves the pool on engine "<engine>"
    And every replica is ready
    And task "a" in session "s" was submitted to the pool's engine for 6 tokens
    When reader "r" reads the stream of task "a"
    Then reader "r" got exactly 1 "started" event
    And reader "r" got 6 tokens numbered 0 to 5
    And the last event of reader "r" is "end" with tokens_out 6
    And the last "metrics" event of reader "r" has field "replica_id" = "r0"
    And the <engine> engine of replica "r1" received 1 completion request
    And the <engine> engine of replica "r0" received 1 completion request

    Examples:
      | engine   | refusal   |
      | llamacpp | start-503 |
      | tgi      | start-429 |
      | triton   | start-503 |
      | vllm     | start-429 |

  @ORCH-3054 @ORCH-3055 @ORCH-3012 @OC-CTRL-2031
  Scenario Outline: on <engine>, when every replica fails before the first token (start-500, <refusal>) the task ends REPLICA_EXHAUSTED, each replica tried once [ORCH-3054..3058]
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8
    And replica "r0" fails with "start-500"
    And replica "r1" fails with "<refusal>"
    And the gateway serves the pool on engine "<engine>"
    And every replica is ready
    When reader "r" submits task "a" to the pool's engine for 6 tokens accepting an event stream
    Then the first event of reader "r" is "started"
    And the last event of reader "r" is an error with code "REPLICA_EXHAUSTED"
    And the "error" event of reader "r" has field "engine" = "<engine>"
    And the "error" event of reader "r" has field "retriable" = true
    And reader "r" got exactly 2 events
    And the <engine> engine of replica "r0" received 1 completion request
    And the <engine> engine of replica "r1" received 1 completion request
    And pool "p" eventually has 0 tasks in flight in /v1/replicasets

    Examples:
      | engine   | refusal   |
      | llamacpp | start-503 |
      | tgi      | start-429 |
      | triton   | start-503 |
      | vllm     | start-429 |

  @ORCH-3056 @ORCH-3057 @OC-CTRL-2031 @ORCH-3011
  Scenario Outline: on <engine>, a failure after the first token (midstream-error, midstream-disconnect) ends the stream with WORKER_RESET and is not retried under failover "error" [ORCH-3054..3058]
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8
    And the pool's failover is "error"
    And replica "r0" fails with "midstream-error"
    And replica "r1" fails with "midstream-disconnect"
    And session "s0" hashes to replica "r0"
    And session "s1" hashes to replica "r1"
    And the gateway serves the pool on engine "<engine>"
    And every replica is ready
    And task "a" in session "s0" was submitted to the pool's engine for 12 tokens
    When reader "ra" reads the stream of task "a"
    Then the first event of reader "ra" is "started"
    And reader "ra" got 2 tokens numbered 0 to 1
    And the last event of reader "ra" is an error with code "WORKER_RESET"
    And the "error" event of reader "ra" has field "engine" = "<engine>"
    And reader "ra" got no "end" event
    And the <engine> engine of replica "r1" received 0 completion requests
    Given task "b" in session "s1" was submitted to the pool's engine for 12 tokens
    When reader "rb" reads the stream of task "b"
    Then reader "rb" got 3 tokens numbered 0 to 2
    And the last event of reader "rb" is an error with code "WORKER_RESET"
    And reader "rb" got no "end" event
    And the <engine> engine of replica "r0" received 1 completion request
    And the <engine> engine of replica "r1" received 1 completion request
    And the <engine> engines of the pool get back to 0 requests in flight

    Examples:
      | engine   |
      | llamacpp |
      | tgi      |
      | triton   |
      | vllm     |

  # Admission estimates prompt tokens at chars_per_token 4; the fakes count a
  # token per word. 40 nine-letter words (~100 estimated tokens) are refused
  # at admission; 70 one-letter words (~35 estimated, 71 for the engine) pass
  # admission and are refused by the engine itself.
  @ORCH-3056 @ORCH-3058 @OC-CORE-1020 @OC-CORE-1021 @OC-CTRL-2030
  Scenario Outline: on <engine>, a prompt beyond the context is INVALID_PARAMS: a 400 at admission when the estimate shows it, else the engine's refusal ends the stream, never retried [ORCH-3054..3058]
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8
    And the engine has a context of 64 tokens per slot
    And the pool's ctx is 64
    And the gateway serves the pool on engine "<engine>"
    And every replica is ready
    When I submit task "a" to the pool's engine for 8 tokens with a prompt of 40 words of 9 letters
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    And the error message mentions "ctx 64"
    And the <engine> engines of the pool received 0 completion requests in all
    When I submit task "b" to the pool's engine for 8 tokens with a prompt of 70 words of 1 letter
    Then the response status is 202
    When reader "r" reads the stream of task "b"
    Then the last event of reader "r" is an error with code "INVALID_PARAMS"
    And the "error" event of reader "r" has field "retriable" = false
    And reader "r" got no "token" event
    And the <engine> engines of the pool received 1 completion request in all

    Examples:
      | engine   |
      | llamacpp |
      | tgi      |
      | triton   |
      | vllm     |

  # Each engine accepts more requests than the pool's one slot, as deployed
  # engines do (TGI's --max-concurrent-requests defaults to 128): the
  # gateway's slot is the limit, so the queue is the gateway's.
  @ORCH-3005 @OC-CORE-1002 @ORCH-2007
  Scenario Outline: on <engine>, a full queue under "reject" answers 429 ADMISSION_REJECT, and the queued task runs after the running one [ORCH-3005]
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 1
    And each engine accepts 4 requests at once
    And the engine streams a token every 15 ms
    And the gateway serves the pool on engine "<engine>"
    And task "a" was submitted to the pool's engine for 30 tokens
    And the <engine> engines of the pool have 1 request in flight
    And task "b" was submitted to the pool's engine for 3 tokens
    When I submit task "c" to the pool's engine for 3 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "reject" and backoff hints
    And the metric admission_backpressure_events_total{engine="<engine>",policy="reject"} sums to 1
    When reader "ra" reads the stream of task "a"
    And reader "rb" reads the stream of task "b"
    Then the last event of reader "ra" is "end" with tokens_out 30
    And the last event of reader "rb" is "end" with tokens_out 3
    And the <engine> engines of the pool received 2 completion requests in all
    And the <engine> engines of the pool get back to 0 requests in flight

    Examples:
      | engine   |
      | llamacpp |
      | tgi      |
      | triton   |
      | vllm     |

  # When TGI runs at its --max-concurrent-requests (here 1, the pool's slot
  # count), a cancel frees the gateway's slot at once but TGI lets go of the
  # canceled request a moment later, so the queued task is refused as
  # overloaded. With no other replica the gateway retries the same replica
  # after a short backoff (50/100/200 ms) instead of failing the task. The
  # race is timing-dependent (about 4 runs in 10 lost the task before the
  # fix): five attempts make a pass by luck unlikely.
  @ORCH-2003 @ORCH-3017 @ORCH-3055
  Scenario Outline: on tgi at its max-concurrent-requests, canceling the running task lets the queued task run (attempt <attempt>) [ORCH-3017, ORCH-3055]
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 1
    And the engine streams a token every 500 ms
    And the gateway serves the pool on engine "tgi"
    And task "a" was submitted to the pool's engine for 50 tokens
    And the tgi engines of the pool have 1 request in flight
    And task "b" was submitted to the pool's engine for 2 tokens
    When I cancel task "a"
    Then the response status is 204
    When reader "rb" reads the stream of task "b"
    Then the last event of reader "rb" is "end" with tokens_out 2

    Examples:
      | attempt |
      | 1       |
      | 2       |
      | 3       |
      | 4       |
      | 5       |
