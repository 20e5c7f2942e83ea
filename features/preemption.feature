@ORCH-3079 @ORCH-3080 @ORCH-3081 @ORCH-3082 @ORCH-3083 @ORCH-3084 @ORCH-3085 @ORCH-3086 @ORCH-3087
Feature: Preemption (SPEC §4.4)
  With preemption: hard, an interactive newcomer in a full pool aborts the
  running lower-priority task that started last; its stream surfaces
  preempted:true in a metrics event and the task resumes later from its text
  so far, reading as one gap-free sequence whose end.tokens_out sums the
  segments. A determinism: strict task is not resumed: it ends with
  WORKER_RESET. With preemption: soft nothing running is aborted.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 8
    And the engine streams a token every 10 ms

  @ORCH-3079 @ORCH-3027
  Scenario: hard: an interactive newcomer preempts a running batch task, which resumes as one gap-free stream [ORCH-3079..3087]
    Given the pool's preemption is "hard"
    And batch task "b" was submitted for 40 tokens
    And reader "rb" reads the stream of task "b" until token 4
    When reader "ri" submits interactive task "i" for 3 tokens accepting an event stream
    Then the last event of reader "ri" is "end" with tokens_out 3
    When reader "rb" reads to the end
    Then reader "rb" got a "metrics" event with field "preempted" = true
    And reader "rb" got exactly 1 "started" event
    And reader "rb" got 40 tokens numbered 0 to 39
    And the last event of reader "rb" is "end" with tokens_out 40
    And the event ids of reader "rb" count 0, 1, 2, … without gaps
    And the engine received 3 completion requests
    And the metric preemptions_total{mode="hard",engine="llamacpp"} sums to 1
    And the metric resumptions_total{engine="llamacpp"} sums to 1
    When reader "late" reads the stream of task "b"
    Then reader "late" saw the same events as reader "rb"

  @ORCH-3079
  Scenario: hard: of two running batch tasks, the one that started last is preempted [ORCH-3079..3087]
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8
    And the pool's preemption is "hard"
    And batch task "first" was submitted for 40 tokens
    And reader "r1" reads the stream of task "first" until token 2
    And batch task "second" was submitted for 40 tokens
    And reader "r2" reads the stream of task "second" until token 2
    When reader "ri" submits interactive task "i" for 3 tokens accepting an event stream
    Then the last event of reader "ri" is "end" with tokens_out 3
    When reader "r1" reads to the end
    And reader "r2" reads to the end
    Then reader "r2" got a "metrics" event with field "preempted" = true
    And reader "r1" got no "metrics" event with field "preempted" = true
    And reader "r1" got 40 tokens numbered 0 to 39
    And reader "r2" got 40 tokens numbered 0 to 39
    And the last event of reader "r1" is "end" with tokens_out 40
    And the last event of reader "r2" is "end" with tokens_out 40
    And the metric preemptions_total{mode="hard",engine="llamacpp"} sums to 1

  @ORCH-3079
  Scenario: hard: a preempted determinism strict task ends with WORKER_RESET instead of resuming [ORCH-3079..3087]
    Given the pool's preemption is "hard"
    And batch task "b" was submitted for 40 tokens with determinism "strict"
    And reader "rb" reads the stream of task "b" until token 4
    When reader "ri" submits interactive task "i" for 3 tokens accepting an event stream
    Then the last event of reader "ri" is "end" with tokens_out 3
    When reader "rb" reads to the end
    Then the last event of reader "rb" is an error with code "WORKER_RESET"
    And reader "rb" got no "end" event
    And reader "rb" got at least 5 tokens numbered from 0
    And the engine received 2 completion requests
    And the metric preemptions_total{mode="hard",engine="llamacpp"} sums to 1
    And the metric resumptions_total{engine="llamacpp"} is 0 or absent

  @ORCH-3079
  Scenario: hard: running interactive work is never preempted [ORCH-3079..3087]
    Given the pool's preemption is "hard"
    And interactive task "a" was submitted for 40 tokens
    And reader "ra" reads the stream of task "a" until token 4
    When reader "ri" submits interactive task "i" for 3 tokens accepting an event stream
    Then the last event of reader "ri" is "end" with tokens_out 3
    When reader "ra" reads to the end
    Then reader "ra" got no "metrics" event with field "preempted" = true
    And reader "ra" got 40 tokens numbered 0 to 39
    And the last event of reader "ra" is "end" with tokens_out 40
    And the engine received 2 completion requests
    And the metric preemptions_total{mode="hard",engine="llamacpp"} is 0 or absent

  @ORCH-3079
  Scenario: soft: an interactive newcomer waits; the running batch task is not aborted [ORCH-3079..3087]
    Given the pool's preemption is "soft"
    And batch task "b" was submitted for 40 tokens
    And reader "rb" reads the stream of task "b" until token 4
    When reader "ri" submits interactive task "i" for 3 tokens accepting an event stream
    Then the last event of reader "ri" is "end" with tokens_out 3
    When reader "rb" reads to the end
    Then reader "rb" got no "metrics" event with field "preempted" = true
    And reader "rb" got exactly 1 "started" event
    And reader "rb" got 40 tokens numbered 0 to 39
    And the last event of reader "rb" is "end" with tokens_out 40
    And the engine received 2 completion requests
    And the metric preemptions_total{mode="hard",engine="llamacpp"} is 0 or absent
    And the metric resumptions_total{engine="llamacpp"} is 0 or absent
