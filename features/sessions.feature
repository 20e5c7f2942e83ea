@ORCH-2004 @ORCH-2005
Feature: Sessions (SPEC §3.4)
  Tasks naming a session_id share it: GET /v1/sessions/{id} reports its turns,
  TTL and KV warmth; DELETE forgets it; sessions are scoped to the tenant and
  expire after max_turns.

  Background:
    Given a pool "p" of model "m" with 1 replica of 2 slots and queue capacity 8

  @ORCH-2004
  Scenario: a finished task leaves a session of one turn with warm KV [ORCH-2004]
    Given task "a" in session "s" was submitted for 4 tokens
    And reader "r" reads the stream of task "a"
    When I get session "s"
    Then the response status is 200
    And the response field "turns" is 1
    And the response field "ttl_ms_remaining" is greater than 0
    And the response has the fields "ttl_ms_remaining, turns, kv_bytes, kv_warmth"
    And the response field "kv_warmth" is true

  @ORCH-2004 @ORCH-3009 @OC-CORE-1013
  Scenario: a second task of the session is turn 2 and starts with warm KV [ORCH-3009]
    Given task "a" in session "s" was submitted for 4 tokens
    And reader "r1" reads the stream of task "a"
    And task "b" in session "s" was submitted for 4 tokens
    When reader "r2" reads the stream of task "b"
    Then the "started" event of reader "r1" has field "kv_warmth" = false
    And the "started" event of reader "r2" has field "kv_warmth" = true
    When I get session "s"
    Then the response field "turns" is 2

  @ORCH-2005
  Scenario: DELETE forgets the session [ORCH-2005]
    Given task "a" in session "s" was submitted for 4 tokens
    And reader "r" reads the stream of task "a"
    When I delete session "s"
    Then the response status is 204
    And the response has no header "X-Correlation-Id"
    When I get session "s"
    Then the response status is 404
    And the response has the fields "code, message, retriable"
    When I delete session "s"
    Then the response status is 404

  @ORCH-2001 @ORCH-2004 @OC-CTRL-2040
  Scenario: another tenant sees neither the session nor the task: 404, never 409 [ORCH-2001]
    Given task "a" in session "s" was submitted for 4 tokens
    And reader "r" reads the stream of task "a"
    When I get session "s" with key "sk-other"
    Then the response status is 404
    When I request the stream of task "a" with key "sk-other"
    Then the response status is 404
    When I cancel task "a" with key "sk-other"
    Then the response status is 404
    When I delete session "s" with key "sk-other"
    Then the response status is 404
    When I get session "s"
    Then the response status is 200
    # Task ids are scoped to the tenant: the other tenant's id is a new task.
    When I submit task "a" again with key "sk-other"
    Then the response status is 202

  @ORCH-3021 @ORCH-2004
  Scenario: a session whose turns are used up starts afresh [ORCH-3021]
    Given sessions expire after 2 turns
    And task "a" in session "s" was submitted for 4 tokens
    And reader "r1" reads the stream of task "a"
    And task "b" in session "s" was submitted for 4 tokens
    And reader "r2" reads the stream of task "b"
    When I get session "s"
    Then the response status is 404
    Given task "c" in session "s" was submitted for 4 tokens
    When reader "r3" reads the stream of task "c"
    Then the "started" event of reader "r3" has field "kv_warmth" = false
    When I get session "s"
    Then the response status is 200
    And the response field "turns" is 1

  @ORCH-3021 @ORCH-2004
  Scenario: a session expires its TTL after its last task, then starts afresh [ORCH-3021]
    Given sessions expire 500 ms after their last task
    And task "a" in session "s" was submitted for 4 tokens
    And reader "r1" reads the stream of task "a"
    Then session "s" eventually answers 404
    Given task "b" in session "s" was submitted for 4 tokens
    When reader "r2" reads the stream of task "b"
    Then the "started" event of reader "r2" has field "kv_warmth" = false
    When I get session "s"
    Then the response status is 200
    And the response field "turns" is 1
