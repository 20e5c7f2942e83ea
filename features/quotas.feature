@ORCH-3006 @ORCH-3075 @ORCH-3076 @ORCH-3077
Feature: Per-tenant quotas (SPEC §4.3, §3.1)
  A tenant's max_concurrent (queued + running tasks) and rps (a token bucket
  with burst) are enforced before enqueue: 429 ADMISSION_REJECT with
  policy_label tenant-quota. Other tenants are unaffected, and a rejected
  request changes nothing: its task_id may be submitted again later.
  Key sk-test acts as tenant t1, sk-other as tenant t2.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8
    And the engine streams a token every 5 ms

  @ORCH-3006
  Scenario: max_concurrent 1: a second concurrent task of the tenant gets 429 tenant-quota [ORCH-3006]
    Given these tenants are configured:
      | id | max_concurrent |
      | t1 | 1              |
    And task "a" was submitted for 40 tokens
    When I submit task "b" for 4 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "tenant-quota" and backoff hints
    And the metric admission_backpressure_events_total{engine="llamacpp",policy="tenant-quota"} sums to 1
    And the metric tasks_rejected_total{engine="llamacpp",reason="tenant-quota"} sums to 1
    # Tenant t2 has no quota and is not held back by t1's.
    When I submit task "c" for 4 tokens with key "sk-other"
    Then the response status is 202
    # Once t1's task ended (its place is free before `end` is sent), the
    # rejected id is admitted: nothing was kept of it.
    When reader "a" reads the stream of task "a"
    And I submit task "b" again
    Then the response status is 202
    When reader "b" reads the stream of task "b"
    Then the last event of reader "b" is "end" with tokens_out 4

  @ORCH-3006
  Scenario: rps 1 with burst 1: an immediate second POST gets 429 tenant-quota; retried after the backoff it is admitted [ORCH-3006]
    Given these tenants are configured:
      | id | rps | burst |
      | t1 | 1   | 1     |
    And task "a" was submitted for 4 tokens
    When I submit task "b" for 4 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "tenant-quota" and backoff hints
    And the error message mentions "rate"
    When I submit task "c" for 4 tokens with key "sk-other"
    Then the response status is 202
    # A rejection takes no token from the bucket: retried at once it is
    # rejected again with a backoff no longer than one token's refill.
    When I submit task "b" again
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "tenant-quota" and backoff hints
    And the response header "X-Backoff-Ms" is an integer of at most 1000
    When I wait out the last response's X-Backoff-Ms
    And I submit task "b" again
    Then the response status is 202
    When reader "b" reads the stream of task "b"
    Then the last event of reader "b" is "end" with tokens_out 4

  @ORCH-3006 @ORCH-3079
  Scenario: a request rejected by a later pre-admission check gives back its max_concurrent place [ORCH-3006]
    Given these tenants are configured:
      | id | max_concurrent |
      | t1 | 1              |
    When I submit task "x" for 4 tokens with deadline_ms 1
    Then the response status is 400
    And the response is an error with code "DEADLINE_UNMET"
    # The same id, at once: the place was not kept.
    When I submit task "x" for 4 tokens
    Then the response status is 202
    When reader "x" reads the stream of task "x"
    Then the last event of reader "x" is "end" with tokens_out 4

  @ORCH-3006 @ORCH-3079
  Scenario: a request rejected by a later pre-admission check gives back its rate token [ORCH-3006]
    Given these tenants are configured:
      | id | rps | burst |
      | t1 | 1   | 1     |
    When I submit task "x" for 4 tokens with deadline_ms 1
    Then the response status is 400
    And the response is an error with code "DEADLINE_UNMET"
    # The same id, at once: the rate token was given back.
    When I submit task "x" for 4 tokens
    Then the response status is 202

  @ORCH-3006
  Scenario: a tenant's place is free as soon as its task's stream ended [ORCH-3006]
    Given these tenants are configured:
      | id | max_concurrent |
      | t1 | 1              |
    When I run 5000 1-token tasks back to back, each submitted as soon as the previous stream ended
    Then the metric tasks_rejected_total{engine="llamacpp",reason="tenant-quota"} is 0 or absent
