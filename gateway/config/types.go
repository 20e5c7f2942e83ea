// Package config holds orchd's configuration (SPEC §13): its types, defaults,
// strict YAML loading, validation that lists every problem, the generated JSON
// Schema, and the embedded demo default.
package config

// Config is the whole orchd configuration. Key names are part of the public
// contract (SPEC §13).
type Config struct {
	Listen          string    `yaml:"listen" json:"listen"`
	ConfigMode      string    `yaml:"config_mode" json:"config_mode"`
	OpenAICompat    bool      `yaml:"openai_compat" json:"openai_compat"`
	ShutdownGraceMs int       `yaml:"shutdown_grace_ms" json:"shutdown_grace_ms"`
	TaskRetentionMs int       `yaml:"task_retention_ms" json:"task_retention_ms"`
	TaskIDTTLMs     int       `yaml:"task_id_ttl_ms" json:"task_id_ttl_ms"`
	DetachGraceMs   int       `yaml:"detach_grace_ms" json:"detach_grace_ms"`
	Metrics         Metrics   `yaml:"metrics" json:"metrics"`
	Log             Log       `yaml:"log" json:"log"`
	Auth            Auth      `yaml:"auth" json:"auth"`
	Tenants         []Tenant  `yaml:"tenants" json:"tenants"`
	Admission       Admission `yaml:"admission" json:"admission"`
	Sessions        Sessions  `yaml:"sessions" json:"sessions"`
	SLO             SLO       `yaml:"slo" json:"slo"`
	Balancer        Balancer  `yaml:"balancer" json:"balancer"`
	Breaker         Breaker   `yaml:"breaker" json:"breaker"`
	Health          Health    `yaml:"health" json:"health"`
	Pools           []Pool    `yaml:"pools" json:"pools"`
}

// Metrics configures GET /metrics.
type Metrics struct {
	RequireKey bool `yaml:"require_key" json:"require_key"`
}

// Log configures logging.
type Log struct {
	Level   string `yaml:"level" json:"level"`
	Prompts bool   `yaml:"prompts" json:"prompts"`
}

// Auth lists the API keys.
type Auth struct {
	Keys []Key `yaml:"keys" json:"keys"`
}

// Key is one API key: the key itself or its SHA-256, a tenant and roles.
type Key struct {
	Key       string   `yaml:"key,omitempty" json:"key,omitempty"`
	KeySHA256 string   `yaml:"key_sha256,omitempty" json:"key_sha256,omitempty"`
	Tenant    string   `yaml:"tenant" json:"tenant"`
	Roles     []string `yaml:"roles" json:"roles"`
}

// Tenant holds one tenant's fair-share weight and quotas.
type Tenant struct {
	ID            string  `yaml:"id" json:"id"`
	Weight        float64 `yaml:"weight" json:"weight"`
	MaxConcurrent int     `yaml:"max_concurrent" json:"max_concurrent"`
	RPS           float64 `yaml:"rps" json:"rps"`
	Burst         int     `yaml:"burst" json:"burst"`
}

// Admission configures scheduling and guardrails.
type Admission struct {
	Weights        Weights `yaml:"weights" json:"weights"`
	MaxTokensLimit int     `yaml:"max_tokens_limit" json:"max_tokens_limit"`
	CharsPerToken  float64 `yaml:"chars_per_token" json:"chars_per_token"`
	Tokenize       string  `yaml:"tokenize,omitempty" json:"tokenize,omitempty"`
}

// Weights are the WFQ weights per priority.
type Weights struct {
	Interactive float64 `yaml:"interactive" json:"interactive"`
	Batch       float64 `yaml:"batch" json:"batch"`
}

// Sessions configures session lifetime and budgets.
type Sessions struct {
	TTLMs       int `yaml:"ttl_ms" json:"ttl_ms"`
	MaxTurns    int `yaml:"max_turns" json:"max_turns"`
	TokenBudget int `yaml:"token_budget" json:"token_budget"`
}

// SLO holds per-priority service-level objectives.
type SLO struct {
	Interactive SLOTarget `yaml:"interactive" json:"interactive"`
	Batch       SLOTarget `yaml:"batch" json:"batch"`
}

// SLOTarget is one priority's objectives (0 = not set).
type SLOTarget struct {
	TTFTP95Ms        int     `yaml:"ttft_p95_ms,omitempty" json:"ttft_p95_ms,omitempty"`
	E2E64TokensP95Ms int     `yaml:"e2e_64_tokens_p95_ms,omitempty" json:"e2e_64_tokens_p95_ms,omitempty"`
	ErrorRate        float64 `yaml:"error_rate" json:"error_rate"`
}

// Balancer configures replica selection.
type Balancer struct {
	AffinityLoadFactor float64 `yaml:"affinity_load_factor" json:"affinity_load_factor"`
}

// Breaker configures the per-replica circuit breakers.
type Breaker struct {
	ConsecutiveFailures int     `yaml:"consecutive_failures" json:"consecutive_failures"`
	FailureRatio        float64 `yaml:"failure_ratio" json:"failure_ratio"`
	MinRequests         int     `yaml:"min_requests" json:"min_requests"`
	WindowMs            int     `yaml:"window_ms" json:"window_ms"`
	OpenMs              int     `yaml:"open_ms" json:"open_ms"`
}

// Health configures active health checks.
type Health struct {
	IntervalMs     int `yaml:"interval_ms" json:"interval_ms"`
	TimeoutMs      int `yaml:"timeout_ms" json:"timeout_ms"`
	HealthyAfter   int `yaml:"healthy_after" json:"healthy_after"`
	UnhealthyAfter int `yaml:"unhealthy_after" json:"unhealthy_after"`
}

// Pool is a set of replicas of one engine serving one model.
type Pool struct {
	ID          string    `yaml:"id" json:"id"`
	Engine      string    `yaml:"engine" json:"engine"`
	Model       string    `yaml:"model" json:"model"`
	EngineModel string    `yaml:"engine_model" json:"engine_model"`
	Ctx         int       `yaml:"ctx" json:"ctx"`
	Queue       Queue     `yaml:"queue" json:"queue"`
	Timeouts    Timeouts  `yaml:"timeouts" json:"timeouts"`
	Failover    string    `yaml:"failover" json:"failover"`
	Preemption  string    `yaml:"preemption" json:"preemption"`
	Replicas    []Replica `yaml:"replicas" json:"replicas"`
}

// Queue bounds a pool's queued tasks.
type Queue struct {
	Capacity    int          `yaml:"capacity" json:"capacity"`
	FullPolicy  string       `yaml:"full_policy" json:"full_policy"`
	PerPriority *PerPriority `yaml:"per_priority,omitempty" json:"per_priority,omitempty"`
}

// PerPriority holds optional per-priority queue caps (0 = only the pool cap).
type PerPriority struct {
	Interactive int `yaml:"interactive" json:"interactive"`
	Batch       int `yaml:"batch" json:"batch"`
}

// Timeouts are the pool's watchdog limits.
type Timeouts struct {
	FirstTokenMs int `yaml:"first_token_ms" json:"first_token_ms"`
	IdleMs       int `yaml:"idle_ms" json:"idle_ms"`
	WallMs       int `yaml:"wall_ms" json:"wall_ms"`
}

// Replica is one engine endpoint.
type Replica struct {
	ID          string    `yaml:"id" json:"id"`
	URL         string    `yaml:"url" json:"url"`
	Slots       int       `yaml:"slots,omitempty" json:"slots,omitempty"`
	Devices     []int     `yaml:"devices,omitempty" json:"devices,omitempty"`
	TensorSplit []float64 `yaml:"tensor_split,omitempty" json:"tensor_split,omitempty"`
}
