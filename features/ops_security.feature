@OC-CTRL-2040 @OC-CTRL-2041 @ORCH-3035 @ORCH-3036
Feature: Control endpoints, the ops page cookie and key hygiene (SPEC §7, §14)
  Control endpoints need the control role: no key → 401, a data-only key →
  403. The ops page exchanges a control key once for an HttpOnly,
  SameSite=Strict cookie that reads control views and nothing else: never a
  POST, never a data endpoint. Keys never appear in responses: the running
  config shows them as key_sha256.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8

  @OC-CTRL-2040 @OC-CTRL-2041
  Scenario Outline: <method> <path> is control-only: no key → 401, a data-only key → 403 [OC-CTRL-2040, OC-CTRL-2041]
    When I <method> "<path>" with no key
    Then the response status is 401
    And the response is an error with code "UNAUTHORIZED"
    When I <method> "<path>" with key "sk-other"
    Then the response status is 403
    And the response is an error with code "FORBIDDEN"
    And the response body does not contain "sk-other"

    Examples:
      | method | path               |
      | GET    | /v1/config         |
      | POST   | /v1/config         |
      | GET    | /v1/events         |
      | POST   | /v1/ui/session     |
      | POST   | /v1/pools/p/reload |

  @OC-CTRL-2041 @ORCH-3035
  Scenario: the ops page cookie reads control views but never authorizes a POST or a data endpoint [OC-CTRL-2041, ORCH-3035]
    Given task "a" in session "s" was submitted for 2 tokens
    When I exchange key "sk-ctl" for an ops page cookie
    Then the response status is 204
    And the ops page cookie is HttpOnly and SameSite=Strict
    When I GET "/v1/replicasets" with the ops page cookie
    Then the response status is 200
    When I GET "/v1/config" with the ops page cookie
    Then the response status is 200
    When I POST "/v1/pools/p/drain" with body {"deadline_ms":1000} and the ops page cookie
    Then the response status is 401
    When I POST "/v1/config" with the ops page cookie
    Then the response status is 401
    When I POST "/v1/ui/session" with the ops page cookie
    Then the response status is 401
    When I submit task "b" for 2 tokens with the ops page cookie
    Then the response status is 401
    When I request the stream of task "a" with the ops page cookie
    Then the response status is 401
    When I cancel task "a" with the ops page cookie
    Then the response status is 401
    When I get session "s" with the ops page cookie
    Then the response status is 401
    When I GET "/v1/pools/p/health" with key "sk-ctl"
    Then the response JSON at "draining" equals false

  @OC-CTRL-2041
  Scenario: a data-only key gets no ops page cookie [OC-CTRL-2041]
    When I exchange key "sk-other" for an ops page cookie
    Then the response status is 403
    And the response is an error with code "FORBIDDEN"
    And the response has no header "Set-Cookie"

  @ORCH-3036 @OC-CTRL-2050
  Scenario: GET /v1/config shows the running config with every key only as its key_sha256 [ORCH-3036]
    When I GET "/v1/config" with key "sk-ctl"
    Then the response status is 200
    And the response header "Content-Type" starts with "application/yaml"
    And the response header "Cache-Control" is "no-store"
    And the response shows the keys "sk-test, sk-other, sk-ctl" only as their key_sha256
