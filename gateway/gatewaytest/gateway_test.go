package gatewaytest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

const testKey = "sk-gatewaytest"

// get fetches url on a fresh connection (no idle one is left behind).
func get(url string) (int, string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// buildOf returns the build a fake at url reports in GET /props.
func buildOf(t *testing.T, url string) string {
	t.Helper()
	code, body, err := get(url + "/props")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s/props: %d %v", url, code, err)
	}
	_, after, ok := strings.Cut(body, `"build_info":"`)
	build, _, ok2 := strings.Cut(after, `"`)
	if !ok || !ok2 {
		t.Fatalf("GET /props has no build_info: %s", body)
	}
	return build
}

func TestFakesKeepTheirAddress(t *testing.T) {
	fs := NewFakes(t)
	if fs.Addr("a") != "" || fs.Get("a") != nil {
		t.Fatalf("unknown fake: Addr %q, Get %v", fs.Addr("a"), fs.Get("a"))
	}
	first := fs.Start("a", fake.Options{})
	addr := fs.Addr("a")
	if addr == "" || addr != first.Addr() || fs.URL("a") != first.URL() || fs.Get("a") != first {
		t.Fatalf("after Start: Addr %q URL %q, fake at %q", addr, fs.URL("a"), first.Addr())
	}
	if got := buildOf(t, fs.URL("a")); got != fake.DefaultEngineVersion {
		t.Errorf("first fake reports build %q, want %q", got, fake.DefaultEngineVersion)
	}
	// A restart replaces the fake on the same address.
	second := fs.Start("a", fake.Options{EngineVersion: "b1-restarted"})
	if second == first || second.Addr() != addr || fs.Get("a") != second {
		t.Fatalf("restart: new fake at %q, want %q", second.Addr(), addr)
	}
	if got := buildOf(t, fs.URL("a")); got != "b1-restarted" {
		t.Errorf("after the restart the address answers with build %q, want b1-restarted", got)
	}
	// Stop closes it; the address stays for the next Start.
	fs.Stop("a")
	if fs.Get("a") != nil || fs.Addr("a") != addr {
		t.Fatalf("after Stop: Get %v, Addr %q (want %q)", fs.Get("a"), fs.Addr("a"), addr)
	}
	if code, _, err := get(fs.URL("a") + "/health"); err == nil {
		t.Errorf("a stopped fake answered %d", code)
	}
	if f := fs.Start("a", fake.Options{}); f.Addr() != addr {
		t.Errorf("start after Stop on %q, want %q", f.Addr(), addr)
	}
	fs.Stop("never-started") // a no-op
	// A second fake gets an address of its own.
	if b := fs.Start("b", fake.Options{}); b.Addr() == addr {
		t.Errorf("fake b shares a's address %s", addr)
	}
}

func TestRestartFake(t *testing.T) {
	old := StartFake(t, fake.Options{})
	if got := buildOf(t, old.URL()); got != fake.DefaultEngineVersion {
		t.Fatalf("StartFake: build %q", got)
	}
	f := RestartFake(t, old, fake.Options{EngineVersion: "b2-restarted"})
	if f.Addr() != old.Addr() {
		t.Fatalf("RestartFake on %q, want %q", f.Addr(), old.Addr())
	}
	if got := buildOf(t, f.URL()); got != "b2-restarted" {
		t.Errorf("after RestartFake the address answers with build %q, want b2-restarted", got)
	}
}

func TestEnv(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fakes := NewFakes(t)
	fakes.Start("r0", fake.Options{})
	fakes.Start("r1", fake.Options{})
	env := Start(t, PoolYAML(testKey, "p", fakes.URL("r0"), fakes.URL("r1")), Options{
		Key: testKey, Fakes: fakes,
		Mutate: func(c *config.Config) { c.Pools[0].Queue.Capacity = 7 },
	})
	env.WaitReady()
	env.WaitHealthy("p", "r0", "r1")
	r, err := env.Replicas("p")
	if err != nil || r["r0"].URL != fakes.URL("r0") || r["r1"].URL != fakes.URL("r1") || len(r) != 2 {
		t.Fatalf("Replicas = %+v, %v", r, err)
	}

	t.Run("Mutate applies before start", func(t *testing.T) {
		b, err := env.Get("/v1/replicasets")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"capacity":7`) {
			t.Errorf("the mutated queue capacity 7 is not served:\n%s", b)
		}
	})

	t.Run("errors", func(t *testing.T) {
		if _, err := env.Get("/v1/no-such-thing"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("GET of an unknown path: %v, want a 404 error", err)
		}
		if _, err := env.Replicas("no-such-pool"); err == nil {
			t.Error("Replicas of an unknown pool: no error")
		}
		if err := env.Submit(ctx, "no-such-pool"); err == nil {
			t.Error("Submit to an unknown pool: no error")
		}
		env.Key = "sk-wrong"
		_, err := env.Get("/v1/replicasets")
		env.Key = testKey
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("GET with an unknown key: %v, want a 403 error", err)
		}
	})

	t.Run("Accepted counts connections", func(t *testing.T) {
		before := env.Accepted()
		if code, _, err := get(env.URL + "/v1/replicasets"); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("GET without a key: %d %v", code, err)
		}
		if n := env.Accepted() - before; n != 1 {
			t.Errorf("one request on a fresh connection: Accepted grew by %d", n)
		}
	})

	t.Run("Submit", func(t *testing.T) {
		before := fakes.Get("r0").Requests() + fakes.Get("r1").Requests()
		if err := env.Submit(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		if n := fakes.Get("r0").Requests() + fakes.Get("r1").Requests() - before; n != 1 {
			t.Errorf("one task made %d completion requests", n)
		}
	})

	t.Run("TripBreaker", func(t *testing.T) {
		n := env.TripBreaker(ctx, "p", "r1")
		if n < 2 {
			t.Errorf("the breaker opened after %d tasks; consecutive_failures is 2", n)
		}
		if fakes.Get("r1") != nil {
			t.Error("r1's fake still runs after the trip")
		}
		if r, err := env.Replicas("p"); err != nil || r["r1"].Breaker == "closed" || r["r0"].Breaker != "closed" {
			t.Errorf("after the trip: %+v (err %v), want r1 open and r0 closed", r, err)
		}
		// A healthy fake on the same address closes it again.
		fakes.Start("r1", fake.Options{})
		env.WaitHealthy("p", "r1")
	})

	t.Run("Close", func(t *testing.T) {
		env.Close()
		env.Close() // the second does nothing
		if _, _, err := get(env.URL + "/v1/replicasets"); err == nil {
			t.Error("the gateway answers after Close")
		}
	})
}

func TestTripBreakerWithoutFakes(t *testing.T) {
	rec := &recorder{TB: t}
	rec.run(func(tb testing.TB) { (&Env{t: tb}).TripBreaker(context.Background(), "p", "r1") })
	if !strings.Contains(rec.fatal, "Options.Fakes") {
		t.Errorf("fatal = %q, want one naming Options.Fakes", rec.fatal)
	}
}

func TestWaitReplicasTimesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits WaitBound")
	}
	fakes := NewFakes(t)
	fakes.Start("r0", fake.Options{})
	fakes.Start("r1", fake.Options{})
	rec := &recorder{TB: t}
	rec.run(func(tb testing.TB) {
		env := Start(tb, PoolYAML(testKey, "p", fakes.URL("r0"), fakes.URL("r1")), Options{Key: testKey})
		env.WaitReplicas("p", "a state that never comes", func(r map[string]Replica) bool { return r["r0"].State == "gone" })
	})
	if !strings.Contains(rec.fatal, "timed out after 10s waiting for a state that never comes; last replicas: map[r0:") {
		t.Errorf("fatal = %q", rec.fatal)
	}
}
