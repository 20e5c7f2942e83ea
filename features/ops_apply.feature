@OC-CONFIG-6001 @OC-CONFIG-6002 @OC-CONFIG-6003 @OC-CONFIG-6004 @OC-CONFIG-6005 @OC-CONFIG-6006 @OC-CONFIG-6007 @OC-CONFIG-6008 @OC-CONFIG-6009 @OC-CONFIG-6010 @OC-CTRL-2050 @OC-CTRL-2051
Feature: Hot config apply, its dry run and the ops event feed (SPEC §9, §14)
  POST /v1/config (control role) takes a whole config file. With
  ?dry_run=true it validates it and answers the diff against the running
  config and the changes, changing nothing. Without, it applies atomically
  what a running gateway can change — keys, tenants, SLOs, pools, their
  replica lists, queue limits, timeouts, ctx, failover and preemption — and
  publishes a `config` event on GET /v1/events. An invalid file, or one
  changing a key that needs a restart (or, for a pool's model, a reload), is
  refused whole with 400, naming the problems (path and line) or the key.

  The candidate config starts as GET /v1/config (what `orchctl apply` edits).

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8

  @OC-CONFIG-6001 @OC-CONFIG-6002 @OC-CTRL-2051
  Scenario: a dry run answers the diff and the changes, and changes nothing [OC-CONFIG-6001..6010]
    Given the candidate config is the running one from GET /v1/config
    And the candidate config moves replica "r0" to a new engine as replica "n0"
    When I POST the candidate config to "/v1/config?dry_run=true" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "dry_run" equals true
    And the response JSON at "applied" equals false
    And the response JSON at "changes" equals ["pools.p.replicas"]
    And the response's diff removes the line "- id: r0"
    And the response's diff adds the line "- id: n0"
    And the running config is unchanged
    Given task "a" was submitted for 3 tokens
    When reader "r" reads the stream of task "a"
    Then the "started" event of reader "r" has field "replica_id" = "r0"
    And replica "n0"'s new engine received 0 completion requests

  @OC-CONFIG-6003 @OC-CONFIG-6004
  Scenario: an invalid config is refused with 400 naming each problem's path and line, and changes nothing [OC-CONFIG-6001..6010]
    Given the candidate config is the running one from GET /v1/config
    And the candidate config replaces "full_policy: reject" with "full_policy: sometimes"
    And the candidate config adds the top-level line "colour: red"
    When I POST the candidate config to "/v1/config" with key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    And the response lists a problem at "pools[0].queue.full_policy" on the line of "full_policy: sometimes" in the candidate config
    And the response lists a problem at "colour" on the line of "colour: red" in the candidate config
    And the running config is unchanged
    When I POST the candidate config to "/v1/config?dry_run=true" with key "sk-ctl"
    Then the response status is 400
    And the response lists a problem at "colour" on the line of "colour: red" in the candidate config

  @OC-CONFIG-6005 @OC-CTRL-2051
  Scenario Outline: changing <what>, which needs a restart, is refused with 400 naming it, a config event with ok false, and nothing changes [OC-CONFIG-6001..6010]
    Given the candidate config is the running one from GET /v1/config
    And the candidate config replaces "<from>" with "<to>"
    And reader "ev" follows the ops events with key "sk-ctl"
    When I POST the candidate config to "/v1/config" with key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    And the error message mentions "<what>"
    And the error message mentions "restart"
    And the running config is unchanged
    And reader "ev" reads ops events until a "config" event with "ok" = false
    And the "config" event of reader "ev" has field "reason" mentioning "<what>"

    Examples:
      | what              | from                    | to                       |
      | shutdown_grace_ms | shutdown_grace_ms: 0    | shutdown_grace_ms: 5000  |
      | openai_compat     | openai_compat: false    | openai_compat: true      |

  @OC-CONFIG-6005
  Scenario Outline: changing a pool's <what> live is refused with 400 saying what to do instead, and nothing changes [OC-CONFIG-6001..6010]
    Given the candidate config is the running one from GET /v1/config
    And the candidate config replaces "<from>" with "<to>"
    When I POST the candidate config to "/v1/config" with key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "INVALID_PARAMS"
    And the error message mentions "<hint>"
    And the running config is unchanged

    Examples:
      | what   | from             | to           | hint                  |
      | model  | model: m         | model: m2    | /v1/pools/p/reload    |
      | engine | engine: llamacpp | engine: tgi  | under a new id        |

  @OC-CONFIG-6006 @OC-CONFIG-6007 @ORCH-2007
  Scenario: a pool's queue limits apply live: what is queued stays, the next newcomer meets the new capacity [OC-CONFIG-6001..6010]
    Given the engine streams a token every 5 ms
    And task "l1" was submitted for 2000 tokens
    And task "l2" was submitted for 2000 tokens
    And the engine has 2 requests in flight
    And task "q1" was submitted for 4 tokens
    And task "q2" was submitted for 4 tokens
    And the candidate config is the running one from GET /v1/config
    And the candidate config replaces "capacity: 8" with "capacity: 1"
    When I POST the candidate config to "/v1/config" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "changes" equals ["pools.p.queue"]
    When I submit task "x" for 4 tokens
    Then the response status is 429
    And the response is an error with code "ADMISSION_REJECT"
    And the error message mentions "2 queued, capacity 1"
    When I cancel task "l1"
    And I cancel task "l2"
    And reader "a" reads the stream of task "q1"
    And reader "b" reads the stream of task "q2"
    Then the last event of reader "a" is "end" with tokens_out 4
    And the last event of reader "b" is "end" with tokens_out 4

  @OC-CONFIG-6006 @OC-CONFIG-6007 @OC-CTRL-2051 @ORCH-3060
  Scenario: applying a new replica list answers 200, publishes a config event, and the next tasks go to the new replica [OC-CONFIG-6001..6010]
    Given reader "ev" follows the ops events with key "sk-ctl"
    And the candidate config is the running one from GET /v1/config
    And the candidate config moves replica "r0" to a new engine as replica "n0"
    When I POST the candidate config to "/v1/config" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "applied" equals true
    And the response JSON at "dry_run" equals false
    And the response JSON at "changes" equals ["pools.p.replicas"]
    And reader "ev" reads ops events until a "config" event with "ok" = true
    And the last "config" event of reader "ev" has field "changes" = ["pools.p.replicas"]
    And the running config contains "id: n0"
    And the running config lacks "id: r0"
    Given task "a" was submitted for 3 tokens
    When reader "r" reads the stream of task "a"
    Then the "started" event of reader "r" has field "replica_id" = "n0"
    And the last event of reader "r" is "end" with tokens_out 3
    And replica "n0"'s new engine received 1 completion request
    And the engine received 0 completion requests
    When I GET "/v1/replicasets" with key "sk-ctl"
    Then the response JSON at "replicasets[pool_id=p].replicas[id=n0].state" equals "ready"

  @OC-CONFIG-6008 @OC-CTRL-2040 @ORCH-3036 @ORCH-3035
  Scenario: a new key: the dry run shows it only as key_sha256 and it does not work yet; applied, it works at once and ops page cookies are revoked [OC-CONFIG-6001..6010, ORCH-3036]
    Given I exchange key "sk-ctl" for an ops page cookie
    And the candidate config is the running one from GET /v1/config
    And the candidate config adds key "sk-new-4711" for tenant "t3" with role "data"
    When I POST the candidate config to "/v1/config?dry_run=true" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "changes" equals ["auth.keys"]
    And the response shows the keys "sk-new-4711" only as their key_sha256
    When I submit task "x" for 2 tokens with key "sk-new-4711"
    Then the response status is 403
    When I POST the candidate config to "/v1/config" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "applied" equals true
    And the response body does not contain "sk-new-4711"
    When I submit task "y" for 2 tokens with key "sk-new-4711"
    Then the response status is 202
    When I GET "/v1/config" with key "sk-ctl"
    Then the response shows the keys "sk-new-4711, sk-test, sk-other, sk-ctl" only as their key_sha256
    When I GET "/v1/replicasets" with the ops page cookie
    Then the response status is 401

  # orchctl's flow (GET /v1/config → edit → POST) must not see changes in
  # what it did not edit: keys come back as key_sha256, absent lists as [].
  @OC-CONFIG-6001 @OC-CONFIG-6002 @ORCH-3035
  Scenario: the running config posted back unchanged is no change: no changes listed and the ops page cookie keeps working [OC-CONFIG-6001..6010]
    Given I exchange key "sk-ctl" for an ops page cookie
    And the candidate config is the running one from GET /v1/config
    When I POST the candidate config to "/v1/config?dry_run=true" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "diff" equals ""
    And the response JSON at "changes" equals []
    When I POST the candidate config to "/v1/config" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "changes" equals []
    When I GET "/v1/replicasets" with the ops page cookie
    Then the response status is 200
