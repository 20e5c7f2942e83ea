package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// minimalYAML is the least a real file needs: a key and one pool with one
// replica. Everything else takes its default.
const minimalYAML = `
auth:
  keys:
    - { key: sk-1, tenant: t1, roles: [data] }
pools:
  - id: p
    engine: vllm
    model: m
    replicas:
      - { id: r0, url: "http://127.0.0.1:8000" }
`

func mustParse(t *testing.T, data string) *Config {
	t.Helper()
	c, ps, err := Parse([]byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(ps) != 0 {
		t.Fatalf("Parse problems: %v", ps)
	}
	return c
}

// wantProblem fails unless ps holds a problem at path, with line (when > 0),
// whose message contains msg, and of the given kind.
func wantProblem(t *testing.T, ps []Problem, path string, line int, msg string, warning bool) {
	t.Helper()
	for _, p := range ps {
		if p.Path == path && strings.Contains(p.Message, msg) && p.Warning == warning && (line == 0 || p.Line == line) {
			return
		}
	}
	t.Errorf("no problem %s (line %d) %q warning=%v in:\n%s", path, line, msg, warning, render(ps))
}

func render(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}

func TestParseProblems(t *testing.T) {
	type want struct {
		path    string
		line    int
		msg     string
		warning bool
	}
	f := func(doc string, wants ...want) {
		t.Helper()
		c, ps, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if c == nil {
			t.Fatalf("Parse returned no config")
		}
		for _, w := range wants {
			wantProblem(t, ps, w.path, w.line, w.msg, w.warning)
		}
		if len(ps) != len(wants) {
			t.Errorf("got %d problems, want %d:\n%s", len(ps), len(wants), render(ps))
		}
	}

	// An unknown key at the top level names itself and its line.
	f("listen: 127.0.0.1:1\nlisten_addr: x\n",
		want{"listen_addr", 2, "unknown field", false})

	// An unknown key nested in a list names the full path (the brief's example).
	f(`pools:
  - id: p
    engine: vllm
    model: m
    queue:
      capacty: 12
    replicas: [{id: r0, url: "http://h:1"}]
`, want{"pools[0].queue.capacty", 6, "unknown field", false})

	// Unknown keys deep in a second list entry, and in a replica.
	f(`pools:
  - {id: a, engine: vllm, model: m, replicas: [{id: r0, url: "http://h:1"}]}
  - id: b
    engine: tgi
    model: m
    replicas:
      - {id: r0, url: "http://h:2", slot: 3}
`, want{"pools[1].replicas[0].slot", 7, "unknown field", false})

	// Every problem of a file is reported, not just the first.
	f(`listen: 127.0.0.1:1
bogus: 1
log: {level: info, colour: true}
shutdown_grace_ms: soon
auth:
  keys:
    - {key: k, tenant: t, roles: data, scope: all}
pools:
  - id: p
    engine: vllm
    model: m
    ctx: [4096]
    replicas: [{id: r0, url: "http://h:1", slots: four}]
`,
		want{"bogus", 2, "unknown field", false},
		want{"log.colour", 3, "unknown field", false},
		want{"shutdown_grace_ms", 4, `expected an integer, got string "soon"`, false},
		want{"auth.keys[0].roles", 7, `expected a list, got string "data"`, false},
		want{"auth.keys[0].scope", 7, "unknown field", false},
		want{"pools[0].ctx", 12, "expected an integer, got a list", false},
		want{"pools[0].replicas[0].slots", 13, "expected an integer", false},
	)

	// Compat mode turns unknown keys into warnings; type errors stay errors.
	f(`config_mode: compat
future_knob: 1
pools:
  - {id: p, engine: vllm, model: m, ctx: big, replicas: [{id: r0, url: "http://h:1", gpu: a100}]}
`,
		want{"future_knob", 2, "unknown field, ignored", true},
		want{"pools[0].replicas[0].gpu", 4, "unknown field, ignored", true},
		want{"pools[0].ctx", 4, "expected an integer", false},
	)

	// Wrong kinds: a mapping where a list is expected, a scalar where a mapping is.
	f("pools: {id: p}\nmetrics: yes\n",
		want{"pools", 1, "expected a list, got a mapping", false},
		want{"metrics", 2, "expected a mapping", false},
	)

	// A float where an integer is expected, a string where a number or bool is.
	f("task_id_ttl_ms: 1.5\nbalancer: {affinity_load_factor: high}\nopenai_compat: maybe\n",
		want{"task_id_ttl_ms", 1, "expected an integer, got number 1.5", false},
		want{"balancer.affinity_load_factor", 2, "expected a number", false},
		want{"openai_compat", 3, "expected true or false", false},
	)

	// A duplicated key is reported with both lines.
	f("listen: a:1\nlisten: b:2\n", want{"listen", 2, "duplicate key (first at line 1)", false})

	// An empty list entry, and an ill-typed list element.
	f("tenants:\n  -\n  - {id: t, weight: 2}\nauth: {keys: [{key: k, tenant: t, roles: [data, [x]]}]}\n",
		want{"tenants[0]", 2, "empty list entry", false},
		want{"auth.keys[0].roles[1]", 4, "expected a string, got a list", false},
	)

	// A second YAML document is refused.
	f("listen: a:1\n---\nlisten: b:2\n", want{"", 2, "second YAML document", false})

	// A file that is a scalar, not a mapping.
	f("just words\n", want{"", 1, "expected a mapping", false})

	// A clean file, anchors and merges included, has no problems.
	f(`pools:
  - &base {id: a, engine: llamacpp, model: m, replicas: [{id: r0, url: "http://h:1"}]}
  - <<: *base
    id: b
    engine: vllm
`)

	// An unknown key inside a merged anchor is reported once, where first seen.
	f(`pools:
  - &base {id: a, engine: llamacpp, model: m, typo: 1, replicas: [{id: r0, url: "http://h:1"}]}
  - <<: *base
    id: b
    engine: vllm
`, want{"pools[0].typo", 2, "unknown field", false})
}

func TestParseBestEffort(t *testing.T) {
	// Ill-typed values keep their default, the rest of the file still lands,
	// and list indexes do not shift.
	c, ps, err := Parse([]byte(`
shutdown_grace_ms: soon
task_retention_ms: 1234
pools:
  - {id: a, engine: vllm, model: m, ctx: huge, replicas: [{id: r0, url: "http://h:1"}]}
  - 42
  - {id: c, engine: tgi, model: m, ctx: 2048, replicas: [{id: r0, url: "http://h:3"}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Errorf("want 3 problems, got:\n%s", render(ps))
	}
	if c.ShutdownGraceMs != 10000 || c.TaskRetentionMs != 1234 {
		t.Errorf("shutdown_grace_ms %d task_retention_ms %d", c.ShutdownGraceMs, c.TaskRetentionMs)
	}
	if len(c.Pools) != 3 || c.Pools[0].Ctx != 4096 || c.Pools[2].ID != "c" || c.Pools[2].Ctx != 2048 {
		t.Errorf("pools: %+v", c.Pools)
	}
}

func TestParsePresence(t *testing.T) {
	// An empty value means the default; an explicit 0 is kept so Validate can
	// refuse it instead of silently replacing it.
	c := mustParse(t, `
listen:
slo: {batch: {error_rate: 0}}
pools:
  - id: p
    engine: vllm
    model: m
    ctx: 0
    queue: {capacity: ~}
    replicas: [{id: r0, url: "http://h:1"}]
`)
	if c.Listen != "127.0.0.1:8090" {
		t.Errorf("listen = %q, want the default", c.Listen)
	}
	if c.SLO.Batch.ErrorRate != 0 || c.SLO.Interactive.ErrorRate != 0.005 {
		t.Errorf("slo = %+v", c.SLO)
	}
	if c.Pools[0].Ctx != 0 || c.Pools[0].Queue.Capacity != 64 || c.Pools[0].Queue.FullPolicy != "reject" {
		t.Errorf("pool = %+v", c.Pools[0])
	}
	wantProblem(t, Validate(c), "pools[0].ctx", 0, "must be > 0", false)
}

func TestParseErrors(t *testing.T) {
	// Not YAML at all: an error, no config.
	c, ps, err := Parse([]byte("listen: [unclosed\n"))
	if err == nil || c != nil || ps != nil {
		t.Errorf("syntax error: c=%v ps=%v err=%v", c, ps, err)
	}
	// An empty file is every default with no pools.
	c, ps, err = Parse(nil)
	if err != nil || len(ps) != 0 || !reflect.DeepEqual(*c, Default()) {
		t.Errorf("empty file: c=%+v ps=%v err=%v", c, ps, err)
	}
	wantProblem(t, Validate(c), "pools", 0, "at least one pool", false)
	// A missing file is an error.
	if _, _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Error("Load of a missing file: no error")
	}
}

func TestLoadAndCheckFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "orchd.yaml")
	doc := strings.Replace(minimalYAML, "    model: m\n", "    model: m\n    ctx: -1\n", 1)
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, ps, err := Load(p)
	if err != nil || len(ps) != 0 || c.Pools[0].Ctx != -1 {
		t.Fatalf("Load: c=%+v ps=%v err=%v", c, ps, err)
	}
	// CheckFile adds the semantic problems, with the line of the value.
	_, ps, err = CheckFile(p, ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, ps, "pools[0].ctx", 9, "must be > 0, got -1", false)
	if !HasErrors(ps) {
		t.Error("HasErrors = false")
	}
}

func TestCheckLines(t *testing.T) {
	// Semantic problems carry the line of their value, or of the nearest
	// ancestor present in the file when the key itself is missing; problems
	// come sorted by line.
	_, ps, err := Check([]byte(`log:
  level: loud
pools:
  - id: p
    engine: vllm
    model: m
    replicas:
      - id: r0
        url: "ftp://h:1"
`), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, ps, "log.level", 2, "must be one of", false)
	wantProblem(t, ps, "pools[0].replicas[0].url", 9, "absolute http or https", false)
	if len(ps) != 2 || ps[0].Line > ps[1].Line {
		t.Errorf("problems:\n%s", render(ps))
	}
	// A missing key is placed at its parent.
	_, ps, _ = Check([]byte("pools:\n  - id: p\n    engine: vllm\n    replicas: [{id: r0, url: \"http://h:1\"}]\n"), ValidateOptions{})
	wantProblem(t, ps, "pools[0].model", 2, "is required", false)
}

func TestProblemString(t *testing.T) {
	f := func(p Problem, want string) {
		t.Helper()
		if got := p.String(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// The brief's format: path, message, line.
	f(Problem{Path: "pools[0].queue.capacty", Line: 12, Message: "unknown field"}, "pools[0].queue.capacty: unknown field (line 12)")
	// A warning says so.
	f(Problem{Path: "x", Line: 1, Message: "unknown field, ignored", Warning: true}, "warning: x: unknown field, ignored (line 1)")
	// No path, no line.
	f(Problem{Message: "m"}, "m")
}

func TestHasErrors(t *testing.T) {
	if HasErrors(nil) || HasErrors([]Problem{{Warning: true}}) {
		t.Error("warnings only: HasErrors = true")
	}
	if !HasErrors([]Problem{{Warning: true}, {}}) {
		t.Error("an error: HasErrors = false")
	}
}

func TestFullRoundTrip(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, ps, err := Check(data, ValidateOptions{})
	if err != nil || len(ps) != 0 {
		t.Fatalf("full.yaml: err=%v problems:\n%s", err, render(ps))
	}
	// Nothing of full.yaml sits at its default by accident.
	if c.Listen != "0.0.0.0:9090" || c.Admission.Tokenize != "engine" || c.Pools[0].Queue.PerPriority.Batch != 32 ||
		c.Pools[1].Replicas[0].TensorSplit[0] != 0.6 || c.Auth.Keys[1].KeySHA256 != "c391959605db2757d87bf45d5f4c9bda42b68e95dcd157bf4f2473516c2bc9bb" {
		t.Errorf("unexpected values: %+v", c)
	}
	// YAML and JSON renderings parse back to the same config.
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if c2 := mustParse(t, string(y)); !reflect.DeepEqual(c, c2) {
		t.Errorf("YAML round trip differs:\n%+v\n%+v", c, c2)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if c3 := mustParse(t, string(j)); !reflect.DeepEqual(c, c3) {
		t.Errorf("JSON round trip differs:\n%+v\n%+v", c, c3)
	}
	// full.yaml sets every key of the shape.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	collectKeys(doc.Content[0], "", have)
	for _, k := range YAMLKeys() {
		if !have[k] {
			t.Errorf("full.yaml does not set %s", k)
		}
	}
}

// collectKeys records every key path of a YAML tree, lists as `[]`.
func collectKeys(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := joinPath(prefix, n.Content[i].Value)
			out[p] = true
			collectKeys(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for _, e := range n.Content {
			collectKeys(e, prefix+"[]", out)
		}
	}
}

func TestDemo(t *testing.T) {
	c, ps, err := Check(DemoYAML(), ValidateOptions{AllowFakeURLs: true})
	if err != nil || len(ps) != 0 {
		t.Fatalf("demo: err=%v problems:\n%s", err, render(ps))
	}
	// The demo SPEC §13 describes.
	if c.Listen != "127.0.0.1:8090" || c.ConfigMode != "strict" {
		t.Errorf("listen %q mode %q", c.Listen, c.ConfigMode)
	}
	k := c.Auth.Keys
	if len(k) != 1 || k[0].Key != "sk-demo" || k[0].Tenant != "demo" || !reflect.DeepEqual(k[0].Roles, []string{"data", "control"}) {
		t.Errorf("keys %+v", k)
	}
	if len(c.Tenants) != 1 || c.Tenants[0].ID != "demo" {
		t.Errorf("tenants %+v", c.Tenants)
	}
	if len(c.Pools) != 1 {
		t.Fatalf("pools %+v", c.Pools)
	}
	p := c.Pools[0]
	if p.ID != "llama-demo" || p.Engine != "llamacpp" || p.Model != "tiny-llama" || len(p.Replicas) != 2 ||
		p.Replicas[0].ID != "r0" || p.Replicas[0].URL != "fake://r0" || p.Replicas[1].ID != "r1" || p.Replicas[1].URL != "fake://r1" {
		t.Errorf("pool %+v", p)
	}
	// Its values are the defaults, so it documents them truthfully.
	d := Default()
	c.Auth, c.Tenants, c.Pools = d.Auth, d.Tenants, d.Pools
	if !reflect.DeepEqual(*c, d) {
		t.Errorf("demo globals differ from Default():\n%+v\n%+v", *c, d)
	}
	dp := defaultPool()
	p.ID, p.Engine, p.Model, p.Replicas = "", "", "", nil
	if !reflect.DeepEqual(p, dp) {
		t.Errorf("demo pool differs from the pool defaults:\n%+v\n%+v", p, dp)
	}
	// Without the option, the fake:// placeholders are refused.
	_, ps, _ = Check(DemoYAML(), ValidateOptions{})
	wantProblem(t, ps, "pools[0].replicas[0].url", 0, "absolute http or https", false)
	wantProblem(t, ps, "pools[0].replicas[1].url", 0, "absolute http or https", false)
	if len(ps) != 2 {
		t.Errorf("problems:\n%s", render(ps))
	}
	// The demo documents every key (as a key or in a comment).
	text := string(DemoYAML())
	for _, k := range YAMLKeys() {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(text, leaf) {
			t.Errorf("default.yaml does not mention %s", k)
		}
	}
	// DemoYAML hands out a copy.
	b := DemoYAML()
	b[0] = 'X'
	if DemoYAML()[0] == 'X' {
		t.Error("DemoYAML shares its bytes")
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"default.yaml", "testdata/full.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimalYAML))
	f.Add([]byte("pools: [&a {id: x, <<: *a}]"))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("pools:\n  - <<: [{ctx: 1}, {ctx: x}]\n    id: p\n"))
	f.Add([]byte(`{"listen": ":1", "pools": [{"id": "p", "replicas": [{"url": 5}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ps, err := Check(data, ValidateOptions{AllowFakeURLs: true})
		if err != nil {
			return
		}
		if c == nil {
			t.Fatal("no config and no error")
		}
		if HasErrors(ps) {
			return
		}
		// A valid config round-trips.
		y, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, ps2, err := Check(y, ValidateOptions{AllowFakeURLs: true})
		if err != nil || HasErrors(ps2) {
			t.Fatalf("re-parse: %v %v\n%s", err, ps2, y)
		}
		// Compared rendered: an empty list may come back as nil.
		y2, err := yaml.Marshal(c2)
		if err != nil {
			t.Fatal(err)
		}
		if string(y) != string(y2) {
			t.Fatalf("round trip differs:\n%s\n%s", y, y2)
		}
	})
}
