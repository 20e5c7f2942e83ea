@OC-CORE-1010 @OC-CORE-1011 @OC-CORE-1012 @OC-CORE-1013 @ORCH-3008 @ORCH-3009 @ORCH-3010 @ORCH-3011 @ORCH-3012 @ORCH-3040 @OC-POOL-3011
Feature: Balancing and resilience (SPEC §5)
  A session stays on its last good replica; new sessions go by consistent
  hashing with bounded loads. A failure before the first token is retried on
  a replica not tried yet (REPLICA_EXHAUSTED when none is left); after the
  first token it is WORKER_RESET, unless the pool sets failover: resume, when
  a best_effort task continues on another replica from its text so far, its
  token numbers gap-free and a metrics event saying failover:true. Per-replica
  circuit breakers count stream health; an open breaker takes the replica out
  of selection and shows in /v1/replicasets until a healthy trial closes it.

  Sessions "hash to" a replica by the SPEC §5 consistent hash computed from
  the config's replica ids (what a second gateway with this config would
  choose), so each scenario knows which replica a new session lands on.

  Background:
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8

  # ---- retries before the first token ----

  @OC-CORE-1011 @ORCH-3010
  Scenario Outline: a replica failing with <fault> before the first token is retried on the other one: one started, a complete stream [ORCH-3010]
    Given replica "r1" fails with "<fault>"
    And session "s" hashes to replica "r1"
    And every replica is ready
    And task "a" in session "s" was submitted for 8 tokens
    When reader "r" reads the stream of task "a"
    Then reader "r" got exactly 1 "started" event
    And reader "r" got 8 tokens numbered 0 to 7
    And the last event of reader "r" is "end" with tokens_out 8
    And the event ids of reader "r" count 0, 1, 2, … without gaps
    And the last "metrics" event of reader "r" has field "replica_id" = "r0"
    And the engine of replica "r1" received 1 completion request
    And the engine of replica "r0" received 1 completion request
    And the metric task_retries_total{engine="llamacpp",why="retry"} sums to 1
    # The session now stays on r0, the replica that served it, though the
    # hash still says r1.
    Given task "b" in session "s" was submitted for 4 tokens
    When reader "r2" reads the stream of task "b"
    Then the "started" event of reader "r2" has field "replica_id" = "r0"
    And the "started" event of reader "r2" has field "kv_warmth" = true
    And the last event of reader "r2" is "end" with tokens_out 4
    And the engine of replica "r1" received 1 completion request

    Examples:
      | fault     |
      | start-500 |
      | start-503 |
      | start-429 |

  @OC-CORE-1011 @ORCH-3010 @OC-CORE-1022
  Scenario: a replica missing first_token_ms is aborted and the task retried on the other one [ORCH-3010]
    Given replica "r1" sends its first token after 5000 ms
    And the pool's timeouts are { first_token_ms: 1000 }
    And session "s" hashes to replica "r1"
    And every replica is ready
    And task "a" in session "s" was submitted for 8 tokens
    When reader "r" reads the stream of task "a"
    Then reader "r" got exactly 1 "started" event
    And reader "r" got 8 tokens numbered 0 to 7
    And the last event of reader "r" is "end" with tokens_out 8
    And the last "metrics" event of reader "r" has field "replica_id" = "r0"
    And the engine of replica "r1" received 1 completion request
    And the engine of replica "r1" gets back to 0 requests in flight
    And pool "p" eventually has 0 tasks in flight in /v1/replicasets

  @ORCH-3012 @OC-CORE-1011
  Scenario: when every replica fails before the first token the task ends with REPLICA_EXHAUSTED, each replica tried once [ORCH-3012]
    Given replica "r0" fails with "start-500"
    And replica "r1" fails with "start-503"
    And every replica is ready
    When reader "r" submits task "a" for 8 tokens accepting an event stream
    Then the first event of reader "r" is "started"
    And the last event of reader "r" is an error with code "REPLICA_EXHAUSTED"
    And reader "r" got exactly 2 events
    And the engine of replica "r0" received 1 completion request
    And the engine of replica "r1" received 1 completion request
    And pool "p" eventually has 0 tasks in flight in /v1/replicasets

  # ---- after the first token ----

  @ORCH-3011 @OC-CORE-1013
  Scenario Outline: failover resume: a stream that fails with <fault> mid-way continues on the other replica, gap-free, failover:true and kv_warmth:false [ORCH-3011]
    Given replica "r1" fails with "<fault>"
    And the pool's failover is "resume"
    And the pool's timeouts are { idle_ms: 300 }
    And session "s" hashes to replica "r1"
    And every replica is ready
    And task "a" in session "s" was submitted for 12 tokens
    When reader "r" reads the stream of task "a"
    Then reader "r" got exactly 1 "started" event
    And the "started" event of reader "r" has field "replica_id" = "r1"
    And reader "r" got a "metrics" event with "failover" = true and "kv_warmth" = false
    And reader "r" got 12 tokens numbered 0 to 11
    And the last event of reader "r" is "end" with tokens_out 12
    And the event ids of reader "r" count 0, 1, 2, … without gaps
    And the last "metrics" event of reader "r" has field "replica_id" = "r0"
    And the engine of replica "r1" received 1 completion request
    And the engine of replica "r1" gets back to 0 requests in flight
    And the metric task_retries_total{engine="llamacpp",why="failover"} sums to 1
    When reader "late" reads the stream of task "a"
    Then reader "late" saw the same events as reader "r"
    # The session now stays on r0, which finished the task.
    Given task "b" in session "s" was submitted for 4 tokens
    When reader "r2" reads the stream of task "b"
    Then the "started" event of reader "r2" has field "replica_id" = "r0"
    And the "started" event of reader "r2" has field "kv_warmth" = true
    And the last event of reader "r2" is "end" with tokens_out 4

    Examples:
      | fault                |
      | midstream-disconnect |
      | midstream-error      |
      | malformed            |
      | stall                |

  @ORCH-3011 @ORCH-3012
  Scenario: failover resume when every replica cuts the stream: each tried once, then WORKER_RESET with the tokens so far gap-free [ORCH-3011]
    Given the engine fails with "midstream-disconnect"
    And the pool's failover is "resume"
    And every replica is ready
    When reader "r" submits task "a" for 12 tokens accepting an event stream
    Then the last event of reader "r" is an error with code "WORKER_RESET"
    And reader "r" got 6 tokens numbered 0 to 5
    And reader "r" got exactly 1 "started" event
    And reader "r" got a "metrics" event with "failover" = true and "kv_warmth" = false
    And reader "r" got no "end" event
    And the event ids of reader "r" count 0, 1, 2, … without gaps
    And the engine of replica "r0" received 1 completion request
    And the engine of replica "r1" received 1 completion request
    And the engine gets back to 0 requests in flight

  @ORCH-3012
  Scenario Outline: without failover, a stream failing with <fault> after the first token ends with WORKER_RESET, never retried [ORCH-3012]
    Given replica "r1" fails with "<fault>"
    And session "s" hashes to replica "r1"
    And every replica is ready
    And task "a" in session "s" was submitted for 12 tokens
    When reader "r" reads the stream of task "a"
    Then the last event of reader "r" is an error with code "WORKER_RESET"
    And reader "r" got <n> tokens numbered 0 to <last>
    And reader "r" got no "end" event
    And the engine of replica "r0" received 0 completion requests

    Examples:
      | fault                | n | last |
      | midstream-disconnect | 3 | 2    |
      | midstream-error      | 2 | 1    |

  @ORCH-3011 @ORCH-3012
  Scenario: with failover resume, a determinism strict task is not resumed: WORKER_RESET [ORCH-3011]
    Given replica "r1" fails with "midstream-disconnect"
    And the pool's failover is "resume"
    And session "s" hashes to replica "r1"
    And every replica is ready
    And task "a" in session "s" was submitted for 12 tokens with determinism "strict"
    When reader "r" reads the stream of task "a"
    Then the last event of reader "r" is an error with code "WORKER_RESET"
    And reader "r" got 3 tokens numbered 0 to 2
    And reader "r" got no "metrics" event with field "failover" = true
    And the engine of replica "r0" received 0 completion requests

  # ---- breakers ----

  @ORCH-3040 @OC-POOL-3011 @OC-CORE-1010
  Scenario: a replica failing 5 times in a row trips its breaker: out of selection, open in /v1/replicasets, closed again once its engine is back [ORCH-3040]
    Given replica "r1" fails with "start-500"
    And replica breakers trip after 5 consecutive failures and stay open for 3000 ms
    And sessions "s1, s2, s3, s4, s5, s6, s7" hash to replica "r1"
    And every replica is ready
    # Each task fails on r1 before its first token and is retried on r0.
    When I run a 4-token task in each of sessions "s1, s2, s3, s4, s5", each read to its end by a reader named after its session
    Then the engine of replica "r1" received 5 completion requests
    And replica "r1" eventually shows breaker "open" in /v1/replicasets
    And the response JSON at "replicasets[pool_id=p].replicas[id=r0].breaker" equals "closed"
    And the metric breaker_state{pool_id="p",replica_id="r1"} sums to 2
    And the metric breaker_transitions_total{pool_id="p",replica_id="r1",to="open"} sums to 1
    # While open, r1's new sessions go to r0 without trying r1.
    When I run a 4-token task in each of sessions "s6", each read to its end by a reader named after its session
    Then the "started" event of reader "s6" has field "replica_id" = "r0"
    And the engine of replica "r1" received 5 completion requests
    # A dead engine fails the half-open probe: the breaker stays open.
    When the engine of replica "r1" is killed
    Then replica "r1" eventually shows state "unready" in /v1/replicasets
    And the breaker of replica "r1" stays out of "closed" for 1500 ms
    # Restarted healthy, it passes the probe: closed, and selected again.
    When the engine of replica "r1" restarts healthy
    Then replica "r1" eventually shows breaker "closed" in /v1/replicasets
    And replica "r1" eventually shows state "ready" in /v1/replicasets
    And the metric breaker_transitions_total{pool_id="p",replica_id="r1",to="closed"} is at least 1
    And the metric breaker_state{pool_id="p",replica_id="r1"} sums to 0
    When I run a 4-token task in each of sessions "s7", each read to its end by a reader named after its session
    Then the "started" event of reader "s7" has field "replica_id" = "r1"
    And the last "metrics" event of reader "s7" has field "replica_id" = "r1"

  @ORCH-3040 @OC-CORE-1011
  Scenario: an engine restarted between two tasks is redialed: no retry, no breaker failure [ORCH-3040]
    Given sessions "s1, s2" hash to replica "r1"
    And every replica is ready
    When I run a 4-token task in each of sessions "s1", each read to its end by a reader named after its session
    And the engine of replica "r1" restarts healthy
    Then replica "r1" eventually shows state "ready" in /v1/replicasets
    When I run a 4-token task in each of sessions "s2", each read to its end by a reader named after its session
    Then the "started" event of reader "s2" has field "replica_id" = "r1"
    And the last "metrics" event of reader "s2" has field "replica_id" = "r1"
    And the engine of replica "r1" received 1 completion request
    And the metric task_retries_total{engine="llamacpp"} is 0 or absent
    And the metric breaker_transitions_total{pool_id="p",replica_id="r1"} is 0 or absent

  # ---- affinity ----

  @ORCH-3009 @OC-CORE-1013
  Scenario: new sessions land where the consistent hash puts them, and each session's tasks stay on its replica with warm KV [ORCH-3009]
    Given a pool "p" of model "m" with 3 replicas of 2 slots and queue capacity 8
    And session "a" hashes to replica "r0"
    And session "b" hashes to replica "r1"
    And session "c" hashes to replica "r2"
    And every replica is ready
    When I run a 4-token task in each of sessions "a, b, c", each read to its end by a reader named after its session
    Then the "started" event of reader "a" has field "replica_id" = "r0"
    And the "started" event of reader "b" has field "replica_id" = "r1"
    And the "started" event of reader "c" has field "replica_id" = "r2"
    Given task "a2" in session "a" was submitted for 4 tokens
    And reader "a2" reads the stream of task "a2"
    And task "b2" in session "b" was submitted for 4 tokens
    And reader "b2" reads the stream of task "b2"
    And task "c2" in session "c" was submitted for 4 tokens
    And reader "c2" reads the stream of task "c2"
    Then the "started" events of readers "a" and "a2" name the same replica
    And the "started" events of readers "b" and "b2" name the same replica
    And the "started" events of readers "c" and "c2" name the same replica
    And the "started" event of reader "a2" has field "kv_warmth" = true
    And the "started" event of reader "b2" has field "kv_warmth" = true
    And the "started" event of reader "c2" has field "kv_warmth" = true

  @ORCH-3009 @OC-CORE-1013 @OC-CORE-1010
  Scenario: a session stays on its replica until it fails, then on the one that served it next, even once the first is back [ORCH-3009]
    Given session "s" hashes to replica "r0"
    And every replica is ready
    And task "a" in session "s" was submitted for 4 tokens
    And reader "ra" reads the stream of task "a"
    Then the "started" event of reader "ra" has field "replica_id" = "r0"
    When the engine of replica "r0" is killed
    Then replica "r0" eventually shows state "unready" in /v1/replicasets
    And the health of pool "p" eventually reports a last_error
    And the response field "ready" is true
    Given task "b" in session "s" was submitted for 4 tokens
    And reader "rb" reads the stream of task "b"
    Then the "started" event of reader "rb" has field "replica_id" = "r1"
    And the "started" event of reader "rb" has field "kv_warmth" = false
    And the last event of reader "rb" is "end" with tokens_out 4
    When the engine of replica "r0" restarts healthy
    Then replica "r0" eventually shows state "ready" in /v1/replicasets
    Given task "c" in session "s" was submitted for 4 tokens
    And reader "rc" reads the stream of task "c"
    Then the "started" event of reader "rc" has field "replica_id" = "r1"
    And the "started" event of reader "rc" has field "kv_warmth" = true

  @OC-CORE-1012 @OC-CORE-1013
  Scenario: bounded load: a new session whose hashed replica is already at the bound goes to the other one [OC-CORE-1012]
    Given the affinity load factor is 1
    And the engine streams a token every 10 ms
    And sessions "s1, s2" hash to replica "r0"
    And every replica is ready
    And task "a" in session "s1" was submitted for 300 tokens
    And reader "ra" reads the stream of task "a" until token 1
    Given task "b" in session "s2" was submitted for 4 tokens
    When reader "rb" reads the stream of task "b"
    Then the "started" event of reader "ra" has field "replica_id" = "r0"
    And the "started" event of reader "rb" has field "replica_id" = "r1"
    And the last event of reader "rb" is "end" with tokens_out 4
    When I cancel task "a"
    Then the response status is 204
