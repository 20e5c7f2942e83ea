package config

import (
	"math"
	"testing"
)

// validBase is a valid config touching every list, for mutation by the
// cases below.
const validBase = `
auth:
  keys:
    - { key: sk-1, tenant: t1, roles: [data] }
    - { key_sha256: c391959605db2757d87bf45d5f4c9bda42b68e95dcd157bf4f2473516c2bc9bb, tenant: ops, roles: [control] }
tenants:
  - { id: t1, weight: 2, max_concurrent: 10, rps: 5, burst: 10 }
  - { id: ops }
pools:
  - id: a
    engine: llamacpp
    model: m
    queue: { capacity: 10, per_priority: { interactive: 8, batch: 2 } }
    replicas:
      - { id: r0, url: "http://10.0.0.1:8080", slots: 2, devices: [0] }
      - { id: r1, url: "https://10.0.0.1:8081/base", devices: [1, 2], tensor_split: [0.7, 0.3] }
  - id: b
    engine: vllm
    model: m
    replicas:
      - { id: r0, url: "http://10.0.0.2:8000", devices: [0] }
`

func TestValidateBase(t *testing.T) {
	c := mustParse(t, validBase)
	if ps := Validate(c); len(ps) != 0 {
		t.Fatalf("base config has problems:\n%s", render(ps))
	}
	if c.Tenants[1].Weight != 1 {
		t.Errorf("tenant weight default: %v", c.Tenants[1].Weight)
	}
}

func TestValidateRules(t *testing.T) {
	f := func(mutate func(c *Config), path, msg string) {
		t.Helper()
		c := mustParse(t, validBase)
		mutate(c)
		ps := Validate(c)
		wantProblem(t, ps, path, 0, msg, false)
		if len(ps) != 1 {
			t.Errorf("want exactly one problem, got:\n%s", render(ps))
		}
	}

	// listen must be host:port.
	f(func(c *Config) { c.Listen = "localhost" }, "listen", "host:port")
	// listen's port must be a port number.
	f(func(c *Config) { c.Listen = "127.0.0.1:http" }, "listen", "port must be a number")
	// config_mode is strict or compat.
	f(func(c *Config) { c.ConfigMode = "lenient" }, "config_mode", `must be one of strict, compat, got "lenient"`)
	// Durations that may be 0 may not be negative.
	f(func(c *Config) { c.ShutdownGraceMs = -1 }, "shutdown_grace_ms", "must be >= 0")
	f(func(c *Config) { c.TaskRetentionMs = -1 }, "task_retention_ms", "must be >= 0")
	f(func(c *Config) { c.DetachGraceMs = -1 }, "detach_grace_ms", "must be >= 0")
	// Remembering task ids for no time would break idempotency.
	f(func(c *Config) { c.TaskIDTTLMs = 0 }, "task_id_ttl_ms", "must be > 0")
	// log.level is one of four.
	f(func(c *Config) { c.Log.Level = "trace" }, "log.level", "must be one of debug, info, warn, error")

	// A key needs key or key_sha256 ...
	f(func(c *Config) { c.Auth.Keys[0].Key = "" }, "auth.keys[0]", "needs key or key_sha256")
	// ... not both.
	f(func(c *Config) { c.Auth.Keys[0].KeySHA256 = c.Auth.Keys[1].KeySHA256 }, "auth.keys[0]", "not both")
	// key_sha256 is 64 hex digits.
	f(func(c *Config) { c.Auth.Keys[1].KeySHA256 = "abc" }, "auth.keys[1].key_sha256", "64 hex digits")
	f(func(c *Config) { c.Auth.Keys[1].KeySHA256 = "zz" + c.Auth.Keys[1].KeySHA256[2:] }, "auth.keys[1].key_sha256", "64 hex digits")
	// A key needs a tenant.
	f(func(c *Config) { c.Auth.Keys[0].Tenant = "" }, "auth.keys[0].tenant", "is required")
	// A key needs a role ...
	f(func(c *Config) { c.Auth.Keys[0].Roles = nil }, "auth.keys[0].roles", "at least one")
	// ... and only known ones.
	f(func(c *Config) { c.Auth.Keys[0].Roles = []string{"data", "admin"} }, "auth.keys[0].roles[1]", `must be data or control, got "admin"`)
	// The same key twice, even once hashed, is refused without showing it.
	f(func(c *Config) {
		c.Auth.Keys = append(c.Auth.Keys, Key{Key: "sk-ops", Tenant: "x", Roles: []string{"data"}})
	}, "auth.keys[2]", "same key as auth.keys[1]")

	// Tenant ids are required ...
	f(func(c *Config) { c.Tenants[1].ID = "" }, "tenants[1].id", "is required")
	// ... and unique.
	f(func(c *Config) { c.Tenants[1].ID = "t1" }, "tenants[1].id", `duplicate tenant "t1" (also tenants[0])`)
	// Tenant weights are > 0.
	f(func(c *Config) { c.Tenants[0].Weight = 0 }, "tenants[0].weight", "must be > 0")
	// Quotas are not negative.
	f(func(c *Config) { c.Tenants[0].MaxConcurrent = -1 }, "tenants[0].max_concurrent", "must be >= 0")
	f(func(c *Config) { c.Tenants[0].RPS = -1 }, "tenants[0].rps", "must be >= 0")
	f(func(c *Config) { c.Tenants[0].Burst = -1 }, "tenants[0].burst", "must be >= 0")

	// Priority weights are > 0.
	f(func(c *Config) { c.Admission.Weights.Interactive = 0 }, "admission.weights.interactive", "must be > 0")
	f(func(c *Config) { c.Admission.Weights.Batch = -1 }, "admission.weights.batch", "must be > 0")
	// NaN is no weight.
	f(func(c *Config) { c.Admission.Weights.Batch = math.NaN() }, "admission.weights.batch", "must be > 0")
	// max_tokens_limit is > 0.
	f(func(c *Config) { c.Admission.MaxTokensLimit = 0 }, "admission.max_tokens_limit", "must be > 0")
	// chars_per_token is > 0 when it is the estimator ...
	f(func(c *Config) { c.Admission.CharsPerToken = 0 }, "admission.chars_per_token", "must be > 0")
	// ... and only >= 0 when the engine tokenizes.
	f(func(c *Config) { c.Admission.Tokenize = "engine"; c.Admission.CharsPerToken = -1 }, "admission.chars_per_token", "must be >= 0")
	// tokenize is empty or engine.
	f(func(c *Config) { c.Admission.Tokenize = "tiktoken" }, "admission.tokenize", "must be empty or engine")

	// Sessions need a TTL and turns; the budget may be 0.
	f(func(c *Config) { c.Sessions.TTLMs = 0 }, "sessions.ttl_ms", "must be > 0")
	f(func(c *Config) { c.Sessions.MaxTurns = 0 }, "sessions.max_turns", "must be > 0")
	f(func(c *Config) { c.Sessions.TokenBudget = -5 }, "sessions.token_budget", "must be >= 0")

	// SLO error rates are fractions; latencies are not negative.
	f(func(c *Config) { c.SLO.Interactive.ErrorRate = 1.5 }, "slo.interactive.error_rate", "must be in [0,1]")
	f(func(c *Config) { c.SLO.Batch.ErrorRate = -0.1 }, "slo.batch.error_rate", "must be in [0,1]")
	f(func(c *Config) { c.SLO.Interactive.TTFTP95Ms = -1 }, "slo.interactive.ttft_p95_ms", "must be >= 0")
	f(func(c *Config) { c.SLO.Batch.E2E64TokensP95Ms = -1 }, "slo.batch.e2e_64_tokens_p95_ms", "must be >= 0")

	// A load factor below 1 could refuse every replica.
	f(func(c *Config) { c.Balancer.AffinityLoadFactor = 0.9 }, "balancer.affinity_load_factor", "at least 1")

	// Breaker settings are sane.
	f(func(c *Config) { c.Breaker.ConsecutiveFailures = 0 }, "breaker.consecutive_failures", "must be > 0")
	f(func(c *Config) { c.Breaker.FailureRatio = 0 }, "breaker.failure_ratio", "(0,1]")
	f(func(c *Config) { c.Breaker.FailureRatio = 1.01 }, "breaker.failure_ratio", "(0,1]")
	f(func(c *Config) { c.Breaker.MinRequests = 0 }, "breaker.min_requests", "must be > 0")
	f(func(c *Config) { c.Breaker.WindowMs = 0 }, "breaker.window_ms", "must be > 0")
	f(func(c *Config) { c.Breaker.OpenMs = -1 }, "breaker.open_ms", "must be > 0")

	// Health settings are > 0.
	f(func(c *Config) { c.Health.IntervalMs = 0 }, "health.interval_ms", "must be > 0")
	f(func(c *Config) { c.Catalog.TrustPolicy = "lax" }, "catalog.trust_policy", "must be one of")
	f(func(c *Config) { c.Catalog.TrustPolicy = TrustStrict }, "catalog.trusted_keys", "at least one trusted key")
	f(func(c *Config) { c.Catalog.TrustedKeys = []string{"bm90IGEga2V5"} }, "catalog.trusted_keys[0]", "32-byte ed25519 public key")
	f(func(c *Config) { c.Catalog.TrustedKeys = []string{"%%%"} }, "catalog.trusted_keys[0]", "32-byte ed25519 public key")
	f(func(c *Config) { c.Health.TimeoutMs = 0 }, "health.timeout_ms", "must be > 0")
	f(func(c *Config) { c.Health.HealthyAfter = 0 }, "health.healthy_after", "must be > 0")
	f(func(c *Config) { c.Health.UnhealthyAfter = 0 }, "health.unhealthy_after", "must be > 0")

	// At least one pool.
	f(func(c *Config) { c.Pools = nil }, "pools", "at least one pool")
	// Pool ids are required, URL-safe and unique.
	f(func(c *Config) { c.Pools[1].ID = "" }, "pools[1].id", "is required")
	f(func(c *Config) { c.Pools[1].ID = "my pool/1" }, "pools[1].id", "letters, digits")
	f(func(c *Config) { c.Pools[1].ID = "a" }, "pools[1].id", `duplicate pool id "a" (also pools[0])`)
	// The engine is one of four.
	f(func(c *Config) { c.Pools[1].Engine = "ollama" }, "pools[1].engine", "must be one of llamacpp, vllm, tgi, triton")
	// A pool needs a model.
	f(func(c *Config) { c.Pools[1].Model = "" }, "pools[1].model", "is required")
	// No two pools serve the same model on the same engine.
	f(func(c *Config) { c.Pools[1].Engine = "llamacpp" }, "pools[1].model", `pools[0] already serves model "m" on engine llamacpp`)
	// A pool id that is another pool's model (same engine) makes model_ref ambiguous.
	f(func(c *Config) {
		c.Pools[1].ID = "m2"
		c.Pools[0].Model = "m2"
		c.Pools[0].Engine = "vllm"
		c.Pools[1].Model = "x"
	},
		"pools[1].id", "model_ref would be ambiguous")
	// ctx is > 0.
	f(func(c *Config) { c.Pools[0].Ctx = 0 }, "pools[0].ctx", "must be > 0")
	// Queue capacity is > 0.
	f(func(c *Config) { c.Pools[1].Queue.Capacity = 0 }, "pools[1].queue.capacity", "must be > 0")
	// The full policy is one of three.
	f(func(c *Config) { c.Pools[0].Queue.FullPolicy = "drop-oldest" }, "pools[0].queue.full_policy", "must be one of reject, drop-lru, shed-low-priority")
	// Per-priority caps are >= 0 ...
	f(func(c *Config) { c.Pools[0].Queue.PerPriority.Batch = -1 }, "pools[0].queue.per_priority.batch", "must be >= 0")
	// ... and within capacity.
	f(func(c *Config) { c.Pools[0].Queue.PerPriority.Interactive = 11 }, "pools[0].queue.per_priority.interactive", "at most queue.capacity (10)")
	// Timeouts are > 0.
	f(func(c *Config) { c.Pools[0].Timeouts.FirstTokenMs = 0 }, "pools[0].timeouts.first_token_ms", "must be > 0")
	f(func(c *Config) { c.Pools[0].Timeouts.IdleMs = 0 }, "pools[0].timeouts.idle_ms", "must be > 0")
	f(func(c *Config) { c.Pools[0].Timeouts.WallMs = -1 }, "pools[0].timeouts.wall_ms", "must be > 0")
	// failover is error or resume.
	f(func(c *Config) { c.Pools[0].Failover = "retry" }, "pools[0].failover", "must be one of error, resume")
	// preemption is soft or hard.
	f(func(c *Config) { c.Pools[0].Preemption = "none" }, "pools[0].preemption", "must be one of soft, hard")
	// A pool needs a replica.
	f(func(c *Config) { c.Pools[1].Replicas = nil }, "pools[1].replicas", "at least one replica")

	// Replica ids are required, URL-safe and unique within the pool.
	f(func(c *Config) { c.Pools[0].Replicas[1].ID = "" }, "pools[0].replicas[1].id", "is required")
	f(func(c *Config) { c.Pools[0].Replicas[1].ID = "r 1" }, "pools[0].replicas[1].id", "letters, digits")
	f(func(c *Config) { c.Pools[0].Replicas[1].ID = "r0" }, "pools[0].replicas[1].id", `duplicate replica id "r0" (also pools[0].replicas[0])`)
	// URLs: required, http(s), absolute, with host and port, nothing more.
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "" }, "pools[1].replicas[0].url", "is required")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "10.0.0.2:8000" }, "pools[1].replicas[0].url", "absolute http or https")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "grpc://10.0.0.2:8000" }, "pools[1].replicas[0].url", "absolute http or https")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "/v1" }, "pools[1].replicas[0].url", "absolute http or https")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "http://10.0.0.2" }, "pools[1].replicas[0].url", "host and a port")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "http://:8000" }, "pools[1].replicas[0].url", "host and a port")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "http://10.0.0.2:99999" }, "pools[1].replicas[0].url", "invalid port")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "http://10.0.0.2:8000/?x=1" }, "pools[1].replicas[0].url", "query")
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "http://%zz" }, "pools[1].replicas[0].url", "absolute http or https")
	// fake:// is the demo's placeholder, refused without the option.
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "fake://r0" }, "pools[1].replicas[0].url", "absolute http or https")
	// slots may be 0 (read from the engine) but not negative.
	f(func(c *Config) { c.Pools[1].Replicas[0].Slots = -1 }, "pools[1].replicas[0].slots", "must be >= 0")

	// Device ids are not negative ...
	f(func(c *Config) { c.Pools[1].Replicas[0].Devices = []int{-1} }, "pools[1].replicas[0].devices[0]", "must be >= 0")
	// ... nor listed twice.
	f(func(c *Config) {
		c.Pools[0].Replicas[1].Devices = []int{1, 1}
	}, "pools[0].replicas[1].devices[1]", "listed twice")
	// A device of one host serves one pool (SPEC §5: no overlapping masks).
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "http://10.0.0.1:9000" }, "pools[1].replicas[0].devices[0]",
		"device 0 of host 10.0.0.1 is already used by pools[0].replicas[0]")
	// A replica on several devices gives an explicit split ...
	f(func(c *Config) { c.Pools[0].Replicas[1].TensorSplit = nil }, "pools[0].replicas[1].tensor_split", "required when a replica spans 2 devices")
	// ... with one share per device ...
	f(func(c *Config) { c.Pools[0].Replicas[1].TensorSplit = []float64{1} }, "pools[0].replicas[1].tensor_split", "1 entries for 2 devices")
	f(func(c *Config) {
		c.Pools[1].Replicas[0].Devices = nil
		c.Pools[1].Replicas[0].TensorSplit = []float64{1}
	},
		"pools[1].replicas[0].tensor_split", "1 entries for 0 devices")
	// ... each in (0,1] ...
	f(func(c *Config) { c.Pools[0].Replicas[1].TensorSplit = []float64{1.2, 0.3} }, "pools[0].replicas[1].tensor_split[0]", "(0,1]")
	// ... summing to 1.
	f(func(c *Config) { c.Pools[0].Replicas[1].TensorSplit = []float64{0.5, 0.4} }, "pools[0].replicas[1].tensor_split", "must sum to 1")
}

func TestValidateAccepts(t *testing.T) {
	f := func(mutate func(c *Config), o ValidateOptions) {
		t.Helper()
		c := mustParse(t, validBase)
		mutate(c)
		if ps := ValidateOpts(c, o); len(ps) != 0 {
			t.Errorf("unexpected problems:\n%s", render(ps))
		}
	}
	// fake://NAME passes with AllowFakeURLs.
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "fake://r9" }, ValidateOptions{AllowFakeURLs: true})
	// listen on every interface, or an ephemeral port.
	f(func(c *Config) { c.Listen = ":8090" }, ValidateOptions{})
	f(func(c *Config) { c.Listen = "[::1]:0" }, ValidateOptions{})
	// The same device id on different hosts is no overlap.
	f(func(c *Config) { c.Pools[1].Replicas[0].URL = "http://10.0.0.3:8000" }, ValidateOptions{})
	// Replicas of one pool may share a device.
	f(func(c *Config) { c.Pools[0].Replicas[1].Devices = []int{0, 2} }, ValidateOptions{})
	// A split within 1e-6 of 1 is fine.
	f(func(c *Config) { c.Pools[0].Replicas[1].TensorSplit = []float64{0.1 + 0.2, 0.7 - 1e-7} }, ValidateOptions{})
	// The same model on two engines is two pools.
	f(func(c *Config) { c.Pools[1].Engine = "triton" }, ValidateOptions{})
	// Quotas and budgets of 0 mean none.
	f(func(c *Config) { c.Tenants[0].MaxConcurrent, c.Tenants[0].RPS, c.Sessions.TokenBudget = 0, 0, 0 }, ValidateOptions{})
	// With the engine tokenizing, chars_per_token may be 0.
	f(func(c *Config) { c.Admission.Tokenize, c.Admission.CharsPerToken = "engine", 0 }, ValidateOptions{})
	// No keys is valid (nothing is served, but the file is sound).
	f(func(c *Config) { c.Auth.Keys = nil }, ValidateOptions{})
}

func TestValidateReportsAll(t *testing.T) {
	// Validate does not stop at the first problem.
	c := mustParse(t, validBase)
	c.Listen = "nope"
	c.Log.Level = "loud"
	c.Pools[0].Engine = "x"
	c.Pools[1].Replicas[0].URL = "ftp://h:1"
	ps := Validate(c)
	for _, path := range []string{"listen", "log.level", "pools[0].engine", "pools[1].replicas[0].url"} {
		wantProblem(t, ps, path, 0, "", false)
	}
	if len(ps) != 4 {
		t.Errorf("problems:\n%s", render(ps))
	}
}
