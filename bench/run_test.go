package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/llamacpp"
	"github.com/llama-orch/llama-orch/gateway"
	"github.com/llama-orch/llama-orch/gateway/config"
)

const testKey = "sk-bench-test"

func startFake(t *testing.T, o fake.Options) *fake.Server {
	t.Helper()
	f, err := fake.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// startGateway runs an in-process orchd in front of engineURL and returns
// its base URL.
func startGateway(t *testing.T, engineURL string) string {
	t.Helper()
	yml := fmt.Sprintf(`
auth:
  keys:
    - { key: %s, tenant: bench, roles: [data] }
health: { interval_ms: 20, timeout_ms: 1000, healthy_after: 1, unhealthy_after: 1 }
shutdown_grace_ms: 1000
pools:
  - id: p
    engine: llamacpp
    model: m
    queue: { capacity: 16, full_policy: reject }
    replicas:
      - { id: r0, url: %q, slots: 4 }
`, testKey, engineURL)
	cfg, problems, err := config.Check([]byte(yml), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v", err, problems)
	}
	srv, err := gateway.New(cfg, gateway.Options{NewAdapter: func(pc config.Pool, rc config.Replica) (engines.Adapter, error) {
		return llamacpp.New(rc.URL, llamacpp.Options{})
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-done
	})
	for i := 0; i < 500 && !srv.Ready(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !srv.Ready() {
		t.Fatal("gateway never became ready")
	}
	return "http://" + ln.Addr().String()
}

// checkCounts checks that a phase's counts add up: every request either
// succeeded or has one error kind, and successful ones carried tokens each.
func checkCounts(t *testing.T, name string, p *Phase, tokens int) {
	t.Helper()
	if p.Requests == 0 {
		t.Fatalf("%s: no requests", name)
	}
	if p.OK+p.ErrorCount() != p.Requests {
		t.Errorf("%s: ok %d + errors %d != requests %d", name, p.OK, p.ErrorCount(), p.Requests)
	}
	if p.ErrorCount() == 0 && p.Tokens != p.Requests*int64(tokens) {
		t.Errorf("%s: %d tokens over %d requests of %d", name, p.Tokens, p.Requests, tokens)
	}
}

// TestRunEndToEnd drives an in-process fake engine directly and through an
// in-process gateway with two clients for a second, both one round trip and
// two step, and checks that the counts add up.
func TestRunEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	f := startFake(t, fake.Options{Slots: 4})
	gw := startGateway(t, f.URL())
	for _, twoStep := range []bool{false, true} {
		t.Run(fmt.Sprintf("two-step=%v", twoStep), func(t *testing.T) {
			cfg := Config{
				GatewayURL: gw, DirectURL: f.URL(),
				Params: Params{Key: testKey, Model: "m", Engine: "llamacpp", Tokens: 8},
				C:      2, Duration: time.Second, TwoStep: twoStep,
				GatewayPIDs: []int{os.Getpid()}, // the gateway runs in this process
			}
			if twoStep {
				cfg.DirectURL = "" // the direct phase was covered above
				cfg.Duration = 300 * time.Millisecond
			}
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !twoStep {
				checkCounts(t, "direct", rep.Direct, 8)
				if len(rep.Direct.Errors) != 0 {
					t.Errorf("direct errors: %v", rep.Direct.Errors)
				}
				if rep.Delta == nil {
					t.Error("no delta with a direct phase")
				}
			}
			checkCounts(t, "gateway", rep.Gateway, 8)
			if len(rep.Gateway.Errors) != 0 {
				t.Errorf("gateway errors: %v", rep.Gateway.Errors)
			}
			if rep.Gateway.CPUSPer1000Tokens == nil || rep.Gateway.PeakRSSBytes == nil || *rep.Gateway.PeakRSSBytes <= 0 {
				t.Errorf("gateway CPU/RSS not sampled: %+v", rep.Gateway)
			}
			if rep.Gateway.TTFT.Max <= 0 || rep.Gateway.Total.Max < rep.Gateway.TTFT.P50 {
				t.Errorf("implausible latencies: ttft %+v total %+v", rep.Gateway.TTFT, rep.Gateway.Total)
			}
			dir := t.TempDir()
			if err := WriteReports(dir, rep); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadReport(filepath.Join(dir, "report.json")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRunErrorKinds checks that failures land in the right error kind and
// that every loop stops by itself.
func TestRunErrorKinds(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	cases := []struct {
		name string
		fake fake.Options
		cfg  func(*Config)
		kind string
	}{
		// The engine refuses every request before streaming.
		{"start-503", fake.Options{Fail: fake.FailStart503}, nil, "http_503"},
		// The connection drops mid-stream without the final frame.
		{"midstream disconnect", fake.Options{Fail: fake.FailMidstreamDisconnect}, nil, KindNoTerminal},
		// A mid-stream error frame.
		{"midstream error", fake.Options{Fail: fake.FailMidstreamError}, nil, "error_event_server_error"},
		// The model stops (EOS) before the requested count.
		{"short stream", fake.Options{Tokens: 3}, nil, KindTokenCount},
		// The engine stalls; the request's timeout ends it.
		{"stall", fake.Options{Fail: fake.FailStall}, func(c *Config) { c.Timeout = 200 * time.Millisecond }, KindTimeout},
		// Nothing listens.
		{"refused", fake.Options{}, func(c *Config) { c.DirectURL = "http://127.0.0.1:1" }, KindConnect},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.fake)
			cfg := Config{
				// The gateway phase goes to the fake too, through its own API.
				GatewayURL: f.URL(), GatewayAPI: "engine", DirectURL: f.URL(),
				Params: Params{Model: "m", Engine: "llamacpp", Tokens: 8},
				C:      1, Duration: 150 * time.Millisecond,
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			rep, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := rep.Direct
			if p.Requests == 0 || p.Errors[tc.kind] != p.Requests || p.OK != 0 {
				t.Errorf("direct: %d requests, errors %v; want all %q", p.Requests, p.Errors, tc.kind)
			}
		})
	}
}

// TestRunCanceled stops a run early: it returns promptly with what finished.
func TestRunCanceled(t *testing.T) {
	f := startFake(t, fake.Options{Slots: 2, ITL: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	rep, err := Run(ctx, Config{
		GatewayURL: f.URL(), GatewayAPI: "engine", DirectURL: f.URL(),
		Params: Params{Model: "m", Engine: "llamacpp", Tokens: 1000},
		C:      2, Duration: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted {
		t.Error("report not marked interrupted")
	}
	if n := rep.Direct.ErrorCount() + rep.Gateway.ErrorCount(); n != 0 {
		t.Errorf("aborted requests counted as errors: %v %v", rep.Direct.Errors, rep.Gateway.Errors)
	}
}

func TestConfigCheck(t *testing.T) {
	base := func() Config {
		return Config{GatewayURL: "http://127.0.0.1:1", DirectURL: "http://127.0.0.1:2",
			Params: Params{Model: "m", Engine: "llamacpp", Tokens: 8}, C: 1, Duration: time.Second}
	}
	f := func(name string, mutate func(*Config), wantErr bool) {
		t.Helper()
		c := base()
		mutate(&c)
		if err := c.Check(); (err != nil) != wantErr {
			t.Errorf("%s: Check() = %v, want error %v", name, err, wantErr)
		}
	}
	f("valid", func(*Config) {}, false)
	f("non-loopback gateway", func(c *Config) { c.GatewayURL = "http://10.0.0.1:8090" }, true)
	f("non-loopback direct", func(c *Config) { c.DirectURL = "http://192.168.0.1" }, true)
	f("unknown direct engine", func(c *Config) { c.Engine = "vllm" }, true)
	f("vllm without direct phase", func(c *Config) { c.Engine = "vllm"; c.DirectURL = "" }, false)
	f("zero clients", func(c *Config) { c.C = 0 }, true)
	f("ramp too long", func(c *Config) { c.Ramp = 2 * time.Second }, true)
	f("bad gateway api", func(c *Config) { c.GatewayAPI = "grpc" }, true)
	f("two-step through a plain proxy", func(c *Config) { c.GatewayAPI = "engine"; c.TwoStep = true }, true)
	c := base()
	c.Paced = 20 * time.Millisecond
	c.Tokens = 128
	_ = c.Check()
	if c.Timeout != 60*time.Second+2*128*20*time.Millisecond {
		t.Errorf("default timeout %v", c.Timeout)
	}
}
