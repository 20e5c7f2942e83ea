package features

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/cucumber/godog"

	"github.com/llama-orch/llama-orch/engines/fake"
)

// Steps of the OpenAI-compatible door (SPEC §3.5), the ops page cookie and
// key hygiene (§7, §14), hot config apply with its dry run (§9, §14) and the
// ops event feed GET /v1/events (§14).
//
// Config applies follow orchctl's flow: the candidate starts as the running
// config read from GET /v1/config (keys shown as key_sha256), steps edit its
// text, and it is POSTed to /v1/config (?dry_run=true for a preview).

func initOpsSteps(sc *godog.ScenarioContext, e *engineWorld) {
	// OpenAI door.
	sc.Step(`^the OpenAI-compatible door is enabled$`, e.givenOpenAI)
	sc.Step(`^the completion text is the fake model's words for seed (-?\d+), prompt "([^"]*)" and (\d+) tokens$`, e.completionText)
	sc.Step(`^the response is an OpenAI event stream of (completion|chat) chunks ending with "data: \[DONE\]"$`, e.openAIStream)
	sc.Step(`^the streamed text is the fake model's words for seed (-?\d+), prompt "([^"]*)" and (\d+) tokens$`, e.streamedText)
	sc.Step(`^the response is an OpenAI error of type "([^"]*)" with code "([^"]*)"$`, e.openAIError)

	// Ops page cookie and keys.
	sc.Step(`^I exchange key "([^"]*)" for an ops page cookie$`, e.exchangeCookie)
	sc.Step(`^the ops page cookie is HttpOnly and SameSite=Strict$`, e.cookieAttributes)
	sc.Step(`^I (GET|POST|DELETE) "([^"]*)" with the ops page cookie$`, e.withCookie)
	sc.Step(`^I POST "([^"]*)" with body (\{.*\}) and the ops page cookie$`, e.postBodyWithCookie)
	sc.Step(`^I submit task "(\w+)" for (\d+) tokens with the ops page cookie$`, e.submitWithCookie)
	sc.Step(`^I request the stream of task "(\w+)" with the ops page cookie$`, e.streamWithCookie)
	sc.Step(`^I cancel task "(\w+)" with the ops page cookie$`, e.cancelWithCookie)
	sc.Step(`^I get session "(\w+)" with the ops page cookie$`, e.sessionWithCookie)
	sc.Step(`^the response shows the keys "([^"]*)" only as their key_sha256$`, e.keysOnlyHashed)

	// Config apply.
	sc.Step(`^the candidate config is the running one from GET /v1/config$`, e.candidateFromRunning)
	sc.Step(`^the candidate config replaces "([^"]*)" with "([^"]*)"$`, e.candidateReplace)
	sc.Step(`^the candidate config adds the top-level line "([^"]*)"$`, e.candidateAddLine)
	sc.Step(`^the candidate config adds key "([^"]*)" for tenant "(\w+)" with role "(\w+)"$`, e.candidateAddKey)
	sc.Step(`^the candidate config moves replica "(\w+)" to a new engine as replica "(\w+)"$`, e.candidateMoveReplica)
	sc.Step(`^I POST the candidate config to "([^"]*)" with key "([^"]*)"$`, e.postCandidate)
	sc.Step(`^the running config is unchanged$`, e.runningUnchanged)
	sc.Step(`^the running config (contains|lacks) "([^"]*)"$`, e.runningHas)
	sc.Step(`^the response lists a problem at "([^"]*)" on the line of "([^"]*)" in the candidate config$`, e.problemAt)
	sc.Step(`^the response JSON at "([^"]*)" contains "([^"]*)"$`, e.jsonAtContains)
	sc.Step(`^the response's diff (adds|removes) the line "([^"]*)"$`, e.diffLine)
	sc.Step(`^the response body contains "([^"]*)"$`, e.bodyHas)
	sc.Step(`^replica "(\w+)"'s new engine received (\d+) completion requests?$`, e.newReplicaReceived)

	// Ops events.
	sc.Step(`^reader "(\w+)" follows the ops events with key "([^"]*)"$`, e.followEvents)
	sc.Step(`^reader "(\w+)" reads ops events until a "(\w+)" event with "(\w+)" = (\S+)$`, e.readEventsUntil)
	sc.Step(`^the last "(\w+)" event of reader "(\w+)" has "(\w+)" containing "([^"]*)"$`, e.lastEventContains)
}

// ---- OpenAI door ----

func (e *engineWorld) givenOpenAI() error {
	e.topExtra = append(e.topExtra, "openai_compat: true")
	return e.configurable()
}

func fakeWords(seed int64, prompt string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(fake.Text(seed, prompt, i))
	}
	return b.String()
}

// completionText checks a non-streamed completion (choices[0].text) or
// chat completion (choices[0].message.content).
func (e *engineWorld) completionText(seed int64, prompt string, n int) error {
	m, err := e.lastJSON()
	if err != nil {
		return err
	}
	got, err := jsonAt(m, "choices[0].text")
	if err != nil {
		if got, err = jsonAt(m, "choices[0].message.content"); err != nil {
			return err
		}
	}
	if want := fakeWords(seed, prompt, n); got != want {
		return fmt.Errorf("completion text %q, the fake model's %d words are %q; body %s", got, n, want, e.last.body)
	}
	return nil
}

// openAIStream parses the last response as OpenAI's SSE chunks: every event
// a `data:` line with a chunk object of the kind, the last one [DONE].
func (e *engineWorld) openAIStream(kind string) error {
	r, err := e.lastResponse()
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("status %d, want 200; body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	body := string(r.body)
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		return fmt.Errorf("the stream does not end with data: [DONE]:\n%s", body)
	}
	object := map[string]string{"completion": "text_completion", "chat": "chat.completion.chunk"}[kind]
	var text strings.Builder
	events := strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n")
	for i, ev := range events {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(data, "\n") {
			return fmt.Errorf("event %d is not one data line: %q", i, ev)
		}
		if i == len(events)-1 {
			if data != "[DONE]" {
				return fmt.Errorf("last event %q, want [DONE]", data)
			}
			break
		}
		var chunk map[string]any
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return fmt.Errorf("event %d is not a JSON chunk: %q", i, data)
		}
		if chunk["object"] != object {
			return fmt.Errorf("chunk %d object %v, want %s: %s", i, chunk["object"], object, data)
		}
		choices, _ := chunk["choices"].([]any)
		if len(choices) == 0 {
			continue // the usage chunk
		}
		path := "choices[0].text"
		if kind == "chat" {
			path = "choices[0].delta.content"
		}
		if t, err := jsonAt(chunk, path); err == nil {
			s, _ := t.(string)
			text.WriteString(s)
		}
	}
	e.oaiText = text.String()
	return nil
}

func (e *engineWorld) streamedText(seed int64, prompt string, n int) error {
	if want := fakeWords(seed, prompt, n); e.oaiText != want {
		return fmt.Errorf("streamed text %q, the fake model's %d words are %q", e.oaiText, n, want)
	}
	return nil
}

// openAIError checks OpenAI's error shape {"error":{"message","type",
// "param","code"}}; code "null" means a JSON null.
func (e *engineWorld) openAIError(typ, code string) error {
	m, err := e.lastJSON()
	if err != nil {
		return err
	}
	if len(m) != 1 {
		return fmt.Errorf("an OpenAI error body has only \"error\": %s", e.last.body)
	}
	eo, ok := m["error"].(map[string]any)
	if !ok {
		return fmt.Errorf("no error object: %s", e.last.body)
	}
	for _, f := range []string{"message", "type", "param", "code"} {
		if _, ok := eo[f]; !ok {
			return fmt.Errorf("the error object lacks %q: %s", f, e.last.body)
		}
	}
	if msg, _ := eo["message"].(string); msg == "" {
		return fmt.Errorf("empty error message: %s", e.last.body)
	}
	if eo["type"] != typ {
		return fmt.Errorf("error type %v, want %s: %s", eo["type"], typ, e.last.body)
	}
	var want any = code
	if code == "null" {
		want = nil
	}
	if eo["code"] != want {
		return fmt.Errorf("error code %v, want %s: %s", eo["code"], code, e.last.body)
	}
	return nil
}

// ---- ops page cookie and keys ----

const uiCookieName = "orchd_ui"

func (e *engineWorld) exchangeCookie(key string) error {
	r, err := e.do(request{method: "POST", path: "/v1/ui/session", key: key})
	if err != nil {
		return err
	}
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == uiCookieName {
			e.cookie = c.Value
		}
	}
	return nil
}

func (e *engineWorld) cookieAttributes() error {
	r, err := e.lastResponse()
	if err != nil {
		return err
	}
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name != uiCookieName {
			continue
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Value == "" {
			return fmt.Errorf("cookie %s: HttpOnly %v, SameSite %v, want HttpOnly and Strict: %q", c.Name, c.HttpOnly, c.SameSite, r.header.Values("Set-Cookie"))
		}
		return nil
	}
	return fmt.Errorf("no %s cookie set (status %d): %q", uiCookieName, r.status, r.header.Values("Set-Cookie"))
}

func (e *engineWorld) cookieRequest(method, path, body string) error {
	if e.cookie == "" {
		return errors.New("no ops page cookie: exchange a key for one first")
	}
	_, err := e.do(request{method: method, path: path, body: body, header: []string{"Cookie", uiCookieName + "=" + e.cookie}})
	return err
}

func (e *engineWorld) withCookie(method, path string) error { return e.cookieRequest(method, path, "") }

func (e *engineWorld) postBodyWithCookie(path, body string) error {
	return e.cookieRequest("POST", path, body)
}

func (e *engineWorld) submitWithCookie(task string, tokens int) error {
	return e.cookieRequest("POST", "/v1/tasks", e.body(task, "", tokens))
}

func (e *engineWorld) streamWithCookie(task string) error {
	return e.cookieRequest("GET", "/v1/tasks/"+e.taskID(task)+"/stream", "")
}

func (e *engineWorld) cancelWithCookie(task string) error {
	return e.cookieRequest("POST", "/v1/tasks/"+e.taskID(task)+"/cancel", "")
}

func (e *engineWorld) sessionWithCookie(session string) error {
	return e.cookieRequest("GET", "/v1/sessions/"+e.sessionID(session), "")
}

func keySHA256(k string) string {
	s := sha256.Sum256([]byte(k))
	return hex.EncodeToString(s[:])
}

func (e *engineWorld) keysOnlyHashed(keys string) error {
	r, err := e.lastResponse()
	if err != nil {
		return err
	}
	body := string(r.body)
	for _, k := range splitList(keys) {
		if strings.Contains(body, k) {
			return fmt.Errorf("the response shows key %q:\n%s", k, body)
		}
		if !strings.Contains(body, keySHA256(k)) {
			return fmt.Errorf("the response lacks the key_sha256 of %q (%s):\n%s", k, keySHA256(k), body)
		}
	}
	return nil
}

// ---- config apply ----

func (e *engineWorld) runningConfig() (string, error) {
	r, err := e.do(request{method: "GET", path: "/v1/config", key: keyCtl})
	if err != nil {
		return "", err
	}
	if r.status != http.StatusOK {
		return "", fmt.Errorf("GET /v1/config: %d %s", r.status, r.body)
	}
	return string(r.body), nil
}

func (e *engineWorld) candidateFromRunning() error {
	cur, err := e.runningConfig()
	if err != nil {
		return err
	}
	e.candidate, e.runningBefore = cur, cur
	return nil
}

func (e *engineWorld) needCandidate() error {
	if e.candidate == "" {
		return errors.New("no candidate config: start it from the running one")
	}
	return nil
}

func (e *engineWorld) candidateReplace(old, new string) error {
	if err := e.needCandidate(); err != nil {
		return err
	}
	if n := strings.Count(e.candidate, old); n != 1 {
		return fmt.Errorf("the candidate config has %q %d times, want once:\n%s", old, n, e.candidate)
	}
	e.candidate = strings.Replace(e.candidate, old, new, 1)
	return nil
}

func (e *engineWorld) candidateAddLine(line string) error {
	if err := e.needCandidate(); err != nil {
		return err
	}
	e.candidate = strings.TrimRight(e.candidate, "\n") + "\n" + line + "\n"
	return nil
}

// candidateAddKey adds a plain-text key (as an operator writes it) at the
// head of auth.keys in GET /v1/config's layout.
func (e *engineWorld) candidateAddKey(key, tenant, role string) error {
	return e.candidateReplace("auth:\n    keys:\n",
		"auth:\n    keys:\n        - key: "+key+"\n          tenant: "+tenant+"\n          roles: ["+role+"]\n")
}

// candidateMoveReplica starts a new engine of the pool's kind and makes the
// candidate's replica id point at it under a new id: a new replica list.
func (e *engineWorld) candidateMoveReplica(id, newID string) error {
	if err := e.needCandidate(); err != nil {
		return err
	}
	fs, err := e.replicaFakes(e.engineName())
	if err != nil {
		return err
	}
	i, err := e.replicaIndex(id)
	if err != nil {
		return err
	}
	o := e.fake
	o.Slots = e.fakeSlots()
	f, err := engineKinds[e.engineName()].newFake(o)
	if err != nil {
		return err
	}
	if err := f.Start("127.0.0.1:0"); err != nil {
		return err
	}
	e.others = append(e.others, f)
	if e.newReplicas == nil {
		e.newReplicas = map[string]engineFake{}
	}
	e.newReplicas[newID] = f
	return e.candidateReplace("- id: "+id+"\n          url: "+fs[i].URL()+"\n", "- id: "+newID+"\n          url: "+f.URL()+"\n")
}

func (e *engineWorld) postCandidate(path, key string) error {
	if err := e.needCandidate(); err != nil {
		return err
	}
	_, err := e.do(request{method: "POST", path: path, body: e.candidate, key: key, header: []string{"Content-Type", "application/yaml"}})
	return err
}

// runningUnchanged compares GET /v1/config with the text the candidate
// started from; the last response stays the one under test.
func (e *engineWorld) runningUnchanged() error {
	last, prev := e.last, e.prev
	defer func() { e.last, e.prev = last, prev }()
	cur, err := e.runningConfig()
	if err != nil {
		return err
	}
	if e.runningBefore == "" {
		return errors.New("no earlier running config to compare with")
	}
	if cur != e.runningBefore {
		return fmt.Errorf("the running config changed:\nbefore:\n%s\nnow:\n%s", e.runningBefore, cur)
	}
	return nil
}

func (e *engineWorld) runningHas(how, text string) error {
	last, prev := e.last, e.prev
	defer func() { e.last, e.prev = last, prev }()
	cur, err := e.runningConfig()
	if err != nil {
		return err
	}
	if strings.Contains(cur, text) != (how == "contains") {
		return fmt.Errorf("the running config %s %q, but:\n%s", how, text, cur)
	}
	return nil
}

// problemAt finds a problem whose path is path and whose line is the line
// of the candidate that contains text (1-based).
func (e *engineWorld) problemAt(path, text string) error {
	line := 0
	for i, l := range strings.Split(e.candidate, "\n") {
		if strings.Contains(l, text) {
			line = i + 1
			break
		}
	}
	if line == 0 {
		return fmt.Errorf("the candidate config has no line with %q", text)
	}
	v, err := e.lastAt("problems")
	if err != nil {
		return err
	}
	probs, _ := v.([]any)
	for _, p := range probs {
		pm, _ := p.(map[string]any)
		if pm["path"] == path && pm["line"] == float64(line) && pm["warning"] != true {
			if msg, _ := pm["message"].(string); msg == "" {
				return fmt.Errorf("the problem at %s has no message: %v", path, pm)
			}
			return nil
		}
	}
	return fmt.Errorf("no problem at path %q, line %d; problems: %v", path, line, probs)
}

// jsonAtContains: a string containing s, or an array with an element s.
func (e *engineWorld) jsonAtContains(path, s string) error {
	v, err := e.lastAt(path)
	if err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		if strings.Contains(x, s) {
			return nil
		}
	case []any:
		for _, el := range x {
			if el == s {
				return nil
			}
		}
	}
	return fmt.Errorf("%s does not contain %q: %v", path, s, v)
}

// diffLine finds a line of the response's unified diff ("diff") that adds
// (+) or removes (-) text, compared without its indentation.
func (e *engineWorld) diffLine(how, text string) error {
	v, err := e.lastAt("diff")
	if err != nil {
		return err
	}
	d, _ := v.(string)
	sign := "+"
	if how == "removes" {
		sign = "-"
	}
	for _, l := range strings.Split(d, "\n") {
		if strings.HasPrefix(l, sign+sign+sign) {
			continue // the file header
		}
		if rest, ok := strings.CutPrefix(l, sign); ok && strings.TrimSpace(rest) == text {
			return nil
		}
	}
	return fmt.Errorf("the diff does not %s the line %q:\n%s", strings.TrimSuffix(how, "s"), text, d)
}

func (e *engineWorld) bodyHas(s string) error {
	r, err := e.lastResponse()
	if err != nil {
		return err
	}
	if !strings.Contains(string(r.body), s) {
		return fmt.Errorf("body lacks %q: %s", s, r.body)
	}
	return nil
}

func (e *engineWorld) newReplicaReceived(id string, n int) error {
	f, ok := e.newReplicas[id]
	if !ok {
		return fmt.Errorf("no new engine for replica %q", id)
	}
	if got := f.Requests(); got != int64(n) {
		return fmt.Errorf("the new engine of replica %s received %d completion requests, want %d", id, got, n)
	}
	return nil
}

// ---- ops events ----

// followEvents opens GET /v1/events and reads its first event, `hello`: from
// then on the reader is subscribed.
func (e *engineWorld) followEvents(name, key string) error {
	r := &reader{}
	e.readers[name] = r
	if err := e.openStream(r, request{method: "GET", path: "/v1/events", key: key}); err != nil {
		return err
	}
	ev, err := r.next()
	if err != nil {
		return fmt.Errorf("GET /v1/events: %w", err)
	}
	if ev.name != "hello" {
		return fmt.Errorf("the first ops event is %s, want hello", ev)
	}
	return nil
}

var okLiteral = regexp.MustCompile(`^(true|false|-?\d+|"[^"]*"|null)$`)

// readEventsUntil reads the feed until an event of kind whose field equals
// the literal; bounded by the client's timeout.
func (e *engineWorld) readEventsUntil(name, kind, field, literal string) error {
	if !okLiteral.MatchString(literal) {
		return fmt.Errorf("bad JSON literal %s", literal)
	}
	r, err := e.reader(name)
	if err != nil {
		return err
	}
	err = r.readUntil(func(ev event) bool { return ev.name == kind && jsonEquals(ev.data, field, literal) == nil })
	if err != nil {
		return fmt.Errorf("no %q ops event with %s = %s: %w; events:%s", kind, field, literal, err, r.dump())
	}
	return nil
}

// lastEventContains: the last kind event's field is a string containing s
// or an array with an element s.
func (e *engineWorld) lastEventContains(kind, name, field, s string) error {
	r, err := e.reader(name)
	if err != nil {
		return err
	}
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].name != kind {
			continue
		}
		switch x := r.events[i].data[field].(type) {
		case string:
			if strings.Contains(x, s) {
				return nil
			}
		case []any:
			for _, el := range x {
				if el == s {
					return nil
				}
			}
		}
		return fmt.Errorf("the last %q event's %q does not contain %q: %s", kind, field, s, r.events[i])
	}
	return fmt.Errorf("reader %q got no %q event; events:%s", name, kind, r.dump())
}
