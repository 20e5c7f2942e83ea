@OC-CTRL-2040 @OC-CTRL-2041 @ORCH-3035 @ORCH-3036
Feature: API keys and roles (SPEC §7)
  Keys come as Authorization: Bearer or X-API-Key and map to a tenant and
  roles. Missing key → 401, unknown key or wrong role → 403. Health and, by
  default, metrics need no key.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8

  @OC-CTRL-2040
  Scenario: no key → 401 UNAUTHORIZED [OC-CTRL-2040]
    When I submit task "a" for 4 tokens with no key
    Then the response status is 401
    And the response is an error with code "UNAUTHORIZED"

  @OC-CTRL-2040 @ORCH-3036
  Scenario: an unknown key → 403 FORBIDDEN, and the key is not echoed [ORCH-3036]
    When I submit task "a" for 4 tokens with key "sk-bogus-4242"
    Then the response status is 403
    And the response is an error with code "FORBIDDEN"
    And the response body does not contain "sk-bogus-4242"

  @OC-CTRL-2041
  Scenario: a key with only the control role cannot enqueue → 403 [OC-CTRL-2041]
    When I submit task "a" for 4 tokens with key "sk-ctl"
    Then the response status is 403
    And the response is an error with code "FORBIDDEN"

  @OC-CTRL-2040 @ORCH-3035
  Scenario: the X-API-Key header works as well as Bearer [ORCH-3035]
    When I submit task "a" for 4 tokens with header "X-API-Key" set to "sk-test" instead of a bearer key
    Then the response status is 202
    When I submit task "b" for 4 tokens with header "X-API-Key" set to "sk-nope" instead of a bearer key
    Then the response status is 403

  @OC-CTRL-2040 @OC-CTRL-2050
  Scenario Outline: <path> needs no key [OC-CTRL-2040]
    When I GET "<path>" with no key
    Then the response status is 200

    Examples:
      | path     |
      | /healthz |
      | /readyz  |
      | /metrics |

  @OC-CTRL-2041 @OC-CTRL-2050
  Scenario: with metrics.require_key, /metrics needs the control role [OC-CTRL-2041]
    Given metrics require a key
    When I GET "/metrics" with no key
    Then the response status is 401
    When I GET "/metrics" with key "sk-other"
    Then the response status is 403
    When I GET "/metrics" with key "sk-ctl"
    Then the response status is 200
