@ORCH-2003 @OC-CTRL-2012
Feature: Cancel a task (SPEC §3.3)
  POST /v1/tasks/{id}/cancel answers 204; the task's stream ends with a
  CANCELED error and nothing after it; a running task's engine request is
  aborted so its slot is freed.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 4
    And the engine streams a token every 5 ms

  @ORCH-2003 @ORCH-3026 @ORCH-3017 @OC-CTRL-2052
  Scenario: canceling a running task ends its stream with CANCELED and frees the slot [ORCH-3026, ORCH-3017]
    Given task "a" was submitted for 2000 tokens
    And reader "r" reads the stream of task "a" until token 3
    And the engine has 1 request in flight
    When I cancel task "a"
    Then the response status is 204
    And the response has no header "X-Correlation-Id"
    When reader "r" reads to the end
    Then the last event of reader "r" is an error with code "CANCELED"
    And reader "r" got at least 4 tokens numbered from 0
    And reader "r" got no "end" event
    And the engine gets back to 0 requests in flight
    When reader "late" reads the stream of task "a"
    Then reader "late" saw the same events as reader "r"
    # The freed slot serves the next task.
    Given task "b" was submitted for 4 tokens
    When reader "rb" reads the stream of task "b"
    Then the last event of reader "rb" is "end" with tokens_out 4

  @ORCH-2003 @OC-CTRL-2012
  Scenario: canceling a queued task removes it; its stream is a single CANCELED error [OC-CTRL-2012]
    Given task "a" was submitted for 2000 tokens
    And the engine has 1 request in flight
    And task "b" was submitted for 4 tokens
    And the response field "predicted_start_ms" is greater than 0
    When I cancel task "b"
    Then the response status is 204
    When reader "r" reads the stream of task "b"
    Then reader "r" got exactly 1 event
    And the last event of reader "r" is an error with code "CANCELED"
    And the engine received 1 completion request

  @ORCH-2003
  Scenario: canceling an unknown task answers 404 [ORCH-2003]
    When I cancel an unknown task
    Then the response status is 404
    And the response has the fields "code, message, retriable"

  @ORCH-2002 @ORCH-3017
  Scenario: a running task nobody reads is canceled after detach_grace_ms, reason "abandoned" [ORCH-2002]
    Given a running task with no reader is abandoned after 100 ms
    And task "a" was submitted for 2000 tokens
    Then the metric tasks_canceled_total{pool_id="p",reason="abandoned"} sums to 1
    And the engine gets back to 0 requests in flight
    When reader "late" reads the stream of task "a"
    Then the last event of reader "late" is an error with code "CANCELED"

  @ORCH-2002 @OC-CTRL-2022
  Scenario: a reader that reattaches within detach_grace_ms loses nothing [OC-CTRL-2022]
    Given a running task with no reader is abandoned after 300 ms
    And task "a" was submitted for 200 tokens
    When reader "r" reads the stream of task "a" until token 3
    And reader "r" disconnects
    And reader "r" reconnects with the Last-Event-ID it saw and reads to the end
    Then reader "r" got 200 tokens numbered 0 to 199
    And the last event of reader "r" is "end" with tokens_out 200
    And the event ids of reader "r" count 0, 1, 2, … without gaps

  @ORCH-2002 @OC-CTRL-2020
  Scenario: a queued task's stream sends keep-alive comments until it starts [ORCH-2002]
    Given streams send a keep-alive every 20 ms
    And task "a" was submitted for 2000 tokens
    And the engine has 1 request in flight
    And task "b" was submitted for 4 tokens
    When reader "r" opens the stream of task "b" and waits for a keep-alive
    And I cancel task "a"
    And reader "r" reads to the end
    Then reader "r" got a keep-alive comment before "started"
    And the last event of reader "r" is "end" with tokens_out 4
