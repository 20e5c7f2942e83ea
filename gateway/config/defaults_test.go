package config

import (
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestDefaultValues(t *testing.T) {
	// SPEC §13's values, spelled out once more so a change to Default() is a
	// deliberate change to the contract.
	want := Config{
		Listen:          "127.0.0.1:8090",
		ConfigMode:      "strict",
		ShutdownGraceMs: 10000,
		TaskRetentionMs: 10000,
		TaskIDTTLMs:     600000,
		DetachGraceMs:   10000,
		Log:             Log{Level: "info"},
		Admission:       Admission{Weights: Weights{Interactive: 8, Batch: 1}, MaxTokensLimit: 32768, CharsPerToken: 4},
		Sessions:        Sessions{TTLMs: 600000, MaxTurns: 8},
		SLO: SLO{
			Interactive: SLOTarget{TTFTP95Ms: 900, E2E64TokensP95Ms: 2500, ErrorRate: 0.005},
			Batch:       SLOTarget{ErrorRate: 0.01},
		},
		Balancer: Balancer{AffinityLoadFactor: 1.25},
		Breaker:  Breaker{ConsecutiveFailures: 5, FailureRatio: 0.5, MinRequests: 20, WindowMs: 10000, OpenMs: 5000},
		Health:   Health{IntervalMs: 1000, TimeoutMs: 2000, HealthyAfter: 1, UnhealthyAfter: 2},
		Catalog:  Catalog{TrustPolicy: "permissive"},
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", got, want)
	}
	wantPool := Pool{
		Ctx:        4096,
		Queue:      Queue{Capacity: 64, FullPolicy: "reject"},
		Timeouts:   Timeouts{FirstTokenMs: 30000, IdleMs: 5000, WallMs: 60000},
		Failover:   "error",
		Preemption: "soft",
	}
	if got := defaultPool(); !reflect.DeepEqual(got, wantPool) {
		t.Errorf("defaultPool() = %+v", got)
	}
}

func TestMinimalConfig(t *testing.T) {
	// Only auth and a pool with one replica: Parse fills SPEC's values and the
	// result is valid.
	c := mustParse(t, minimalYAML)
	if ps := Validate(c); len(ps) != 0 {
		t.Fatalf("minimal config problems:\n%s", render(ps))
	}
	want := Default()
	want.Auth.Keys = []Key{{Key: "sk-1", Tenant: "t1", Roles: []string{"data"}}}
	p := defaultPool()
	p.ID, p.Engine, p.Model = "p", "vllm", "m"
	p.Replicas = []Replica{{ID: "r0", URL: "http://127.0.0.1:8000"}}
	want.Pools = []Pool{p}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", *c, want)
	}

	// ApplyDefaults on the same file decoded without defaults gives the same.
	var raw struct {
		Auth  Auth `yaml:"auth"`
		Pools []struct {
			ID       string    `yaml:"id"`
			Engine   string    `yaml:"engine"`
			Model    string    `yaml:"model"`
			Replicas []Replica `yaml:"replicas"`
		} `yaml:"pools"`
	}
	if err := yaml.Unmarshal([]byte(minimalYAML), &raw); err != nil {
		t.Fatal(err)
	}
	var zero Config
	zero.Auth = raw.Auth
	for _, rp := range raw.Pools {
		zero.Pools = append(zero.Pools, Pool{ID: rp.ID, Engine: rp.Engine, Model: rp.Model, Replicas: rp.Replicas})
	}
	ApplyDefaults(&zero)
	if !reflect.DeepEqual(zero, want) {
		t.Errorf("ApplyDefaults(minimal) =\n%+v\nwant\n%+v", zero, want)
	}
}

func TestApplyDefaults(t *testing.T) {
	f := func(in, want Config) {
		t.Helper()
		ApplyDefaults(&in)
		if !reflect.DeepEqual(in, want) {
			t.Errorf("got\n%+v\nwant\n%+v", in, want)
		}
	}
	withTenants := func(ts ...Tenant) Config { c := Default(); c.Tenants = ts; return c }

	// The zero config becomes Default().
	f(Config{}, Default())
	// Set values are kept.
	keep := Default()
	keep.Listen, keep.Breaker.OpenMs, keep.SLO.Batch.TTFTP95Ms = ":1", 7, 3
	f(Config{Listen: ":1", Breaker: Breaker{OpenMs: 7}, SLO: SLO{Batch: SLOTarget{TTFTP95Ms: 3}}}, func() Config {
		c := Default()
		c.Listen, c.Breaker.OpenMs, c.SLO.Batch.TTFTP95Ms = ":1", 7, 3
		return c
	}())
	// A tenant gets weight 1; burst follows rps (rounded up, at least 1) when unset.
	f(Config{Tenants: []Tenant{{ID: "a"}, {ID: "b", Weight: 2, RPS: 2.5}, {ID: "c", RPS: 0.2, Burst: 0}, {ID: "d", RPS: 5, Burst: 9}}},
		withTenants(Tenant{ID: "a", Weight: 1}, Tenant{ID: "b", Weight: 2, RPS: 2.5, Burst: 3}, Tenant{ID: "c", Weight: 1, RPS: 0.2, Burst: 1}, Tenant{ID: "d", Weight: 1, RPS: 5, Burst: 9}))
	// With the engine tokenizing, chars_per_token stays 0.
	eng := Default()
	eng.Admission.Tokenize, eng.Admission.CharsPerToken = "engine", 0
	f(Config{Admission: Admission{Tokenize: "engine"}}, eng)
}

func TestParseTenantBurst(t *testing.T) {
	// Parse derives burst like ApplyDefaults.
	c := mustParse(t, "tenants: [{id: a, rps: 7.5}, {id: b}]\n")
	if c.Tenants[0].Burst != 8 || c.Tenants[0].Weight != 1 || c.Tenants[1].Burst != 0 {
		t.Errorf("tenants %+v", c.Tenants)
	}
}
