@OC-CTRL-2001 @OC-CTRL-2002 @OC-CTRL-2003 @OC-CTRL-2004
Feature: Control plane (SPEC §9)
  The control role sees the pools: GET /v1/replicasets (sets, replicas,
  state, breaker, in-flight/slots, engine load, time-to-first-token
  quantiles), GET /v1/pools/{id}/health, GET /v1/capabilities, and drains a
  pool with POST /v1/pools/{id}/drain {deadline_ms}: 202, no new admissions
  (503 POOL_UNREADY), running work may finish until the deadline, then it is
  ended with POOL_UNREADY and its engine requests aborted.

  Background:
    Given a pool "p" of model "m" with 2 replicas of 2 slots and queue capacity 8

  @OC-CTRL-2041
  Scenario Outline: <method> <path> needs the control role [OC-CTRL-2001..2004]
    When I <method> "<path>" with no key
    Then the response status is 401
    And the response is an error with code "UNAUTHORIZED"
    When I <method> "<path>" with key "sk-other"
    Then the response status is 403
    And the response is an error with code "FORBIDDEN"
    When I <method> "<path>" with key "sk-ctl"
    Then the response status is <status>

    Examples:
      | method | path               | status |
      | GET    | /v1/replicasets    | 200    |
      | GET    | /v1/capabilities   | 200    |
      | GET    | /v1/pools/p/health | 200    |
      | POST   | /v1/pools/p/drain  | 202    |

  @OC-CTRL-2003 @ORCH-3007 @ORCH-3040 @OC-POOL-3011
  Scenario: GET /v1/replicasets describes the pool's replica set and each replica [OC-CTRL-2003]
    Given every replica is ready
    And task "a" was submitted for 4 tokens
    And reader "r" reads the stream of task "a"
    When I GET "/v1/replicasets" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "replicasets[pool_id=p]" has the fields "pool_id, engine, engine_version, model, ready, draining, queue_depth, replicas, slo"
    And the response JSON at "replicasets[pool_id=p].engine" equals "llamacpp"
    And the response JSON at "replicasets[pool_id=p].engine_version" equals "b10470-34af94cd9"
    And the response JSON at "replicasets[pool_id=p].model" equals "m"
    And the response JSON at "replicasets[pool_id=p].ready" equals true
    And the response JSON at "replicasets[pool_id=p].draining" equals false
    And the response JSON at "replicasets[pool_id=p].queue_depth" equals 0
    And the response JSON at "replicasets[pool_id=p].replicas[id=r1]" has the fields "id, url, state, breaker, inflight, slots, engine_load, last_error"
    And the response JSON at "replicasets[pool_id=p].replicas[id=r0].state" equals "ready"
    And the response JSON at "replicasets[pool_id=p].replicas[id=r1].state" equals "ready"
    And the response JSON at "replicasets[pool_id=p].replicas[id=r0].breaker" equals "closed"
    And the response JSON at "replicasets[pool_id=p].replicas[id=r1].breaker" equals "closed"
    And the response JSON at "replicasets[pool_id=p].replicas[id=r0].slots" equals 2
    And the response JSON at "replicasets[pool_id=p].replicas[id=r0].last_error" equals ""
    And the response JSON at "replicasets[pool_id=p].slo.ttft_ms" has the fields "p50, p95, p99"
    And the response JSON at "replicasets[pool_id=p].slo.ttft_ms.p99" exceeds 0
    And pool "p" eventually has 0 tasks in flight in /v1/replicasets

  @OC-CTRL-2001 @OC-POOL-3001
  Scenario: GET /v1/pools/{id}/health reports live, ready, draining, metrics and last_error [OC-CTRL-2001]
    Given every replica is ready
    When I GET "/v1/pools/p/health" with key "sk-ctl"
    Then the response status is 200
    And the response has the fields "live, ready, draining, metrics, last_error"
    And the response field "live" is true
    And the response field "ready" is true
    And the response field "draining" is false
    And the response field "last_error" is ""
    And the response JSON at "metrics" has the fields "queue_depth, slots, slots_free, replicas, replicas_ready"
    And the response JSON at "metrics.replicas_ready" equals 2
    And the response JSON at "metrics.slots" equals 4
    When I GET "/v1/pools/nope/health" with key "sk-ctl"
    Then the response status is 404
    And the response is an error with code "NOT_FOUND"

  @OC-CTRL-2004
  Scenario: GET /v1/capabilities reports the API version and, per engine, ctx_max, workloads, rate limits and features [OC-CTRL-2004]
    When I GET "/v1/capabilities" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "api_version" equals "v1"
    And the response JSON at "engines.llamacpp" has the fields "ctx_max, workloads, rate_limits, features"
    And the response JSON at "engines.llamacpp.ctx_max" exceeds 0
    And the response JSON at "engines.llamacpp.workloads" equals ["completion"]
    And the response JSON at "engines.llamacpp.features.streaming" equals true
    And the response JSON at "engines.llamacpp.rate_limits.p" has the fields "queue_capacity"

  @OC-POOL-3001 @OC-POOL-3002 @OC-POOL-3003 @OC-CORE-1010
  Scenario: preload gating: a pool whose engines are still loading is not ready and says why [OC-POOL-3001..3003]
    Given the engine is still loading its model
    Then the health of pool "p" eventually reports a last_error
    And the response field "live" is true
    And the response field "ready" is false
    And replica "r0" eventually shows state "unready" in /v1/replicasets
    When I submit task "a" for 4 tokens
    Then the response status is 503
    And the response is an error with code "POOL_UNREADY"

  @ORCH-3007 @OC-CORE-1010
  Scenario: a replica reporting another engine_version is held out of its replica set and never selected [ORCH-3007]
    Given replica "r1" reports engine_version "b99999-other" after loading for 300 ms
    Then replica "r1" eventually shows state "held_out" in /v1/replicasets
    And the response JSON at "replicasets[pool_id=p].engine_version" equals "b10470-34af94cd9"
    And the response JSON at "replicasets[pool_id=p].replicas[id=r1].engine_version" equals "b99999-other"
    When reader "r1" submits task "a" for 2 tokens accepting an event stream
    And reader "r2" submits task "b" for 2 tokens accepting an event stream
    And reader "r3" submits task "c" for 2 tokens accepting an event stream
    Then the "started" event of reader "r1" has field "replica_id" = "r0"
    And the "started" event of reader "r2" has field "replica_id" = "r0"
    And the "started" event of reader "r3" has field "replica_id" = "r0"
    And the engine of replica "r1" received 0 completion requests

  @OC-CTRL-2002 @OC-CTRL-2060
  Scenario: drain: 202, new work 503 POOL_UNREADY, running work finishes until the deadline, then ends with POOL_UNREADY and frees its slot [OC-CTRL-2002]
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8
    And the engine streams a token every 10 ms
    And task "long" was submitted for 3000 tokens
    And task "short" was submitted for 10 tokens
    And reader "rl" reads the stream of task "long" until token 2
    When I POST "/v1/pools/p/drain" with body {"deadline_ms": 1000} and key "sk-ctl"
    Then the response status is 202
    And the response field "draining" is true
    And the response field "deadline_ms" is 1000
    When I submit task "late" for 4 tokens
    Then the response status is 503
    And the response is an error with code "POOL_UNREADY"
    When I GET "/v1/pools/p/health" with key "sk-ctl"
    Then the response field "draining" is true
    And the response field "live" is true
    When I GET "/v1/replicasets" with key "sk-ctl"
    Then the response JSON at "replicasets[pool_id=p].draining" equals true
    And the response JSON at "replicasets[pool_id=p].replicas[id=r0].state" equals "draining"
    # The short task, running when the drain began, finishes normally.
    When reader "rs" reads the stream of task "short"
    Then the last event of reader "rs" is "end" with tokens_out 10
    # The long one is ended at the deadline, its engine request aborted.
    When reader "rl" reads to the end
    Then the last event of reader "rl" is an error with code "POOL_UNREADY"
    And reader "rl" got at least 3 tokens numbered from 0
    And reader "rl" got no "end" event
    And the engine gets back to 0 requests in flight
    And pool "p" eventually has 0 tasks in flight in /v1/replicasets
    And the metric tasks_canceled_total{engine="llamacpp",pool_id="p",reason="drained"} sums to 1
    # Draining again is accepted and changes nothing.
    When I POST "/v1/pools/p/drain" with body {"deadline_ms": 0} and key "sk-ctl"
    Then the response status is 202
    When I submit task "later" for 4 tokens
    Then the response status is 503
    And the response is an error with code "POOL_UNREADY"

  @OC-CTRL-2002
  Scenario: drain with a bad deadline is refused [OC-CTRL-2002]
    When I POST "/v1/pools/p/drain" with body {"deadline_ms": -5} and key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    When I POST "/v1/pools/nope/drain" with body {"deadline_ms": 5} and key "sk-ctl"
    Then the response status is 404
    When I submit task "a" for 4 tokens
    Then the response status is 202

  @OC-CTRL-2002 @ORCH-3060
  Scenario: reload: once every replica reports the new model, the pool switches to it atomically [OC-CTRL-2002]
    Given every replica is ready
    And task "a" was submitted for 4 tokens
    And reader "ra" reads the stream of task "a"
    When the engine of replica "r0" restarts serving model "m2.gguf"
    And the engine of replica "r1" restarts serving model "m2.gguf"
    And I POST "/v1/pools/p/reload" with body {"new_model_ref": "m2.gguf", "timeout_ms": 3000} and key "sk-ctl"
    Then the response status is 200
    And the response JSON at "pool_id" equals "p"
    And the response JSON at "model" equals "m2.gguf"
    When I GET "/v1/replicasets" with key "sk-ctl"
    Then the response JSON at "replicasets[pool_id=p].model" equals "m2.gguf"
    Given tasks now name model "m2.gguf"
    And task "b" was submitted for 4 tokens
    When reader "rb" reads the stream of task "b"
    Then the last event of reader "rb" is "end" with tokens_out 4

  @OC-CTRL-2002 @ORCH-3060
  Scenario: reload: replicas that do not report the new model in time → 409 with the reason, and nothing changes [OC-CTRL-2002]
    Given every replica is ready
    When I POST "/v1/pools/p/reload" with body {"new_model_ref": "m2.gguf", "timeout_ms": 300} and key "sk-ctl"
    Then the response status is 409
    And the response is a JSON error envelope
    And the error message mentions "tiny.gguf"
    When I POST "/v1/pools/p/reload" with body {"new_model_ref": "m2.gguf", "timeout_ms": 300, "replicas": [{"id": "x", "url": "http://127.0.0.1:9"}]} and key "sk-ctl"
    Then the response status is 409
    And the error message mentions "replica x"
    When I POST "/v1/pools/p/reload" with body {"timeout_ms": 300} and key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    When I POST "/v1/pools/p/reload" with body {"new_model_ref": "m2.gguf"} and key "sk-other"
    Then the response status is 403
    When I GET "/v1/replicasets" with key "sk-ctl"
    Then the response JSON at "replicasets[pool_id=p].model" equals "m"
    When I submit task "a" for 4 tokens
    Then the response status is 202
