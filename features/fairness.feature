@ORCH-3075 @ORCH-3076 @ORCH-3077
Feature: Weighted fair queuing across tenants and priorities (SPEC §4.3)
  Under sustained contention the pool grants its slots in proportion to the
  weights: across priorities (admission.weights, default interactive 8 :
  batch 1) and across tenants within a priority (the tenant's weight).
  admission_share{tenant,priority} is the EWMA share of dispatches per
  tenant within a priority. Lower-weighted work is never starved.
  Key sk-test acts as tenant t1, sk-other as tenant t2.

  Background:
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 64

  @ORCH-3075 @ORCH-3076
  Scenario: two tenants weighted 3:1 saturating one slot get a 3:1 admission share (±15 %) [ORCH-3075]
    Given these tenants are configured:
      | id | weight |
      | t1 | 3      |
      | t2 | 1      |
    When these clients keep 1-token tasks waiting until the pool has dispatched 300 of them:
      | key      | priority    | clients |
      | sk-test  | interactive | 8       |
      | sk-other | interactive | 8       |
    Then under that load, the ratio of admission_share{tenant="t1",priority="interactive"} to admission_share{tenant="t2",priority="interactive"} was 3 within 15 %

  @ORCH-3075 @ORCH-3077
  Scenario: priorities weighted 8:1: batch is still dispatched while interactive work saturates the slot [ORCH-3077]
    Given the priority weights are interactive 8 and batch 1
    When these clients keep 1-token tasks waiting until the pool has dispatched 300 of them:
      | key     | priority    | clients |
      | sk-test | interactive | 8       |
      | sk-test | batch       | 4       |
    Then under that load, the metric tasks_started_total{pool_id="p",priority="batch"} was at least 10
    And under that load, the ratio of tasks_started_total{pool_id="p",priority="interactive"} to tasks_started_total{pool_id="p",priority="batch"} was 8 within 15 %
