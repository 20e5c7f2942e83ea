@ORCH-3005 @OC-CORE-1001 @OC-CORE-1002
Feature: Full policies of a pool's queue (SPEC §4.1, §4.2, §3.6)
  A pool's queue holds queue.capacity tasks across priorities; a newcomer
  finding it full is handled by the pool's full_policy: reject answers 429,
  drop-lru drops the oldest queued task of equal or lower priority,
  shed-low-priority sheds the newest queued task of strictly lower priority.
  A dropped or shed task's stream is a single error event. Every decision
  counts in admission_backpressure_events_total{engine,policy}.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 2
    And the engine streams a token every 5 ms

  @ORCH-3005 @OC-CORE-1002 @ORCH-2007
  Scenario: reject: a full queue answers 429 ADMISSION_REJECT and keeps what it queued [ORCH-3005]
    Given the pool's full policy is "reject"
    And task "running" was submitted for 2000 tokens
    And the engine has 1 request in flight
    And interactive task "q1" was submitted for 4 tokens
    And batch task "q2" was submitted for 4 tokens
    When I submit interactive task "late" for 4 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "reject" and backoff hints
    And the response header "X-Queue-Position" is an integer of at least 1
    When I submit batch task "later" for 4 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "reject" and backoff hints
    And the metric admission_backpressure_events_total{engine="llamacpp",policy="reject"} sums to 2
    And the metric tasks_rejected_total{engine="llamacpp",reason="reject"} sums to 2
    When I cancel task "running"
    And reader "r1" reads the stream of task "q1"
    And reader "r2" reads the stream of task "q2"
    Then the last event of reader "r1" is "end" with tokens_out 4
    And the last event of reader "r2" is "end" with tokens_out 4

  @ORCH-3005 @OC-CORE-1002 @OC-CTRL-2031
  Scenario: drop-lru: the oldest queued task is dropped with a single QUEUE_FULL_DROP_LRU event; a batch newcomer cannot drop interactive work [ORCH-3005]
    Given the pool's full policy is "drop-lru"
    And task "running" was submitted for 2000 tokens
    And the engine has 1 request in flight
    And interactive task "old1" was submitted for 4 tokens
    And interactive task "old2" was submitted for 4 tokens
    When I submit batch task "low" for 4 tokens
    Then the response is a 429 "QUEUE_FULL_DROP_LRU" with policy_label "drop-lru" and backoff hints
    And the response header "X-Queue-Position" is an integer of at least 1
    When I submit interactive task "new" for 4 tokens
    Then the response status is 202
    When reader "d" reads the stream of task "old1"
    Then reader "d" got exactly 1 event
    And the last event of reader "d" is an error with code "QUEUE_FULL_DROP_LRU"
    And the metric admission_backpressure_events_total{engine="llamacpp",policy="drop-lru"} sums to 2
    And the metric tasks_rejected_total{engine="llamacpp",reason="drop-lru"} sums to 1
    And the metric tasks_canceled_total{engine="llamacpp",pool_id="p",reason="dropped"} sums to 1
    When I cancel task "running"
    And reader "o2" reads the stream of task "old2"
    And reader "n" reads the stream of task "new"
    Then the last event of reader "o2" is "end" with tokens_out 4
    And the last event of reader "n" is "end" with tokens_out 4
    # The rejected batch task was not remembered: its id may be retried.
    When I submit task "low" again
    Then the response status is 202

  @ORCH-3005 @OC-CORE-1002
  Scenario: drop-lru drops only work of equal or lower priority, even when older work waits [ORCH-3005]
    Given the pool's full policy is "drop-lru"
    And task "running" was submitted for 2000 tokens
    And the engine has 1 request in flight
    And interactive task "older" was submitted for 4 tokens
    And batch task "younger" was submitted for 4 tokens
    When I submit batch task "newcomer" for 4 tokens
    Then the response status is 202
    When reader "d" reads the stream of task "younger"
    Then reader "d" got exactly 1 event
    And the last event of reader "d" is an error with code "QUEUE_FULL_DROP_LRU"
    When I cancel task "running"
    And reader "o" reads the stream of task "older"
    And reader "n" reads the stream of task "newcomer"
    Then the last event of reader "o" is "end" with tokens_out 4
    And the last event of reader "n" is "end" with tokens_out 4

  @ORCH-3005 @OC-CORE-1002 @ORCH-3079
  Scenario: shed-low-priority: the newest queued batch task is shed for interactive work; with nothing lower to shed the newcomer gets 429 [ORCH-3005]
    Given the pool's full policy is "shed-low-priority"
    And task "running" was submitted for 2000 tokens
    And the engine has 1 request in flight
    And batch task "b1" was submitted for 4 tokens
    And batch task "b2" was submitted for 4 tokens
    # A batch newcomer finds nothing of strictly lower priority.
    When I submit batch task "b3" for 4 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "shed-low-priority" and backoff hints
    And the response header "X-Queue-Position" is an integer of at least 1
    When I submit interactive task "i1" for 4 tokens
    Then the response status is 202
    When reader "s2" reads the stream of task "b2"
    Then reader "s2" got exactly 1 event
    And the last event of reader "s2" is an error with code "ADMISSION_REJECT"
    And the "error" event of reader "s2" has field "message" mentioning "shed"
    When I submit interactive task "i2" for 4 tokens
    Then the response status is 202
    When reader "s1" reads the stream of task "b1"
    Then reader "s1" got exactly 1 event
    And the last event of reader "s1" is an error with code "ADMISSION_REJECT"
    When I submit interactive task "i3" for 4 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "shed-low-priority" and backoff hints
    And the response header "X-Queue-Position" is an integer of at least 1
    And the metric admission_backpressure_events_total{engine="llamacpp",policy="shed-low-priority"} sums to 4
    And the metric tasks_rejected_total{engine="llamacpp",reason="shed-low-priority"} sums to 2
    And the metric tasks_canceled_total{engine="llamacpp",pool_id="p",reason="shed"} sums to 2
    And the metric preemptions_total{mode="soft",engine="llamacpp"} sums to 2
    When I cancel task "running"
    And reader "r1" reads the stream of task "i1"
    And reader "r2" reads the stream of task "i2"
    Then the last event of reader "r1" is "end" with tokens_out 4
    And the last event of reader "r2" is "end" with tokens_out 4
