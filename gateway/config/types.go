// Package config holds orchd's configuration (SPEC §13): its types, defaults,
// strict YAML loading, validation that lists every problem, the generated JSON
// Schema, and the embedded demo default.
//
// Typical use:
//
//	c, probs, err := config.Check(data, config.ValidateOptions{}) // Parse + ValidateOpts, with lines
//	if err != nil { ... }             // unreadable file or YAML syntax error
//	if config.HasErrors(probs) { ... } // print every problem, refuse the file
//	// warnings (compat mode's unknown keys) are logged and ignored
//
// Parse and Load already apply defaults (a key that is absent or null takes
// its default; a key that is present keeps its value, even 0, so Validate can
// reject it). ApplyDefaults is for configs built in code.
//
// Struct tags: yaml names are the contract (SPEC §13); json tags repeat them
// so the same shape can be served as JSON; jsonschema tags feed Schema.
package config

// Config is the whole orchd configuration. Key names are part of the public
// contract (SPEC §13).
type Config struct {
	Listen          string    `yaml:"listen" json:"listen" jsonschema:"default=127.0.0.1:8090" jsonschema_description:"Address the gateway listens on, as host:port (host may be empty for all interfaces). Default 127.0.0.1:8090; orchd --listen overrides it."`
	ConfigMode      string    `yaml:"config_mode" json:"config_mode" jsonschema:"enum=strict,enum=compat,default=strict" jsonschema_description:"How unknown keys are treated. strict (default): an unknown key anywhere is an error. compat: unknown keys are logged as warnings and ignored."`
	OpenAICompat    bool      `yaml:"openai_compat" json:"openai_compat" jsonschema:"default=false" jsonschema_description:"Enable the OpenAI-compatible front door (POST /v1/completions and /v1/chat/completions, SPEC §3.5). Default false."`
	ShutdownGraceMs int       `yaml:"shutdown_grace_ms" json:"shutdown_grace_ms" jsonschema:"minimum=0,default=10000" jsonschema_description:"On SIGINT/SIGTERM, how long running streams may finish (milliseconds) before the rest end with an error event and their engine requests are canceled. Default 10000; 0 ends them at once."`
	TaskRetentionMs int       `yaml:"task_retention_ms" json:"task_retention_ms" jsonschema:"minimum=0,default=10000" jsonschema_description:"How long a finished task's event log is kept for late readers (milliseconds). Default 10000."`
	TaskIDTTLMs     int       `yaml:"task_id_ttl_ms" json:"task_id_ttl_ms" jsonschema:"exclusiveMinimum=0,default=600000" jsonschema_description:"How long an admitted task_id is remembered so a duplicate gets 409, even after its log is dropped (milliseconds). Default 600000 (10 min)."`
	DetachGraceMs   int       `yaml:"detach_grace_ms" json:"detach_grace_ms" jsonschema:"minimum=0,default=10000" jsonschema_description:"A running task with no reader attached for this long is canceled (reason abandoned) so engines do not generate for nobody; within it a client may reattach with Last-Event-ID (milliseconds). Default 10000."`
	Metrics         Metrics   `yaml:"metrics" json:"metrics" jsonschema_description:"GET /metrics settings. Default {require_key: false}."`
	Log             Log       `yaml:"log" json:"log" jsonschema_description:"Logging settings. Default {level: info, prompts: false}."`
	Auth            Auth      `yaml:"auth" json:"auth" jsonschema_description:"API keys. Default: no keys (every data and control request is refused)."`
	Tenants         []Tenant  `yaml:"tenants" json:"tenants" jsonschema_description:"Per-tenant fair-share weights and quotas. Default empty: a key's tenant with no entry gets weight 1 and no quota."`
	Admission       Admission `yaml:"admission" json:"admission" jsonschema_description:"Scheduling weights and request guardrails. Default {weights: {interactive: 8, batch: 1}, max_tokens_limit: 32768, chars_per_token: 4}."`
	Sessions        Sessions  `yaml:"sessions" json:"sessions" jsonschema_description:"Session lifetime and budgets. Default {ttl_ms: 600000, max_turns: 8, token_budget: 0}."`
	SLO             SLO       `yaml:"slo" json:"slo" jsonschema_description:"Service-level objectives per priority, used for on-time estimates and reported in /v1/replicasets. Default interactive {ttft_p95_ms: 900, e2e_64_tokens_p95_ms: 2500, error_rate: 0.005}, batch {error_rate: 0.01}."`
	Balancer        Balancer  `yaml:"balancer" json:"balancer" jsonschema_description:"Replica selection. Default {affinity_load_factor: 1.25}."`
	Breaker         Breaker   `yaml:"breaker" json:"breaker" jsonschema_description:"Per-replica circuit breakers. Default {consecutive_failures: 5, failure_ratio: 0.5, min_requests: 20, window_ms: 10000, open_ms: 5000}."`
	Health          Health    `yaml:"health" json:"health" jsonschema_description:"Active health checks of every replica. Default {interval_ms: 1000, timeout_ms: 2000, healthy_after: 1, unhealthy_after: 2}."`
	Catalog         Catalog   `yaml:"catalog" json:"catalog" jsonschema_description:"The model catalog (SPEC §9): where it persists and its trust policy. Default {path: \"\", trust_policy: permissive, trusted_keys: []}. Changing it needs a restart."`
	Pools           []Pool    `yaml:"pools" json:"pools" jsonschema:"required,minItems=1" jsonschema_description:"Pools of engine replicas. Required, at least one. A request is routed to the pool whose model (or id) equals its model_ref and whose engine equals its engine."`
}

// Metrics configures GET /metrics.
type Metrics struct {
	RequireKey bool `yaml:"require_key" json:"require_key" jsonschema:"default=false" jsonschema_description:"When true, GET /metrics needs a key with the control role. Default false (open, as Prometheus scrapers expect)."`
}

// Log configures logging.
type Log struct {
	Level   string `yaml:"level" json:"level" jsonschema:"enum=debug,enum=info,enum=warn,enum=error,default=info" jsonschema_description:"Minimum log level: debug, info (default), warn or error."`
	Prompts bool   `yaml:"prompts" json:"prompts" jsonschema:"default=false" jsonschema_description:"Log prompt and output text. Default false: prompts never reach the logs."`
}

// Auth lists the API keys.
type Auth struct {
	Keys []Key `yaml:"keys" json:"keys" jsonschema_description:"API keys, sent as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. Default empty."`
}

// Key is one API key: the key itself or its SHA-256, a tenant and roles.
type Key struct {
	Key       string   `yaml:"key,omitempty" json:"key,omitempty" jsonschema:"oneof_required=key" jsonschema_description:"The key in clear text. Exactly one of key and key_sha256 is required."`
	KeySHA256 string   `yaml:"key_sha256,omitempty" json:"key_sha256,omitempty" jsonschema:"oneof_required=key_sha256,pattern=^[0-9a-fA-F]{64}$" jsonschema_description:"Hex SHA-256 of the key (64 hex digits), so the file need not hold the key itself. Exactly one of key and key_sha256 is required."`
	Tenant    string   `yaml:"tenant" json:"tenant" jsonschema:"required,minLength=1" jsonschema_description:"Tenant the key acts as (tasks, sessions, fairness and quotas are scoped to it). Required."`
	Roles     []string `yaml:"roles" json:"roles" jsonschema:"required,minItems=1,enum=data,enum=control" jsonschema_description:"Roles the key holds: data (the task API) and/or control (control plane, ops, restricted metrics). Required, non-empty."`
}

// Tenant holds one tenant's fair-share weight and quotas.
type Tenant struct {
	ID            string  `yaml:"id" json:"id" jsonschema:"required,minLength=1" jsonschema_description:"Tenant id, as named by auth.keys[].tenant. Required, unique."`
	Weight        float64 `yaml:"weight" json:"weight" jsonschema:"exclusiveMinimum=0,default=1" jsonschema_description:"Fair-share weight among tenants within a priority. Default 1."`
	MaxConcurrent int     `yaml:"max_concurrent" json:"max_concurrent" jsonschema:"minimum=0,default=0" jsonschema_description:"Maximum queued plus running tasks of this tenant. Default 0 = no limit."`
	RPS           float64 `yaml:"rps" json:"rps" jsonschema:"minimum=0,default=0" jsonschema_description:"Sustained task submissions per second (token bucket rate). Default 0 = no limit."`
	Burst         int     `yaml:"burst" json:"burst" jsonschema:"minimum=0,default=0" jsonschema_description:"Token bucket size for rps. Default 0 = rps rounded up (at least 1); ignored when rps is 0."`
}

// Admission configures scheduling and guardrails.
type Admission struct {
	Weights        Weights `yaml:"weights" json:"weights" jsonschema_description:"Weighted fair queuing weights per priority. Default {interactive: 8, batch: 1}."`
	MaxTokensLimit int     `yaml:"max_tokens_limit" json:"max_tokens_limit" jsonschema:"exclusiveMinimum=0,default=32768" jsonschema_description:"Hard cap on estimated prompt tokens plus max_tokens of one task. Default 32768."`
	CharsPerToken  float64 `yaml:"chars_per_token" json:"chars_per_token" jsonschema:"minimum=0,default=4" jsonschema_description:"Prompt-token estimator: prompt characters per token. Default 4. Must be > 0 unless tokenize is engine."`
	Tokenize       string  `yaml:"tokenize,omitempty" json:"tokenize,omitempty" jsonschema:"enum=,enum=engine,default=" jsonschema_description:"How prompt tokens are counted: empty (default) estimates with chars_per_token; engine asks the engine's tokenizer."`
}

// Weights are the WFQ weights per priority.
type Weights struct {
	Interactive float64 `yaml:"interactive" json:"interactive" jsonschema:"exclusiveMinimum=0,default=8" jsonschema_description:"Weight of the interactive priority. Default 8."`
	Batch       float64 `yaml:"batch" json:"batch" jsonschema:"exclusiveMinimum=0,default=1" jsonschema_description:"Weight of the batch priority. Default 1."`
}

// Sessions configures session lifetime and budgets.
type Sessions struct {
	TTLMs       int `yaml:"ttl_ms" json:"ttl_ms" jsonschema:"exclusiveMinimum=0,default=600000" jsonschema_description:"A session expires this long after its last task (milliseconds). Default 600000 (10 min)."`
	MaxTurns    int `yaml:"max_turns" json:"max_turns" jsonschema:"exclusiveMinimum=0,default=8" jsonschema_description:"A session expires after this many tasks. Default 8."`
	TokenBudget int `yaml:"token_budget" json:"token_budget" jsonschema:"minimum=0,default=0" jsonschema_description:"Generated tokens a session may use over its life: max_tokens is reserved at admission, the unused part refunded when the task ends (tokens streamed before a cancel or failure stay charged). Default 0 = no budget."`
}

// SLO holds per-priority service-level objectives.
type SLO struct {
	Interactive SLOTarget `yaml:"interactive" json:"interactive" jsonschema_description:"Objectives of interactive tasks. Default {ttft_p95_ms: 900, e2e_64_tokens_p95_ms: 2500, error_rate: 0.005}."`
	Batch       SLOTarget `yaml:"batch" json:"batch" jsonschema_description:"Objectives of batch tasks. Default {ttft_p95_ms: 0, e2e_64_tokens_p95_ms: 0, error_rate: 0.01}."`
}

// SLOTarget is one priority's objectives (0 = not set).
type SLOTarget struct {
	TTFTP95Ms        int     `yaml:"ttft_p95_ms" json:"ttft_p95_ms" jsonschema:"minimum=0" jsonschema_description:"95th percentile time to first token objective (milliseconds). Default 900 for interactive, 0 (not set) for batch."`
	E2E64TokensP95Ms int     `yaml:"e2e_64_tokens_p95_ms" json:"e2e_64_tokens_p95_ms" jsonschema:"minimum=0" jsonschema_description:"95th percentile end-to-end latency objective of a 64-token task (milliseconds). Default 2500 for interactive, 0 (not set) for batch."`
	ErrorRate        float64 `yaml:"error_rate" json:"error_rate" jsonschema:"minimum=0,maximum=1" jsonschema_description:"Tolerated fraction of failed tasks, in [0,1]. Default 0.005 for interactive, 0.01 for batch."`
}

// Balancer configures replica selection.
type Balancer struct {
	AffinityLoadFactor float64 `yaml:"affinity_load_factor" json:"affinity_load_factor" jsonschema:"minimum=1,default=1.25" jsonschema_description:"Bounded-load consistent hashing: a replica takes a session only while its load is at most this factor times the pool's average. At least 1. Default 1.25."`
}

// Breaker configures the per-replica circuit breakers.
type Breaker struct {
	ConsecutiveFailures int     `yaml:"consecutive_failures" json:"consecutive_failures" jsonschema:"minimum=1,default=5" jsonschema_description:"Trip after this many consecutive failures. Default 5."`
	FailureRatio        float64 `yaml:"failure_ratio" json:"failure_ratio" jsonschema:"exclusiveMinimum=0,maximum=1,default=0.5" jsonschema_description:"Trip when at least this fraction of requests in a window failed (and min_requests were seen), in (0,1]. Default 0.5."`
	MinRequests         int     `yaml:"min_requests" json:"min_requests" jsonschema:"minimum=1,default=20" jsonschema_description:"Requests a window needs before failure_ratio applies. Default 20."`
	WindowMs            int     `yaml:"window_ms" json:"window_ms" jsonschema:"exclusiveMinimum=0,default=10000" jsonschema_description:"Length of the closed-state counting window (milliseconds). Default 10000."`
	OpenMs              int     `yaml:"open_ms" json:"open_ms" jsonschema:"exclusiveMinimum=0,default=5000" jsonschema_description:"How long a tripped breaker stays open before going half-open, when the next health probe or request is its trial (milliseconds). Default 5000."`
}

// Health configures active health checks.
type Health struct {
	IntervalMs     int `yaml:"interval_ms" json:"interval_ms" jsonschema:"exclusiveMinimum=0,default=1000" jsonschema_description:"Time between health probes of a replica (milliseconds). Default 1000."`
	TimeoutMs      int `yaml:"timeout_ms" json:"timeout_ms" jsonschema:"exclusiveMinimum=0,default=2000" jsonschema_description:"A probe not answered within this is a failure (milliseconds). Default 2000."`
	HealthyAfter   int `yaml:"healthy_after" json:"healthy_after" jsonschema:"minimum=1,default=1" jsonschema_description:"Consecutive successful probes that make a replica Ready. Default 1."`
	UnhealthyAfter int `yaml:"unhealthy_after" json:"unhealthy_after" jsonschema:"minimum=1,default=2" jsonschema_description:"Consecutive failed probes that make a replica unready. Default 2."`
}

// Catalog configures the model catalog (SPEC §9).
type Catalog struct {
	Path        string   `yaml:"path" json:"path" jsonschema:"default=" jsonschema_description:"JSON file the catalog persists to (registrations, verifications, lifecycle states), written atomically on every change and read at start. Default empty: kept in memory only, lost on restart."`
	TrustPolicy string   `yaml:"trust_policy" json:"trust_policy" jsonschema:"enum=strict,enum=permissive,default=permissive" jsonschema_description:"strict: an artifact must carry a sha256 digest signed by one of trusted_keys to be registered, and must pass verification before it turns Active or Canary (UNTRUSTED_ARTIFACT otherwise). permissive (default): unsigned artifacts are accepted; verification is recorded but not required."`
	TrustedKeys []string `yaml:"trusted_keys" json:"trusted_keys" jsonschema_description:"Ed25519 public keys (standard base64 of the 32 raw bytes) whose signatures over an artifact's digest string are trusted. Default empty."`
}

// Pool is a set of replicas of one engine serving one model.
type Pool struct {
	ID          string    `yaml:"id" json:"id" jsonschema:"required,pattern=^[A-Za-z0-9._-]+$" jsonschema_description:"Pool id (letters, digits, '.', '_', '-'), used in URLs, metrics and as an alternative model_ref. Required, unique."`
	Engine      string    `yaml:"engine" json:"engine" jsonschema:"required,enum=llamacpp,enum=vllm,enum=tgi,enum=triton" jsonschema_description:"Engine of every replica: llamacpp, vllm, tgi or triton. Required."`
	Model       string    `yaml:"model" json:"model" jsonschema:"required,minLength=1" jsonschema_description:"Model name requests give in model_ref. Required; no two pools may share model and engine."`
	EngineModel string    `yaml:"engine_model" json:"engine_model" jsonschema:"default=" jsonschema_description:"Model name the engine reports; when set, checked against every replica at start. Default empty (not checked)."`
	Ctx         int       `yaml:"ctx" json:"ctx" jsonschema:"exclusiveMinimum=0,default=4096" jsonschema_description:"Context limit of the model in tokens; the engine's smaller per-slot context wins. Default 4096."`
	Queue       Queue     `yaml:"queue" json:"queue" jsonschema_description:"The pool's admission queue. Default {capacity: 64, full_policy: reject}."`
	Timeouts    Timeouts  `yaml:"timeouts" json:"timeouts" jsonschema_description:"Watchdog limits. Default {first_token_ms: 30000, idle_ms: 5000, wall_ms: 60000}."`
	Failover    string    `yaml:"failover" json:"failover" jsonschema:"enum=error,enum=resume,default=error" jsonschema_description:"What a failure after the first token does: error (default) ends the task with WORKER_RESET; resume continues a best_effort task on another replica from the text already emitted."`
	Preemption  string    `yaml:"preemption" json:"preemption" jsonschema:"enum=soft,enum=hard,default=soft" jsonschema_description:"soft (default): urgent work only evicts waiting lower-priority tasks; hard: it may also abort a running lower-priority decode and resume it later."`
	Replicas    []Replica `yaml:"replicas" json:"replicas" jsonschema:"required,minItems=1" jsonschema_description:"Engine replicas of this pool. Required, at least one."`
}

// Queue bounds a pool's queued tasks.
type Queue struct {
	Capacity    int          `yaml:"capacity" json:"capacity" jsonschema:"exclusiveMinimum=0,default=64" jsonschema_description:"Maximum queued tasks of the pool across priorities (running tasks do not count). Default 64."`
	FullPolicy  string       `yaml:"full_policy" json:"full_policy" jsonschema:"enum=reject,enum=drop-lru,enum=shed-low-priority,default=reject" jsonschema_description:"What a full queue does with a newcomer: reject (default) answers 429; drop-lru drops the oldest queued task of equal or lower priority; shed-low-priority sheds the newest queued task of strictly lower priority."`
	PerPriority *PerPriority `yaml:"per_priority,omitempty" json:"per_priority,omitempty" jsonschema_description:"Optional per-priority caps within capacity. Default absent (only capacity applies)."`
}

// PerPriority holds optional per-priority queue caps (0 = only the pool cap).
type PerPriority struct {
	Interactive int `yaml:"interactive" json:"interactive" jsonschema:"minimum=0,default=0" jsonschema_description:"Maximum queued interactive tasks, at most capacity. Default 0 = only capacity applies."`
	Batch       int `yaml:"batch" json:"batch" jsonschema:"minimum=0,default=0" jsonschema_description:"Maximum queued batch tasks, at most capacity. Default 0 = only capacity applies."`
}

// Timeouts are the pool's watchdog limits.
type Timeouts struct {
	FirstTokenMs int `yaml:"first_token_ms" json:"first_token_ms" jsonschema:"exclusiveMinimum=0,default=30000" jsonschema_description:"Longest wait for the first token after dispatch (milliseconds); a miss is a failure before the first token and is retried elsewhere while the deadline allows. Default 30000."`
	IdleMs       int `yaml:"idle_ms" json:"idle_ms" jsonschema:"exclusiveMinimum=0,default=5000" jsonschema_description:"Longest gap between tokens after the first (milliseconds); a miss ends the task with DECODE_TIMEOUT. Default 5000."`
	WallMs       int `yaml:"wall_ms" json:"wall_ms" jsonschema:"exclusiveMinimum=0,default=60000" jsonschema_description:"Longest whole task from dispatch (milliseconds); a miss ends it with DECODE_TIMEOUT. Default 60000."`
}

// Replica is one engine endpoint.
type Replica struct {
	ID          string    `yaml:"id" json:"id" jsonschema:"required,pattern=^[A-Za-z0-9._-]+$" jsonschema_description:"Replica id (letters, digits, '.', '_', '-'), unique within the pool. Required."`
	URL         string    `yaml:"url" json:"url" jsonschema:"required,format=uri" jsonschema_description:"Base URL of the engine: absolute http or https with host and port, e.g. http://127.0.0.1:18081. Required."`
	Slots       int       `yaml:"slots,omitempty" json:"slots,omitempty" jsonschema:"minimum=0,default=0" jsonschema_description:"Concurrent tasks the replica runs. Default 0 = read from the engine where it reports them (llama.cpp /props)."`
	Devices     []int     `yaml:"devices,omitempty" json:"devices,omitempty" jsonschema:"minimum=0" jsonschema_description:"GPU device ids the replica uses (its device mask), reported per replica; a device of one host may not serve two pools. Default empty (not declared)."`
	TensorSplit []float64 `yaml:"tensor_split,omitempty" json:"tensor_split,omitempty" jsonschema:"exclusiveMinimum=0,maximum=1" jsonschema_description:"Share of the model on each device, one entry per device, summing to 1; required when the replica spans several devices. Default empty."`
	VRAMBytes   []int64   `yaml:"vram_bytes,omitempty" json:"vram_bytes,omitempty" jsonschema:"minimum=1" jsonschema_description:"Memory of each device in bytes, one entry per device (reported per replica; bounds kv_bytes_per_gpu). Default empty (not declared)."`
	KVBytesGPU  int64     `yaml:"kv_bytes_per_gpu,omitempty" json:"kv_bytes_per_gpu,omitempty" jsonschema:"minimum=0" jsonschema_description:"KV-cache budget per GPU in bytes; with a heterogeneous tensor_split it must fit the smallest GPU of vram_bytes. Default 0 = not declared."`
}
