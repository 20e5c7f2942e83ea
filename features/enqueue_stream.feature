@ORCH-2001 @OC-CTRL-2010 @ORCH-2002 @OC-CTRL-2020
Feature: Enqueue a task and stream its events (SPEC §3.1, §3.2)
  A client enqueues a completion with POST /v1/tasks and reads one canonical
  SSE sequence, started → token* → metrics → end, whose numbered events let
  any reader replay or resume it.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8

  @ORCH-2001 @OC-CTRL-2010
  Scenario: POST /v1/tasks admits a task with 202 and its queue estimate [ORCH-2001]
    When I submit task "a" for 16 tokens
    Then the response status is 202
    And the response field "task_id" is the id of task "a"
    And the response has the fields "queue_position, predicted_start_ms, backoff_ms"
    And the response field "queue_position" is 0

  @ORCH-2002 @OC-CTRL-2020 @OC-CTRL-2021 @OC-CTRL-2023
  Scenario: the stream is started, 16 numbered tokens, metrics and end [OC-CTRL-2020]
    Given task "a" was submitted for 16 tokens
    When reader "r" reads the stream of task "a"
    Then the response status is 200
    And the response header "Content-Type" starts with "text/event-stream"
    And the first event of reader "r" is "started"
    And the "started" event of reader "r" has the fields "queue_position, predicted_start_ms, queue_time_ms, engine, pool_id, replica_id, engine_version, kv_warmth"
    And the "started" event of reader "r" has field "engine" = "llamacpp"
    And the "started" event of reader "r" has field "pool_id" = "p"
    And reader "r" got 16 tokens numbered 0 to 15
    And reader "r" got a "metrics" event between the last token and the end
    And the last event of reader "r" is "end" with tokens_out 16
    And the event ids of reader "r" count 0, 1, 2, … without gaps

  @OC-CTRL-2010 @OC-CTRL-2020
  Scenario: one round trip: POST with Accept: text/event-stream answers 200 with the stream [OC-CTRL-2010]
    When reader "r" submits task "a" for 16 tokens accepting an event stream
    Then the response status is 200
    And the response header "Content-Type" starts with "text/event-stream"
    And the response header "X-Correlation-Id" is not empty
    And the first event of reader "r" is "started"
    And reader "r" got 16 tokens numbered 0 to 15
    And reader "r" got a "metrics" event between the last token and the end
    And the last event of reader "r" is "end" with tokens_out 16
    And the event ids of reader "r" count 0, 1, 2, … without gaps
    When reader "late" reads the stream of task "a"
    Then reader "late" saw the same events as reader "r"

  @ORCH-2002 @OC-CTRL-2022
  Scenario: a reader attaching after the end replays the whole log [ORCH-2002]
    Given task "a" was submitted for 16 tokens
    And reader "first" reads the stream of task "a"
    When reader "late" reads the stream of task "a"
    Then reader "late" saw the same events as reader "first"
    And the last event of reader "late" is "end" with tokens_out 16

  @OC-CTRL-2022
  Scenario Outline: Last-Event-ID resumes after token <i> with no loss or duplicate [OC-CTRL-2022]
    Given the engine streams a token every 5 ms
    And task "a" was submitted for 16 tokens
    When reader "r" reads the stream of task "a" until token <i>
    And reader "r" disconnects
    And reader "r" reconnects with the Last-Event-ID it saw and reads to the end
    And reader "full" reads the stream of task "a"
    Then reader "r" saw the same events as reader "full"
    And the event ids of reader "r" count 0, 1, 2, … without gaps
    And reader "r" got 16 tokens numbered 0 to 15
    And the last event of reader "r" is "end" with tokens_out 16

    Examples:
      | i  |
      | 0  |
      | 7  |
      | 15 |

  @ORCH-2002 @OC-CTRL-2020
  Scenario: two concurrent readers of one task each get every event [ORCH-2002]
    Given the engine streams a token every 5 ms
    And task "a" was submitted for 16 tokens
    When readers "x" and "y" read the stream of task "a" at the same time
    Then reader "x" saw the same events as reader "y"
    And reader "x" got 16 tokens numbered 0 to 15
    And the last event of reader "x" is "end" with tokens_out 16

  @OC-CTRL-2052
  Scenario: X-Correlation-Id is echoed when the request sends one [OC-CTRL-2052]
    When I submit task "a" for 4 tokens with header "X-Correlation-Id" set to "corr-42"
    Then the response status is 202
    And the response header "X-Correlation-Id" is "corr-42"
    When reader "r" reads the stream of task "a" with header "X-Correlation-Id" set to "corr-43"
    Then the response header "X-Correlation-Id" is "corr-43"

  @OC-CTRL-2052
  Scenario: X-Correlation-Id is generated when the request sends none [OC-CTRL-2052]
    When I submit task "a" for 4 tokens
    Then the response status is 202
    And the response header "X-Correlation-Id" is not empty
    When reader "r" reads the stream of task "a"
    Then the response header "X-Correlation-Id" is not empty
    And the response header "X-Correlation-Id" differs from the previous response's
    When I post the task body {}
    Then the response status is 400
    And the response header "X-Correlation-Id" is not empty

  @ORCH-2001 @ORCH-2002
  Scenario: an admitted task_id is still a 409 duplicate after its log is dropped [ORCH-2001]
    Given finished task logs are kept for 100 ms
    And task "a" was submitted for 4 tokens
    And reader "r" reads the stream of task "a"
    Then the stream of task "a" eventually answers 404
    When I submit task "a" again
    Then the response status is 409
    And the response is an error with code "INVALID_PARAMS"

  @ORCH-3045 @ORCH-2001
  Scenario: the same seed and prompt give identical token streams [ORCH-3045]
    Given task "a" was submitted for 16 tokens with seed 1234
    And task "b" was submitted for 16 tokens with seed 1234
    When reader "ra" reads the stream of task "a"
    And reader "rb" reads the stream of task "b"
    Then readers "ra" and "rb" got the same tokens

  @ORCH-2001 @ORCH-3045
  Scenario: with no seed, the injected seed is a stable hash of task_id [ORCH-2001]
    Given task "a" was submitted for 16 tokens
    And reader "mine" reads the stream of task "a"
    When I submit task "a" again with key "sk-other"
    Then the response status is 202
    When reader "theirs" reads the stream of task "a" with key "sk-other"
    Then readers "mine" and "theirs" got the same tokens

  @ORCH-2002
  Scenario: tokens are valid UTF-8 when the engine splits multi-byte characters [ORCH-2002]
    Given the engine fails with "split-utf8"
    And task "a" was submitted for 20 tokens
    When reader "r" reads the stream of task "a"
    Then the text of reader "r" is valid UTF-8 containing "😀, 😂, ö, 日本"
    And reader "r" got at least 10 tokens numbered from 0
    And the last event of reader "r" is "end" with tokens_out 20
