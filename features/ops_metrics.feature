@OC-METRICS-7101 @OC-METRICS-7102 @ORCH-3027 @ORCH-3028 @ORCH-3040 @OC-POOL-3011
Feature: Ops metrics and breaker events (SPEC §8, §14)
  /metrics carries the task series with SPEC §8 label sets, queue_depth, and
  one breaker_state{pool_id,replica_id} per replica (0 closed, 1 half-open,
  2 open) with breaker_transitions_total{pool_id,replica_id,to}. A breaker
  that opens is also an ops event on GET /v1/events.

  Background:
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8

  @OC-METRICS-7101 @ORCH-3027 @ORCH-3040
  Scenario: after a task, /metrics has tasks_started_total with its SPEC label set, queue_depth, and a closed breaker_state per replica [OC-METRICS-7101]
    Given every replica is ready
    And task "a" was submitted for 4 tokens
    And reader "r" reads the stream of task "a"
    Then the metrics have these series:
      | series                    | labels                                                |
      | tasks_started_total       | engine, engine_version, pool_id, replica_id, priority |
      | queue_depth               | engine, engine_version, pool_id, priority             |
      | breaker_state             | pool_id, replica_id                                   |
      | tokens_out_total          | engine, engine_version, pool_id, replica_id           |
    And the metric tasks_started_total{engine="llamacpp",engine_version="b10470-34af94cd9",pool_id="p",priority="interactive"} sums to 1
    And the metric queue_depth{engine="llamacpp",pool_id="p",priority="interactive"} sums to 0
    And the metric breaker_state{pool_id="p",replica_id="r0"} sums to 0
    And the metric breaker_state{pool_id="p",replica_id="r1"} sums to 0
    And the response body does not contain "sk-test"

  @OC-METRICS-7101 @ORCH-3027 @OC-CORE-1001
  Scenario: queue_depth counts the task waiting for the pool's one slot, and drops back when it leaves [OC-METRICS-7101]
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 4
    And the engine streams a token every 20 ms
    And task "a" was submitted for 500 tokens
    And the engine has 1 request in flight
    And task "b" was submitted for 3 tokens
    Then the metric queue_depth{pool_id="p",priority="interactive"} sums to 1
    When I cancel task "b"
    Then the metric queue_depth{pool_id="p",priority="interactive"} sums to 0

  @OC-METRICS-7101 @ORCH-3040 @OC-POOL-3011 @ORCH-3010
  Scenario: a replica's breaker opening is a "breaker" ops event, breaker_state 2 and breaker_transitions_total{to="open"} [OC-METRICS-7101, ORCH-3040]
    Given replica breakers trip after 1 consecutive failures and stay open for 60000 ms
    And replica "r1" fails with "start-500"
    And session "s" hashes to replica "r1"
    And every replica is ready
    And reader "ev" follows the ops events with key "sk-ctl"
    And task "a" in session "s" was submitted for 4 tokens
    When reader "r" reads the stream of task "a"
    Then the last event of reader "r" is "end" with tokens_out 4
    And reader "ev" reads ops events until a "breaker" event with "replica_id" = "r1"
    And the last "breaker" event of reader "ev" has field "pool_id" = "p"
    And the last "breaker" event of reader "ev" has field "from" = "closed"
    And the last "breaker" event of reader "ev" has field "to" = "open"
    And the "breaker" event of reader "ev" has the fields "type, at"
    And the metric breaker_state{pool_id="p",replica_id="r1"} sums to 2
    And the metric breaker_state{pool_id="p",replica_id="r0"} sums to 0
    And the metric breaker_transitions_total{pool_id="p",replica_id="r1",to="open"} sums to 1
    And replica "r1" eventually shows breaker "open" in /v1/replicasets

  @OC-METRICS-7101 @OC-CTRL-2041 @ORCH-3036
  Scenario: with metrics.require_key, only a control key scrapes /metrics, and the scrape names no key [OC-METRICS-7101, OC-CTRL-2041]
    Given metrics require a key
    And task "a" was submitted for 2 tokens
    And reader "r" reads the stream of task "a"
    When I GET "/metrics" with no key
    Then the response status is 401
    And the response is an error with code "UNAUTHORIZED"
    When I GET "/metrics" with key "sk-other"
    Then the response status is 403
    And the response is an error with code "FORBIDDEN"
    When I GET "/metrics" with key "sk-ctl"
    Then the response status is 200
    And the response body contains "tasks_started_total{"
    And the response body does not contain "sk-ctl"
    And the response body does not contain "sk-test"
