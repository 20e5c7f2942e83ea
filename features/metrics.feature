@ORCH-3027 @ORCH-3028 @ORCH-3029 @OC-CTRL-2050 @OC-CTRL-2051
Feature: Prometheus metrics (SPEC §8)
  GET /metrics exposes the task counters, queue gauges and latency
  histograms with the label sets SPEC §8 names.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8

  @ORCH-3027 @ORCH-3028 @OC-CTRL-2050
  Scenario: a finished task moves the task series, with SPEC §8 label sets [ORCH-3027]
    Given task "a" was submitted for 16 tokens
    And reader "r" reads the stream of task "a"
    Then the metrics have these series:
      | series                        | labels                                                |
      | tasks_enqueued_total          | engine, engine_version, pool_id, replica_id, priority |
      | tasks_started_total           | engine, engine_version, pool_id, replica_id, priority |
      | queue_depth                   | engine, engine_version, pool_id, priority             |
      | latency_first_token_ms_bucket | engine, engine_version, pool_id, priority, le         |
      | latency_decode_ms_bucket      | engine, engine_version, pool_id, priority, le         |
      | tokens_out_total              | engine, engine_version, pool_id, replica_id           |
    And the metric tasks_enqueued_total{pool_id="p",priority="interactive"} sums to 1
    And the metric tasks_started_total{pool_id="p",replica_id="r0"} sums to 1
    And the metric tokens_out_total{pool_id="p",replica_id="r0"} sums to 16
    And the metric latency_first_token_ms_count{pool_id="p"} sums to 1
    And the metric latency_first_token_ms_bucket{pool_id="p",le="+Inf"} sums to 1
    And the metric queue_depth{pool_id="p"} sums to 0

  @ORCH-3027 @ORCH-2003
  Scenario: a client cancel counts tasks_canceled_total with reason "client" [ORCH-3027]
    Given the engine streams a token every 5 ms
    And task "a" was submitted for 2000 tokens
    And reader "r" reads the stream of task "a" until token 1
    When I cancel task "a"
    Then the response status is 204
    And the metrics have these series:
      | series               | labels                                              |
      | tasks_canceled_total | engine, engine_version, pool_id, replica_id, reason |
    And the metric tasks_canceled_total{engine="llamacpp",pool_id="p",reason="client"} sums to 1
