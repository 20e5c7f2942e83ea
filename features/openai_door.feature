@ORCH-3054 @ORCH-3055 @ORCH-3056 @ORCH-3057 @OC-ADAPT-5002
Feature: The optional OpenAI-compatible front door (SPEC §3.5)
  Off by default: the public contract is OrchQueue v1. With openai_compat
  true, POST /v1/completions and /v1/chat/completions become ordinary tasks
  (same admission, scheduling and balancing), answered in OpenAI's shapes:
  a completion object, or chunks ending with data: [DONE]; errors as
  {"error":{"message","type","param","code"}} with the statuses and
  backpressure headers of SPEC §3.6.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8

  @ORCH-3054 @OC-ADAPT-5002
  Scenario Outline: the door is off by default: <path> answers 404 [ORCH-3054]
    When I POST "<path>" with body {"model":"m","prompt":"Hello there","max_tokens":3} and key "sk-test"
    Then the response status is 404
    And the response is an error with code "NOT_FOUND"
    And the engine received 0 completion requests

    Examples:
      | path                 |
      | /v1/completions      |
      | /v1/chat/completions |

  @ORCH-3055 @ORCH-3045
  Scenario: a non-streamed completion returns the task's text: the fake model's words for its seed [ORCH-3055]
    Given the OpenAI-compatible door is enabled
    When I POST "/v1/completions" with body {"model":"m","prompt":"Hello there","max_tokens":5,"seed":7} and key "sk-test"
    Then the response status is 200
    And the response JSON at "object" equals "text_completion"
    And the response JSON at "choices[0].finish_reason" equals "length"
    And the response JSON at "usage.completion_tokens" equals 5
    And the completion text is the fake model's words for seed 7, prompt "Hello there" and 5 tokens
    And the engine received 1 completion request
    And the metric tasks_started_total{engine="llamacpp",pool_id="p"} sums to 1

  @ORCH-3055 @ORCH-3056
  Scenario: a streamed completion is OpenAI chunks carrying the task's text, ending with data: [DONE] [ORCH-3056]
    Given the OpenAI-compatible door is enabled
    When I POST "/v1/completions" with body {"model":"m","prompt":"Hello there","max_tokens":6,"seed":11,"stream":true} and key "sk-test"
    Then the response is an OpenAI event stream of completion chunks ending with "data: [DONE]"
    And the streamed text is the fake model's words for seed 11, prompt "Hello there" and 6 tokens
    When I POST "/v1/chat/completions" with body {"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true} and key "sk-test"
    Then the response is an OpenAI event stream of chat chunks ending with "data: [DONE]"
    And the engine received 2 completion requests

  @ORCH-3057 @OC-CTRL-2030
  Scenario: an unknown model answers 404 in OpenAI's error shape [ORCH-3057]
    Given the OpenAI-compatible door is enabled
    When I POST "/v1/completions" with body {"model":"gpt-9","prompt":"Hello there"} and key "sk-test"
    Then the response status is 404
    And the response is an OpenAI error of type "not_found_error" with code "model_not_found"
    And the response JSON at "error.param" equals "model"
    When I POST "/v1/chat/completions" with body {"model":"gpt-9","messages":[{"role":"user","content":"hi"}]} and key "sk-test"
    Then the response status is 404
    And the response is an OpenAI error of type "not_found_error" with code "model_not_found"
    And the engine received 0 completion requests

  @ORCH-3057 @OC-CTRL-2040
  Scenario: without a key the door answers 401 in OpenAI's error shape [ORCH-3057, OC-CTRL-2040]
    Given the OpenAI-compatible door is enabled
    When I POST "/v1/completions" with body {"model":"m","prompt":"Hello there"} and key ""
    Then the response status is 401
    And the response is an OpenAI error of type "authentication_error" with code "invalid_api_key"

  @ORCH-3057 @ORCH-2007 @OC-CTRL-2011 @ORCH-3005
  Scenario: a full queue answers 429 in OpenAI's error shape with Retry-After and retry-after-ms [ORCH-3057, ORCH-2007]
    Given a pool "p" of model "m" with 1 replica of 1 slot and queue capacity 1
    And the OpenAI-compatible door is enabled
    And the engine streams a token every 20 ms
    And task "a" was submitted for 500 tokens
    And the engine has 1 request in flight
    And task "b" was submitted for 3 tokens
    When I POST "/v1/completions" with body {"model":"m","prompt":"Hello there","max_tokens":3} and key "sk-test"
    Then the response status is 429
    And the response is an OpenAI error of type "requests" with code "rate_limit_exceeded"
    And the response header "Retry-After" is an integer of at least 1
    And the response header "retry-after-ms" is an integer of at least 1
    And the response header "X-Backoff-Ms" is an integer of at least 1
    And the metric admission_backpressure_events_total{engine="llamacpp",policy="reject"} sums to 1
    And the engine received 1 completion request
