package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/gatewaytest"
)

// End-to-end: orchctl against the real gateway (gateway.New + Serve on
// loopback) in front of llama.cpp fakes. One gateway serves every step, in
// order: status, status --json, watch while r1's breaker is tripped for
// real, apply (dry run, then --commit) of a new r1 URL, an invalid file
// refused before any request, drain, status. gatewaytest starts the fakes
// and the gateway and trips the breaker.

const (
	e2eKey  = "sk-e2e-control"
	e2ePool = "llama-e2e"
)

// e2eGateway is the running gateway, its fakes (named after the replica
// ids) and the config file it runs.
type e2eGateway struct {
	*gatewaytest.Env
	fakes *gatewaytest.Fakes
	yaml  string
}

func startE2EGateway(t *testing.T) *e2eGateway {
	t.Helper()
	// Created first, so its cleanup runs last: the fakes (also those
	// restarted later) outlive the gateway's graceful shutdown.
	fakes := gatewaytest.NewFakes(t)
	fakes.Start("r0", fake.Options{})
	fakes.Start("r1", fake.Options{})
	// Queue capacity 16, model tiny-llama and a breaker that opens after 2
	// failures: the status rows and the invalid file below rely on them.
	yaml := gatewaytest.PoolYAML(e2eKey, e2ePool, fakes.URL("r0"), fakes.URL("r1"))
	g := &e2eGateway{Env: gatewaytest.Start(t, yaml, gatewaytest.Options{Key: e2eKey, Fakes: fakes}), fakes: fakes, yaml: yaml}
	g.WaitHealthy(e2ePool, "r0", "r1")
	return g
}

// orchctl runs the command against g and returns exit code, stdout, stderr.
func (g *e2eGateway) orchctl(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runCtx(ctx, args, envOf(map[string]string{"ORCHD_URL": g.URL, "ORCHD_KEY": e2eKey}), &out, &errb)
	return code, out.String(), errb.String()
}

// e2eReplicaRow matches a row of status's replica table.
func e2eReplicaRow(id, state, breaker string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + e2ePool + `\s+` + id + `\s+` + state + `\s+` + breaker + `\s+\d+/\d+\s`)
}

func TestE2EAgainstGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	g := startE2EGateway(t)
	dir := t.TempDir()
	must := func(t *testing.T, code int, stdout, stderr string) {
		t.Helper()
		if code != exitOK {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	}

	t.Run("status", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "status")
		must(t, code, out, errs)
		// Pools table: engine with its version, model, ready, not draining, queue 0/16.
		pools := regexp.MustCompile(`(?m)^` + e2ePool + `\s+llamacpp ` + fake.DefaultEngineVersion + `\s+tiny-llama\s+yes\s+no\s+0/16\s`)
		if !pools.MatchString(out) {
			t.Errorf("status lacks the pool row %v:\n%s", pools, out)
		}
		for _, id := range []string{"r0", "r1"} {
			if re := e2eReplicaRow(id, "ready", "closed"); !re.MatchString(out) {
				t.Errorf("status lacks %s ready/closed (%v):\n%s", id, re, out)
			}
		}
	})

	t.Run("status --json", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "status", "--json")
		must(t, code, out, errs)
		var v struct {
			ReplicaSets []struct {
				PoolID   string `json:"pool_id"`
				Ready    bool   `json:"ready"`
				Draining bool   `json:"draining"`
				Replicas []struct {
					ID, URL, State, Breaker string
				} `json:"replicas"`
			} `json:"replicasets"`
			SLOAttainment json.RawMessage `json:"slo_attainment"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("status --json does not parse: %v\n%s", err, out)
		}
		if len(v.ReplicaSets) != 1 || v.ReplicaSets[0].PoolID != e2ePool || !v.ReplicaSets[0].Ready || v.ReplicaSets[0].Draining {
			t.Fatalf("status --json pools = %+v", v.ReplicaSets)
		}
		if v.SLOAttainment == nil {
			t.Error("status --json dropped slo_attainment (it must print the server's JSON as it is)")
		}
		got := map[string]string{}
		for _, r := range v.ReplicaSets[0].Replicas {
			got[r.ID] = r.URL + " " + r.State + " " + r.Breaker
		}
		want := map[string]string{"r0": g.fakes.URL("r0") + " ready closed", "r1": g.fakes.URL("r1") + " ready closed"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("status --json replicas = %v, want %v", got, want)
		}
	})

	t.Run("watch shows the breaker trip", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		var out, errb syncBuffer
		done := make(chan int, 1)
		env := envOf(map[string]string{"ORCHD_URL": g.URL, "ORCHD_KEY": e2eKey})
		go func() { done <- runCtx(wctx, []string{"watch"}, env, &out, &errb) }()
		waitOut := func(what string, re *regexp.Regexp) {
			t.Helper()
			for deadline := time.Now().Add(15 * time.Second); !re.MatchString(out.String()); time.Sleep(10 * time.Millisecond) {
				select {
				case code := <-done:
					t.Fatalf("watch ended early with %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
				default:
				}
				if time.Now().After(deadline) {
					wcancel()
					select {
					case <-done:
					case <-time.After(10 * time.Second):
						t.Errorf("watch did not end within 10s after its context was canceled")
					}
					t.Fatalf("watch never printed %s (%v)\nstdout:\n%s\nstderr:\n%s", what, re, out.String(), errb.String())
				}
			}
		}
		// The hello line: the stream is open, no later event is missed.
		waitOut("the hello line", regexp.MustCompile(`(?m)^\S+\s+hello\s`))
		g.TripBreaker(ctx, e2ePool, "r1")
		waitOut("the breaker line", regexp.MustCompile(`(?m)^\S+\s+breaker\s+`+e2ePool+`/r1\s+closed -> open$`))
		wcancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("watch ended by its context: exit %d, want 0\nstderr:\n%s", code, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not end after its context was canceled")
		}
		if s := errb.String(); s != "" {
			t.Errorf("watch wrote to stderr:\n%s", s)
		}
		if strings.Contains(out.String(), e2eKey) {
			t.Error("watch printed the key")
		}
		// status shows it too.
		code, st, errs := g.orchctl(ctx, "status")
		must(t, code, st, errs)
		if re := e2eReplicaRow("r1", `\S+`, `(open|half-open)`); !re.MatchString(st) {
			t.Errorf("status after the trip lacks r1 with its breaker open (%v):\n%s", re, st)
		}
		// A healthy r1 on the same port closes it again (next probe after open_ms).
		g.fakes.Start("r1", fake.Options{})
		g.WaitHealthy(e2ePool, "r1")
	})

	// A new URL for r1: a third fake.
	g.fakes.Start("r1-new", fake.Options{})
	oldURL, newURL := g.fakes.URL("r1"), g.fakes.URL("r1-new")
	newFile := filepath.Join(dir, "new.yaml")
	if err := os.WriteFile(newFile, []byte(strings.Replace(g.yaml, oldURL, newURL, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	diffLine := func(sign, url string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sign) + `\s.*url: "?` + regexp.QuoteMeta(url) + `"?$`)
	}

	t.Run("apply dry run", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "apply", "-f", newFile)
		must(t, code, out, errs)
		if want := "dry run: 1 change (pools." + e2ePool + ".replicas); nothing applied (rerun with --commit to apply)\n"; !strings.HasPrefix(out, want) {
			t.Errorf("apply dry run: first line is not %q:\n%s", want, out)
		}
		for _, re := range []*regexp.Regexp{diffLine("-", oldURL), diffLine("+", newURL)} {
			if !re.MatchString(out) {
				t.Errorf("apply dry run: the diff lacks a line %v:\n%s", re, out)
			}
		}
		if r, err := g.Replicas(e2ePool); err != nil || r["r1"].URL != oldURL {
			t.Errorf("after a dry run r1 = %+v (err %v), want it unchanged at %s", r["r1"], err, oldURL)
		}
	})

	t.Run("apply --commit", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "apply", "-f", newFile, "--commit")
		must(t, code, out, errs)
		if want := "applied: 1 change (pools." + e2ePool + ".replicas)\n"; !strings.HasPrefix(out, want) {
			t.Errorf("apply --commit: first line is not %q:\n%s", want, out)
		}
		code, out, errs = g.orchctl(ctx, "status", "--json")
		must(t, code, out, errs)
		if !strings.Contains(out, `"url": "`+newURL+`"`) || strings.Contains(out, `"url": "`+oldURL+`"`) {
			t.Errorf("status --json after the commit does not show r1 at %s:\n%s", newURL, out)
		}
		code, out, errs = g.orchctl(ctx, "status")
		must(t, code, out, errs)
		if re := e2eReplicaRow("r1", "ready", "closed"); !re.MatchString(out) {
			t.Errorf("status after the commit lacks r1 ready/closed:\n%s", out)
		}
		// Applying the same file again changes nothing.
		code, out, errs = g.orchctl(ctx, "apply", "-f", newFile)
		must(t, code, out, errs)
		if out != "dry run: no changes\n" {
			t.Errorf("dry run of the running file = %q, want %q", out, "dry run: no changes\n")
		}
	})

	t.Run("apply of the config GET /v1/config returns", func(t *testing.T) {
		running, err := g.Get("/v1/config")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(running, []byte(e2eKey)) {
			t.Fatalf("GET /v1/config shows the key:\n%s", running)
		}
		file := filepath.Join(dir, "running.yaml")
		if err := os.WriteFile(file, running, 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errs := g.orchctl(ctx, "apply", "-f", file)
		must(t, code, out, errs)
		if out != "dry run: no changes\n" {
			t.Errorf("dry run of GET /v1/config's own answer = %q, want %q (the diff is empty, yet orchd lists changes: it compares `key` with `key_sha256` of the same key, and an absent tenants list with `tenants: []`)", out, "dry run: no changes\n")
		}
	})

	t.Run("invalid file refused before any request", func(t *testing.T) {
		bad := strings.Replace(g.yaml, "capacity: 16", "capacity: 0", 1) + "bogus_key: 1\n"
		lines := strings.Split(bad, "\n")
		capLine, bogusLine := 0, 0
		for i, l := range lines {
			switch {
			case strings.Contains(l, "capacity: 0"):
				capLine = i + 1
			case strings.HasPrefix(l, "bogus_key:"):
				bogusLine = i + 1
			}
		}
		file := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		before := g.Accepted()
		code, out, errs := g.orchctl(ctx, "apply", "-f", file, "--commit")
		if code != exitFailed {
			t.Errorf("exit %d, want %d", code, exitFailed)
		}
		if out != "" {
			t.Errorf("stdout = %q, want nothing", out)
		}
		for _, want := range []string{
			fmt.Sprintf("%s:%d: pools[0].queue.capacity: ", file, capLine),
			fmt.Sprintf("%s:%d: ", file, bogusLine),
			"refusing " + file + ": 2 problems; nothing was sent to orchd",
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errs)
			}
		}
		if n := g.Accepted() - before; n != 0 {
			t.Errorf("orchctl opened %d connection(s) to orchd for an invalid file", n)
		}
		if r, err := g.Replicas(e2ePool); err != nil || r["r1"].URL != newURL {
			t.Errorf("r1 = %+v (err %v), want it still at %s", r["r1"], err, newURL)
		}
	})

	t.Run("drain then status", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "drain", e2ePool, "--deadline", "1s")
		must(t, code, out, errs)
		if want := "drain of pool " + e2ePool + " accepted: no new admissions; in-flight work is canceled if not done within 1s\n"; out != want {
			t.Errorf("drain printed %q, want %q", out, want)
		}
		code, out, errs = g.orchctl(ctx, "status")
		must(t, code, out, errs)
		if re := regexp.MustCompile(`(?m)^` + e2ePool + `\s+llamacpp \S+\s+tiny-llama\s+(yes|no)\s+yes\s`); !re.MatchString(out) {
			t.Errorf("status after the drain lacks DRAINING yes (%v):\n%s", re, out)
		}
		for _, id := range []string{"r0", "r1"} {
			if re := e2eReplicaRow(id, "draining", "closed"); !re.MatchString(out) {
				t.Errorf("status after the drain lacks %s draining (%v):\n%s", id, re, out)
			}
		}
		// A second drain is accepted and says so.
		code, out, errs = g.orchctl(ctx, "drain", e2ePool, "--deadline", "1s")
		must(t, code, out, errs)
		if !strings.Contains(out, "already draining") {
			t.Errorf("second drain printed %q", out)
		}
	})
}
