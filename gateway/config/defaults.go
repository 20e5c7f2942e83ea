package config

import (
	"math"

	"go.yaml.in/yaml/v3"
)

// Enumerated values of the config (SPEC §13).
const (
	ModeStrict = "strict"
	ModeCompat = "compat"

	RoleData    = "data"
	RoleControl = "control"

	TokenizeEngine = "engine"

	EngineLlamaCpp = "llamacpp"
	EngineVLLM     = "vllm"
	EngineTGI      = "tgi"
	EngineTriton   = "triton"

	FullPolicyReject          = "reject"
	FullPolicyDropLRU         = "drop-lru"
	FullPolicyShedLowPriority = "shed-low-priority"

	FailoverError  = "error"
	FailoverResume = "resume"

	PreemptionSoft = "soft"
	PreemptionHard = "hard"

	TrustStrict     = "strict"
	TrustPermissive = "permissive"
)

// Default returns the configuration every key falls back to (SPEC §13). It
// has no keys, tenants or pools: those have no sensible default.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:8090",
		ConfigMode:      ModeStrict,
		OpenAICompat:    false,
		ShutdownGraceMs: 10000,
		TaskRetentionMs: 10000,
		TaskIDTTLMs:     600000,
		DetachGraceMs:   10000,
		Metrics:         Metrics{RequireKey: false},
		Log:             Log{Level: "info", Prompts: false},
		Admission: Admission{
			Weights:        Weights{Interactive: 8, Batch: 1},
			MaxTokensLimit: 32768,
			CharsPerToken:  4,
		},
		Sessions: Sessions{TTLMs: 600000, MaxTurns: 8, TokenBudget: 0},
		SLO: SLO{
			Interactive: SLOTarget{TTFTP95Ms: 900, E2E64TokensP95Ms: 2500, ErrorRate: 0.005},
			Batch:       SLOTarget{ErrorRate: 0.01},
		},
		Balancer: Balancer{AffinityLoadFactor: 1.25},
		Breaker: Breaker{
			ConsecutiveFailures: 5,
			FailureRatio:        0.5,
			MinRequests:         20,
			WindowMs:            10000,
			OpenMs:              5000,
		},
		Health:  Health{IntervalMs: 1000, TimeoutMs: 2000, HealthyAfter: 1, UnhealthyAfter: 2},
		Catalog: Catalog{TrustPolicy: TrustPermissive},
	}
}

// defaultPool is a pool with every defaulted key set; id, engine, model and
// replicas have no default.
func defaultPool() Pool {
	return Pool{
		Ctx:        4096,
		Queue:      Queue{Capacity: 64, FullPolicy: FullPolicyReject},
		Timeouts:   Timeouts{FirstTokenMs: 30000, IdleMs: 5000, WallMs: 60000},
		Failover:   FailoverError,
		Preemption: PreemptionSoft,
	}
}

func defaultTenant() Tenant {
	return Tenant{Weight: 1}
}

// ApplyDefaults sets every zero-valued key of c, including those of each pool
// and tenant, to its default. It cannot tell an explicit 0 from an absent key,
// so it is meant for configs built in code; Parse applies defaults by presence.
func ApplyDefaults(c *Config) {
	d := Default()
	setStr(&c.Listen, d.Listen)
	setStr(&c.ConfigMode, d.ConfigMode)
	setInt(&c.ShutdownGraceMs, d.ShutdownGraceMs)
	setInt(&c.TaskRetentionMs, d.TaskRetentionMs)
	setInt(&c.TaskIDTTLMs, d.TaskIDTTLMs)
	setInt(&c.DetachGraceMs, d.DetachGraceMs)
	setStr(&c.Log.Level, d.Log.Level)

	setFloat(&c.Admission.Weights.Interactive, d.Admission.Weights.Interactive)
	setFloat(&c.Admission.Weights.Batch, d.Admission.Weights.Batch)
	setInt(&c.Admission.MaxTokensLimit, d.Admission.MaxTokensLimit)
	if c.Admission.Tokenize != TokenizeEngine {
		setFloat(&c.Admission.CharsPerToken, d.Admission.CharsPerToken)
	}

	setInt(&c.Sessions.TTLMs, d.Sessions.TTLMs)
	setInt(&c.Sessions.MaxTurns, d.Sessions.MaxTurns)

	setSLO(&c.SLO.Interactive, d.SLO.Interactive)
	setSLO(&c.SLO.Batch, d.SLO.Batch)

	setFloat(&c.Balancer.AffinityLoadFactor, d.Balancer.AffinityLoadFactor)

	setInt(&c.Breaker.ConsecutiveFailures, d.Breaker.ConsecutiveFailures)
	setFloat(&c.Breaker.FailureRatio, d.Breaker.FailureRatio)
	setInt(&c.Breaker.MinRequests, d.Breaker.MinRequests)
	setInt(&c.Breaker.WindowMs, d.Breaker.WindowMs)
	setInt(&c.Breaker.OpenMs, d.Breaker.OpenMs)

	setInt(&c.Health.IntervalMs, d.Health.IntervalMs)
	setInt(&c.Health.TimeoutMs, d.Health.TimeoutMs)
	setInt(&c.Health.HealthyAfter, d.Health.HealthyAfter)
	setInt(&c.Health.UnhealthyAfter, d.Health.UnhealthyAfter)

	setStr(&c.Catalog.TrustPolicy, d.Catalog.TrustPolicy)

	dt := defaultTenant()
	for i := range c.Tenants {
		t := &c.Tenants[i]
		setFloat(&t.Weight, dt.Weight)
		t.fillBurst()
	}

	dp := defaultPool()
	for i := range c.Pools {
		p := &c.Pools[i]
		setInt(&p.Ctx, dp.Ctx)
		setInt(&p.Queue.Capacity, dp.Queue.Capacity)
		setStr(&p.Queue.FullPolicy, dp.Queue.FullPolicy)
		setInt(&p.Timeouts.FirstTokenMs, dp.Timeouts.FirstTokenMs)
		setInt(&p.Timeouts.IdleMs, dp.Timeouts.IdleMs)
		setInt(&p.Timeouts.WallMs, dp.Timeouts.WallMs)
		setStr(&p.Failover, dp.Failover)
		setStr(&p.Preemption, dp.Preemption)
	}
}

// fillBurst derives the token bucket size from rps when it is not given, so
// the gateway never sees a bucket that admits nothing.
func (t *Tenant) fillBurst() {
	if t.Burst == 0 && t.RPS > 0 {
		t.Burst = int(math.Max(1, math.Ceil(t.RPS)))
	}
}

// UnmarshalYAML decodes a pool on top of its defaults, so absent keys take
// them while explicit values (even 0) are kept for Validate to judge.
func (p *Pool) UnmarshalYAML(n *yaml.Node) error {
	type plain Pool // no methods: avoids recursing into UnmarshalYAML
	v := plain(defaultPool())
	err := n.Decode(&v)
	*p = Pool(v)
	return err
}

// UnmarshalYAML decodes a tenant on top of its defaults (see Pool.UnmarshalYAML).
func (t *Tenant) UnmarshalYAML(n *yaml.Node) error {
	type plain Tenant
	v := plain(defaultTenant())
	err := n.Decode(&v)
	*t = Tenant(v)
	t.fillBurst()
	return err
}

func setSLO(t *SLOTarget, d SLOTarget) {
	setInt(&t.TTFTP95Ms, d.TTFTP95Ms)
	setInt(&t.E2E64TokensP95Ms, d.E2E64TokensP95Ms)
	setFloat(&t.ErrorRate, d.ErrorRate)
}

func setStr(p *string, d string) {
	if *p == "" {
		*p = d
	}
}

func setInt(p *int, d int) {
	if *p == 0 {
		*p = d
	}
}

func setFloat(p *float64, d float64) {
	if *p == 0 {
		*p = d
	}
}
