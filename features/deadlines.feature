@ORCH-3079 @ORCH-3080 @ORCH-3081 @ORCH-3082 @ORCH-3083 @ORCH-3084 @ORCH-3085 @ORCH-3086 @ORCH-3087
Feature: Deadlines and estimates (SPEC §4.4, §3.1, §3.6)
  A task may carry deadline_ms, a budget from now. An infeasible deadline is
  rejected before anything is queued with 400 DEADLINE_UNMET and the
  predicted end; a feasible one is admitted, its stream's metrics carry
  on_time_probability, and deadlines_met_ratio{priority} reports the
  outcome. Every 202 carries the queue estimate in X-Queue-Position and
  X-Queue-ETA-Ms.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 8

  @ORCH-3079 @ORCH-2006
  Scenario: an infeasible deadline_ms gets 400 DEADLINE_UNMET with predicted_end_ms, and nothing is queued [ORCH-3079]
    When I submit task "late" for 1000 tokens with deadline_ms 1
    Then the response status is 400
    And the response is an error with code "DEADLINE_UNMET"
    And the response field "predicted_end_ms" is greater than 1
    And the engine received 0 completion requests
    # Rejected, so not remembered: the id may be submitted again.
    When I submit task "late" for 4 tokens with deadline_ms 60000
    Then the response status is 202

  @ORCH-3079 @OC-CTRL-2023
  Scenario: a generous deadline is admitted, met with on_time_probability 1 and counted in deadlines_met_ratio [ORCH-3079]
    When I submit task "a" for 4 tokens with deadline_ms 60000
    Then the response status is 202
    And the response header "X-Queue-Position" is "0"
    And the response header "X-Queue-ETA-Ms" is an integer of at least 0
    When reader "r" reads the stream of task "a"
    Then the last event of reader "r" is "end" with tokens_out 4
    And reader "r" got a "metrics" event with field "on_time_probability" = 1
    And the metrics have these series:
      | series              | labels   |
      | deadlines_met_ratio | priority |
    And the metric deadlines_met_ratio{priority="interactive"} sums to 1

  @ORCH-3079 @OC-CORE-1001
  Scenario: behind a busy slot, each 202 counts the tasks queued ahead and a positive ETA [ORCH-3079]
    Given the engine streams a token every 5 ms
    And task "running" was submitted for 2000 tokens
    And the engine has 1 request in flight
    When I submit task "q1" for 4 tokens
    Then the response status is 202
    And the response header "X-Queue-Position" is "0"
    And the response header "X-Queue-ETA-Ms" is an integer of at least 1
    And the response field "queue_position" is 0
    When I submit task "q2" for 4 tokens
    Then the response status is 202
    And the response header "X-Queue-Position" is "1"
    And the response header "X-Queue-ETA-Ms" is an integer of at least 1
    And the response field "queue_position" is 1

  @ORCH-3079
  Scenario: within a tenant's queue the earlier deadline dispatches first (EDF) [ORCH-3079]
    Given the engine streams a token every 10 ms
    And task "running" was submitted for 2000 tokens
    And the engine has 1 request in flight
    When I submit task "loose" for 10 tokens with deadline_ms 60000
    Then the response status is 202
    When I submit task "tight" for 10 tokens with deadline_ms 30000
    Then the response status is 202
    And the response header "X-Queue-Position" is "0"
    When I cancel task "running"
    And reader "l" reads the stream of task "loose"
    And reader "t" reads the stream of task "tight"
    Then the last event of reader "t" is "end" with tokens_out 10
    And the last event of reader "l" is "end" with tokens_out 10
    And the "started" event of reader "t" has a smaller "queue_time_ms" than that of reader "l"

  @ORCH-3079
  Scenario: a task that ends well within its deadline counts as met in deadlines_met_ratio [ORCH-3079]
    Given the engine streams a token every 10 ms
    When I submit task "a" for 20 tokens with deadline_ms 3000
    Then the response status is 202
    When reader "r" reads the stream of task "a"
    Then the last event of reader "r" is "end" with tokens_out 20
    And the metric deadlines_met_ratio{priority="interactive"} sums to 1
    And reader "r" got a "metrics" event with field "on_time_probability" = 1
