package gateway

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// TestCatalogPersistsAcrossRestart: the catalog written to catalog.path is
// read back by the next orchd: the entry, its verification and its
// lifecycle state survive, and the state still gates admission.
func TestCatalogPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	art := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(art, []byte("weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	withCatalog := func(c *config.Config) { c.Catalog.Path = filepath.Join(dir, "catalog.json") }
	e := newEnv(t, withCatalog, fake.Options{})
	for _, step := range []struct {
		path, body string
		status     int
	}{
		{"/v1/catalog/models", `{"id":"m","ref":` + strconv.Quote(art) + `,"sbom":{"spdxVersion":"SPDX-2.3"}}`, 201},
		{"/v1/catalog/models/m/verify", "", 200},
		{"/v1/catalog/models/m/state", `{"state":"Active"}`, 200},
		{"/v1/catalog/models/m/state", `{"state":"Deprecated"}`, 200},
	} {
		if r := e.do("POST", step.path, testKey, step.body); r.status != step.status {
			t.Fatalf("POST %s: %d %s", step.path, r.status, r.body)
		}
	}
	before := e.do("GET", "/v1/catalog/models/m", testKey, "")
	e.close()

	e2 := newEnv(t, withCatalog, fake.Options{})
	after := e2.do("GET", "/v1/catalog/models/m", testKey, "")
	if after.status != 200 || string(after.body) != string(before.body) {
		t.Fatalf("after a restart:\n%d %s\nbefore:\n%s", after.status, after.body, before.body)
	}
	for _, want := range []string{`"state":"Deprecated"`, `"result":"pass"`, `"resolved_digest":"sha256:`, `"spdxVersion":"SPDX-2.3"`} {
		if !strings.Contains(string(after.body), want) {
			t.Errorf("the restored entry lacks %s: %s", want, after.body)
		}
	}
	if r := e2.do("POST", "/v1/tasks", testKey, taskSpec{maxTokens: 2}.body()); r.status != 403 || !strings.Contains(string(r.body), CodeModelDeprecated) {
		t.Fatalf("a new session of the deprecated model after a restart: %d %s", r.status, r.body)
	}
}

// TestCatalogDeprecatedOpenAIDoor: the OpenAI door goes through the same
// lifecycle check: a deprecated model's new request gets OpenAI's error shape
// with 403.
func TestCatalogDeprecatedOpenAIDoor(t *testing.T) {
	art := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(art, []byte("weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *config.Config) { c.OpenAICompat = true }, fake.Options{})
	for _, step := range []struct{ path, body string }{
		{"/v1/catalog/models", `{"id":"m","ref":` + strconv.Quote(art) + `}`},
		{"/v1/catalog/models/m/state", `{"state":"Active"}`},
		{"/v1/catalog/models/m/state", `{"state":"Deprecated"}`},
	} {
		if r := e.do("POST", step.path, testKey, step.body); r.status/100 != 2 {
			t.Fatalf("POST %s: %d %s", step.path, r.status, r.body)
		}
	}
	r := e.do("POST", "/v1/completions", testKey, `{"model":"m","prompt":"Hello","max_tokens":2}`)
	if r.status != 403 || !strings.Contains(string(r.body), "model_deprecated") {
		t.Fatalf("OpenAI door on a deprecated model: %d %s", r.status, r.body)
	}
}
