@OC-CORE-1020 @OC-CORE-1021 @OC-CORE-1023
Feature: Guardrails: session token budget and the pre-admission order (SPEC §3.1, §4.1)
  With sessions.token_budget set, a session's tasks share that many tokens:
  the 202 says what remains in X-Budget-Tokens-Remaining, the stream's
  metrics in tokens_budget_remaining, and a task asking for more than
  remains gets 429 ADMISSION_REJECT with policy_label session-budget.
  Pre-admission checks reject in SPEC §3.1's order: token budget → session
  budget → tenant quota → deadline feasibility → queue full policy.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 8

  @OC-CORE-1023
  Scenario: a session budget of 100: max_tokens 40 leaves 60; asking for more than remains is 429 session-budget [OC-CORE-1023]
    Given sessions have a token budget of 100
    When I submit task "a" in session "s" for 40 tokens
    Then the response status is 202
    And the response header "X-Budget-Tokens-Remaining" is "60"
    When reader "r" reads the stream of task "a"
    Then the last event of reader "r" is "end" with tokens_out 40
    And reader "r" got a "metrics" event with field "tokens_budget_remaining" = 60
    When I get session "s"
    Then the response field "tokens_budget_remaining" is 60
    When I submit task "b" in session "s" for 61 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "session-budget" and backoff hints
    And the metric admission_backpressure_events_total{engine="llamacpp",policy="session-budget"} sums to 1
    And the metric tasks_rejected_total{engine="llamacpp",reason="session-budget"} sums to 1
    # The rejection used nothing: exactly what remains is still admitted.
    When I submit task "c" in session "s" for 60 tokens
    Then the response status is 202
    And the response header "X-Budget-Tokens-Remaining" is "0"
    # Another session has its own budget.
    When I submit task "d" in session "other" for 100 tokens
    Then the response status is 202
    And the response header "X-Budget-Tokens-Remaining" is "0"

  @OC-CORE-1020 @OC-CORE-1021 @OC-CORE-1023 @ORCH-3006 @ORCH-3079 @ORCH-3005
  Scenario: a request failing several pre-admission checks gets the first one's answer, in SPEC §3.1 order [OC-CORE-1021]
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 1
    And the engine streams a token every 50 ms
    And sessions have a token budget of 100
    And these tenants are configured:
      | id | max_concurrent |
      | t1 | 2              |
    And task "running" was submitted for 100 tokens
    And the engine has 1 request in flight
    And task "queued" was submitted for 4 tokens
    # t1 now holds its 2 places, and the queue (capacity 1) is full.
    # Token budget (ctx 4096) before session budget and tenant quota.
    When I submit task "x1" for 5000 tokens
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    # Session budget (101 > 100) before tenant quota.
    When I submit task "x2" for 101 tokens
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "session-budget" and backoff hints
    # Tenant quota before deadline feasibility.
    When I submit task "x3" in session "s3" for 4 tokens with key "sk-test" and deadline_ms 1
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "tenant-quota" and backoff hints
    # Tenant t2 has no quota: deadline feasibility before the full queue.
    When I submit task "x4" in session "s4" for 4 tokens with key "sk-other" and deadline_ms 1
    Then the response status is 400
    And the response is an error with code "DEADLINE_UNMET"
    When I submit task "x5" in session "s5" for 4 tokens with key "sk-other"
    Then the response is a 429 "ADMISSION_REJECT" with policy_label "reject" and backoff hints

  @OC-CORE-1023
  Scenario: tokens streamed before a cancel are charged to the session budget [OC-CORE-1023]
    Given sessions have a token budget of 100
    And the engine streams a token every 5 ms
    And task "a" in session "s" was submitted for 40 tokens
    And reader "r" reads the stream of task "a" until token 9
    When I cancel task "a"
    Then the response status is 204
    When reader "r" reads to the end
    Then reader "r" got at least 10 tokens numbered from 0
    When I get session "s"
    Then the response field "tokens_budget_remaining" is at most 90
