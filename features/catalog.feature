@OC-CTRL-2060 @OC-CTRL-2061 @ORCH-3061
Feature: The model catalog and lifecycle (SPEC §9)
  Operators register a model's artifact (where its bytes are, its sha256
  digest, an ed25519 signature over the digest, an SBOM), verify it and move
  it through Draft → Active → Canary → Deprecated → Retired (control role).
  A catalog entry's id is the model name a pool serves. Deprecated refuses new
  sessions with 403 MODEL_DEPRECATED while existing ones continue; Retired
  refuses every request and ends the model's running tasks. Under the strict
  trust policy unsigned or unverifiable artifacts are refused with
  UNTRUSTED_ARTIFACT. Every verification is counted in
  catalog_verifications_total and every model's state is in model_state.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8
    And an artifact "a" holding "GGUF tiny weights v1"

  @OC-CTRL-2060 @ORCH-3027
  Scenario: register, verify and activate a model: the digest is resolved, recorded and counted [OC-CTRL-2060]
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>","sbom":{"name":"tiny"}} and key "sk-ctl"
    Then the response status is 201
    And the response JSON at "state" equals "Draft"
    When I POST "/v1/catalog/models/m/verify" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "verification.result" equals "pass"
    And the response JSON at "verification.reason" equals "ok"
    When I POST "/v1/catalog/models/m/state" with body {"state":"Active"} and key "sk-ctl"
    Then the response status is 200
    And the response JSON at "state" equals "Active"
    When I GET "/v1/catalog/models/m" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "sbom.name" equals "tiny"
    And the response JSON at "verification.bytes" equals 20
    And the metric catalog_verifications_total{result="pass",reason="ok",engine="llamacpp"} sums to 1
    And the metric model_state{model_id="m",state="Active"} sums to 1
    And the metric model_state{model_id="m",state="Draft"} sums to 0
    Given task "t" was submitted for 3 tokens
    When reader "r" reads the stream of task "t"
    Then the last event of reader "r" is "end" with tokens_out 3

  @OC-CTRL-2060 @ORCH-3027
  Scenario: an artifact whose bytes changed fails verification with digest_mismatch, recorded and counted [OC-CTRL-2060]
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>","digest":"<digest of a>"} and key "sk-ctl"
    Then the response status is 201
    Given artifact "a" now holds "GGUF tiny weights v2 (tampered)"
    When I POST "/v1/catalog/models/m/verify" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "verification.result" equals "fail"
    And the response JSON at "verification.reason" equals "digest_mismatch"
    And the metric catalog_verifications_total{result="fail",reason="digest_mismatch",engine="llamacpp"} sums to 1
    When I GET "/v1/catalog/models/m" with key "sk-ctl"
    Then the response JSON at "verification.result" equals "fail"

  @OC-CTRL-2061 @ORCH-3036
  Scenario: under the strict trust policy only artifacts signed by a trusted key, and verified, may serve [OC-CTRL-2061]
    Given the catalog's trust policy is strict with a trusted signing key
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>","digest":"<digest of a>"} and key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "UNTRUSTED_ARTIFACT"
    When I GET "/v1/catalog/models/m" with key "sk-ctl"
    Then the response status is 404
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>","digest":"<digest of a>","signature":"<untrusted signature of a>"} and key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "UNTRUSTED_ARTIFACT"
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>","digest":"<digest of a>","signature":"<signature of a>"} and key "sk-ctl"
    Then the response status is 201
    When I POST "/v1/catalog/models/m/state" with body {"state":"Active"} and key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "UNTRUSTED_ARTIFACT"
    # Registered but never verified, the model does not serve.
    When I submit task "early" for 2 tokens
    Then the response status is 400
    And the response is an error with code "UNTRUSTED_ARTIFACT"
    When I POST "/v1/catalog/models/m/verify" with key "sk-ctl"
    Then the response status is 200
    And the response JSON at "verification.result" equals "pass"
    When I POST "/v1/catalog/models/m/state" with body {"state":"Active"} and key "sk-ctl"
    Then the response status is 200
    And the response JSON at "state" equals "Active"
    When I submit task "served" for 2 tokens
    Then the response status is 202
    # Found tampered, it stops serving at once.
    Given artifact "a" now holds "GGUF tiny weights v2 (tampered)"
    When I POST "/v1/catalog/models/m/verify" with key "sk-ctl"
    Then the response status is 400
    And the response is an error with code "UNTRUSTED_ARTIFACT"
    When I submit task "late" for 2 tokens
    Then the response status is 400
    And the response is an error with code "UNTRUSTED_ARTIFACT"
    And the metric catalog_verifications_total{result="fail",reason="digest_mismatch",engine="llamacpp"} sums to 1

  @OC-CTRL-2061 @ORCH-2006
  Scenario: a deprecated model refuses new sessions with 403 MODEL_DEPRECATED; an existing session continues until the model is retired [OC-CTRL-2061]
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>"} and key "sk-ctl"
    And I POST "/v1/catalog/models/m/state" with body {"state":"Active"} and key "sk-ctl"
    Given task "first" in session "old" was submitted for 2 tokens
    When reader "r" reads the stream of task "first"
    Then the last event of reader "r" is "end" with tokens_out 2
    When I POST "/v1/catalog/models/m/state" with body {"state":"Deprecated"} and key "sk-ctl"
    Then the response status is 200
    When I submit task "new" in session "fresh" for 2 tokens
    Then the response status is 403
    And the response is an error with code "MODEL_DEPRECATED"
    When I submit task "second" in session "old" for 2 tokens
    Then the response status is 202
    When I POST "/v1/catalog/models/m/state" with body {"state":"Retired"} and key "sk-ctl"
    Then the response status is 200
    When I submit task "third" in session "old" for 2 tokens
    Then the response status is 403
    And the response is an error with code "MODEL_DEPRECATED"
    And the metric model_state{model_id="m",state="Retired"} sums to 1

  @OC-CTRL-2061
  Scenario: retiring a model ends its running tasks with MODEL_DEPRECATED after deadline_ms [OC-CTRL-2061]
    Given the engine streams a token every 10 ms
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>"} and key "sk-ctl"
    And I POST "/v1/catalog/models/m/state" with body {"state":"Active"} and key "sk-ctl"
    Given task "long" was submitted for 2000 tokens
    And the engine has 1 request in flight
    When I POST "/v1/catalog/models/m/state" with body {"state":"Deprecated"} and key "sk-ctl"
    And I POST "/v1/catalog/models/m/state" with body {"state":"Retired","deadline_ms":200} and key "sk-ctl"
    Then the response status is 200
    When reader "r" reads the stream of task "long"
    Then the last event of reader "r" is an error with code "MODEL_DEPRECATED"
    And reader "r" got at least 5 tokens numbered from 0
    And the engine gets back to 0 requests in flight

  @OC-CTRL-2061
  Scenario: deprecating with deadline_ms lets existing sessions run until the deadline, then ends what still runs [OC-CTRL-2061]
    Given the engine streams a token every 10 ms
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>"} and key "sk-ctl"
    And I POST "/v1/catalog/models/m/state" with body {"state":"Active"} and key "sk-ctl"
    Given task "long" in session "old" was submitted for 2000 tokens
    And the engine has 1 request in flight
    When I POST "/v1/catalog/models/m/state" with body {"state":"Deprecated","deadline_ms":400} and key "sk-ctl"
    Then the response status is 200
    When I submit task "next" in session "old" for 2 tokens
    Then the response status is 202
    When reader "r" reads the stream of task "long"
    Then the last event of reader "r" is an error with code "MODEL_DEPRECATED"
    And reader "r" got at least 5 tokens numbered from 0
    When I submit task "after" in session "old" for 2 tokens
    Then the response status is 403
    And the response is an error with code "MODEL_DEPRECATED"

  @OC-CTRL-2060
  Scenario: a model id with a slash is addressed as is or URL-escaped [OC-CTRL-2060]
    When I POST "/v1/catalog/models" with the catalog body {"id":"org/m","ref":"<path of a>"} and key "sk-ctl"
    Then the response status is 201
    When I GET "/v1/catalog/models/org/m" with key "sk-ctl"
    Then the response JSON at "id" equals "org/m"
    When I GET "/v1/catalog/models/org%2Fm" with key "sk-ctl"
    Then the response JSON at "id" equals "org/m"
    When I POST "/v1/catalog/models/org%2Fm/state" with body {"state":"Canary"} and key "sk-ctl"
    Then the response status is 200
    And the response JSON at "state" equals "Canary"

  @OC-CTRL-2060 @OC-CTRL-2061
  Scenario Outline: <what> is refused with <status> <code> and changes nothing [OC-CTRL-2060, OC-CTRL-2061]
    When I POST "/v1/catalog/models" with the catalog body {"id":"m","ref":"<path of a>"} and key "sk-ctl"
    And I POST "<path>" with body <body> and key "<key>"
    Then the response status is <status>
    And the response is an error with code "<code>"
    When I GET "/v1/catalog/models/m" with key "sk-ctl"
    Then the response JSON at "state" equals "Draft"

    Examples:
      | what                         | path                        | body                              | key      | status | code             |
      | a skipped lifecycle step     | /v1/catalog/models/m/state  | {"state":"Deprecated"}            | sk-ctl   | 409    | INVALID_PARAMS   |
      | an unknown state             | /v1/catalog/models/m/state  | {"state":"Shelved"}               | sk-ctl   | 400    | INVALID_PARAMS   |
      | a negative deadline          | /v1/catalog/models/m/state  | {"state":"Active","deadline_ms":-1} | sk-ctl | 400    | INVALID_PARAMS   |
      | an unknown field             | /v1/catalog/models/m/state  | {"state":"Active","when":"now"}   | sk-ctl   | 400    | INVALID_PARAMS   |
      | a data-only key              | /v1/catalog/models/m/state  | {"state":"Active"}                | sk-other | 403    | FORBIDDEN        |
      | a second registration of m   | /v1/catalog/models          | {"id":"m","ref":"/tmp/x"}         | sk-ctl   | 409    | INVALID_PARAMS   |
      | an unknown model             | /v1/catalog/models/nope/state | {"state":"Active"}              | sk-ctl   | 404    | NOT_FOUND        |
