@OC-CORE-1022
Feature: Watchdog (SPEC §4.5)
  Per-pool timeouts abort a running task that went silent for idle_ms after
  its first token, or that ran longer than wall_ms: its stream ends with
  error DECODE_TIMEOUT, the engine request is aborted and the slot freed,
  counted as tasks_canceled_total{reason="watchdog"}.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 8

  @OC-CORE-1022 @ORCH-3027
  Scenario: an engine that stalls after two tokens is ended with DECODE_TIMEOUT after idle_ms, and its slot is freed [OC-CORE-1022]
    Given the engine fails with "stall"
    And the pool's timeouts are { idle_ms: 300 }
    When reader "r" submits task "a" for 10 tokens accepting an event stream
    Then reader "r" got 2 tokens numbered 0 to 1
    And the last event of reader "r" is an error with code "DECODE_TIMEOUT"
    And the engine gets back to 0 requests in flight
    And the metric tasks_canceled_total{engine="llamacpp",pool_id="p",reason="watchdog"} sums to 1
    # The one slot is free again: the next task is dispatched (and stalls too).
    When reader "r2" submits task "b" for 10 tokens accepting an event stream
    Then reader "r2" got 2 tokens numbered 0 to 1
    And the last event of reader "r2" is an error with code "DECODE_TIMEOUT"
    And the engine gets back to 0 requests in flight
    And the metric tasks_canceled_total{engine="llamacpp",pool_id="p",reason="watchdog"} sums to 2

  @OC-CORE-1022
  Scenario: a task running longer than wall_ms is ended with DECODE_TIMEOUT [OC-CORE-1022]
    Given the engine streams a token every 20 ms
    And the pool's timeouts are { wall_ms: 300 }
    When reader "r" submits task "a" for 2000 tokens accepting an event stream
    Then reader "r" got at least 1 token numbered from 0
    And the last event of reader "r" is an error with code "DECODE_TIMEOUT"
    And reader "r" got no "end" event
    And the engine gets back to 0 requests in flight
    And the metric tasks_canceled_total{engine="llamacpp",pool_id="p",reason="watchdog"} sums to 1
