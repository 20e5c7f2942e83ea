@ORCH-2007 @OC-CTRL-2011 @ORCH-3005 @OC-CORE-1002
Feature: Backpressure when a pool's queue is full (SPEC §3.1, §3.6, §4.2)
  A full queue under the reject policy answers 429 ADMISSION_REJECT with
  backoff hints; rejected ids are not remembered, admitted ones are.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 1
    And the engine streams a token every 5 ms
    And task "running" was submitted for 2000 tokens
    And the engine has 1 request in flight
    And task "queued" was submitted for 4 tokens

  @ORCH-2007 @OC-CTRL-2011 @ORCH-3005
  Scenario: the task after a full queue gets 429 ADMISSION_REJECT with Retry-After and X-Backoff-Ms [ORCH-2007]
    When I submit task "rejected" for 4 tokens
    Then the response status is 429
    And the response is an error with code "ADMISSION_REJECT"
    And the response field "policy_label" is "reject"
    And the response field "retriable" is true
    And the response header "Retry-After" is an integer of at least 1
    And the response header "X-Backoff-Ms" is an integer of at least 1
    And the response field "retry_after_ms" equals the response header "X-Backoff-Ms"

  @ORCH-2007 @OC-CTRL-2010
  Scenario: a rejection of the one-round-trip form is still a JSON 429 [OC-CTRL-2010]
    When I submit task "rejected" for 4 tokens accepting an event stream
    Then the response status is 429
    And the response is an error with code "ADMISSION_REJECT"
    And the response header "Retry-After" is an integer of at least 1

  @ORCH-2001 @ORCH-2007
  Scenario: a rejected task_id may be retried; an admitted one is a 409 duplicate [ORCH-2001]
    When I submit task "rejected" for 4 tokens
    Then the response status is 429
    When I cancel task "running"
    And reader "q" reads the stream of task "queued"
    And I submit task "rejected" again
    Then the response status is 202
    When I submit task "rejected" again
    Then the response status is 409
    And the response is an error with code "INVALID_PARAMS"
    When I submit task "queued" again
    Then the response status is 409

  @ORCH-3027 @OC-CORE-1002
  Scenario: rejections are counted in /metrics [ORCH-3027]
    When I submit task "rejected" for 4 tokens
    Then the response status is 429
    And the metric tasks_rejected_total{engine="llamacpp",reason="reject"} is at least 1
    And the metric admission_backpressure_events_total{engine="llamacpp",policy="reject"} is at least 1

  @OC-CTRL-2021
  Scenario: the queued task's started event repeats its admission estimate [OC-CTRL-2021]
    When I cancel task "running"
    And reader "q" reads the stream of task "queued"
    Then the "started" event of reader "q" repeats the "queue_position, predicted_start_ms" of task "queued"'s admission
    And the last event of reader "q" is "end" with tokens_out 4

  @ORCH-2004 @ORCH-2007
  Scenario: a rejected task does not open or count a session turn [ORCH-2004]
    When I submit task "rejected" in session "s" for 4 tokens
    Then the response status is 429
    When I get session "s"
    Then the response status is 404
