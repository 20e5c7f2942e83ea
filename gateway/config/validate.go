package config

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// ValidateOptions relaxes Validate for special callers.
type ValidateOptions struct {
	// AllowFakeURLs accepts replica URLs `fake://NAME`: placeholders of the
	// embedded demo that orchd replaces with in-process fake engines.
	AllowFakeURLs bool
}

// Validate returns every semantic problem of c (SPEC §13, §4, §5, §7), each
// with its path. It does not apply defaults: run it on what Parse returned,
// or after ApplyDefaults for a config built in code.
func Validate(c *Config) []Problem {
	return ValidateOpts(c, ValidateOptions{})
}

// ValidateOpts is Validate with options.
func ValidateOpts(c *Config, o ValidateOptions) []Problem {
	v := validator{o: o}
	v.config(c)
	return v.problems
}

type validator struct {
	o        ValidateOptions
	problems []Problem
}

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func (v *validator) config(c *Config) {
	v.listen("listen", c.Listen)
	v.oneOf("config_mode", c.ConfigMode, ModeStrict, ModeCompat)
	v.nonNegative("shutdown_grace_ms", c.ShutdownGraceMs)
	v.nonNegative("task_retention_ms", c.TaskRetentionMs)
	v.positive("task_id_ttl_ms", c.TaskIDTTLMs)
	v.nonNegative("detach_grace_ms", c.DetachGraceMs)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.keys(c.Auth.Keys)
	v.tenants(c.Tenants)
	v.admission(&c.Admission)

	v.positive("sessions.ttl_ms", c.Sessions.TTLMs)
	v.positive("sessions.max_turns", c.Sessions.MaxTurns)
	v.nonNegative("sessions.token_budget", c.Sessions.TokenBudget)

	v.slo("slo.interactive", c.SLO.Interactive)
	v.slo("slo.batch", c.SLO.Batch)

	if f := c.Balancer.AffinityLoadFactor; !(f >= 1) || math.IsInf(f, 0) {
		v.add("balancer.affinity_load_factor", "must be at least 1, got %v", f)
	}

	b := &c.Breaker
	v.positive("breaker.consecutive_failures", b.ConsecutiveFailures)
	if !(b.FailureRatio > 0 && b.FailureRatio <= 1) {
		v.add("breaker.failure_ratio", "must be in (0,1], got %v", b.FailureRatio)
	}
	v.positive("breaker.min_requests", b.MinRequests)
	v.positive("breaker.window_ms", b.WindowMs)
	v.positive("breaker.open_ms", b.OpenMs)

	h := &c.Health
	v.positive("health.interval_ms", h.IntervalMs)
	v.positive("health.timeout_ms", h.TimeoutMs)
	v.positive("health.healthy_after", h.HealthyAfter)
	v.positive("health.unhealthy_after", h.UnhealthyAfter)

	v.oneOf("catalog.trust_policy", c.Catalog.TrustPolicy, TrustStrict, TrustPermissive)
	for i, k := range c.Catalog.TrustedKeys {
		if raw, err := base64.StdEncoding.Strict().DecodeString(k); err != nil || len(raw) != ed25519.PublicKeySize {
			v.add(fmt.Sprintf("catalog.trusted_keys[%d]", i), "must be the standard base64 of a %d-byte ed25519 public key", ed25519.PublicKeySize)
		}
	}
	if c.Catalog.TrustPolicy == TrustStrict && len(c.Catalog.TrustedKeys) == 0 {
		v.add("catalog.trusted_keys", "trust_policy strict needs at least one trusted key (nothing could be registered)")
	}

	v.pools(c.Pools)
}

func (v *validator) listen(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "must be host:port, got %q", addr)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.add(path, "port must be a number from 0 to 65535, got %q", port)
	}
	if strings.ContainsAny(host, " /") {
		v.add(path, "invalid host %q", host)
	}
}

func (v *validator) keys(keys []Key) {
	seen := map[[sha256.Size]byte]int{}
	for i := range keys {
		k := &keys[i]
		p := fmt.Sprintf("auth.keys[%d]", i)
		var sum [sha256.Size]byte
		ok := false
		switch {
		case k.Key != "" && k.KeySHA256 != "":
			v.add(p, "give key or key_sha256, not both")
		case k.Key != "":
			sum, ok = sha256.Sum256([]byte(k.Key)), true
		case k.KeySHA256 != "":
			b, err := hex.DecodeString(k.KeySHA256)
			if err != nil || len(b) != sha256.Size {
				v.add(p+".key_sha256", "must be 64 hex digits (the SHA-256 of the key)")
			} else {
				copy(sum[:], b)
				ok = true
			}
		default:
			v.add(p, "needs key or key_sha256")
		}
		if ok {
			// The message never shows the key (SPEC §7).
			if j, dup := seen[sum]; dup {
				v.add(p, "same key as auth.keys[%d]", j)
			} else {
				seen[sum] = i
			}
		}
		if k.Tenant == "" {
			v.add(p+".tenant", "is required")
		}
		if len(k.Roles) == 0 {
			v.add(p+".roles", "needs at least one of data, control")
		}
		for j, r := range k.Roles {
			if r != RoleData && r != RoleControl {
				v.add(fmt.Sprintf("%s.roles[%d]", p, j), "must be data or control, got %q", r)
			}
		}
	}
}

func (v *validator) tenants(ts []Tenant) {
	seen := map[string]int{}
	for i := range ts {
		t := &ts[i]
		p := fmt.Sprintf("tenants[%d]", i)
		if t.ID == "" {
			v.add(p+".id", "is required")
		} else if j, dup := seen[t.ID]; dup {
			v.add(p+".id", "duplicate tenant %q (also tenants[%d])", t.ID, j)
		} else {
			seen[t.ID] = i
		}
		v.positiveF(p+".weight", t.Weight)
		v.nonNegative(p+".max_concurrent", t.MaxConcurrent)
		v.nonNegativeF(p+".rps", t.RPS)
		v.nonNegative(p+".burst", t.Burst)
	}
}

func (v *validator) admission(a *Admission) {
	v.positiveF("admission.weights.interactive", a.Weights.Interactive)
	v.positiveF("admission.weights.batch", a.Weights.Batch)
	v.positive("admission.max_tokens_limit", a.MaxTokensLimit)
	switch a.Tokenize {
	case "":
		v.positiveF("admission.chars_per_token", a.CharsPerToken)
	case TokenizeEngine:
		v.nonNegativeF("admission.chars_per_token", a.CharsPerToken)
	default:
		v.add("admission.tokenize", "must be empty or engine, got %q", a.Tokenize)
	}
}

func (v *validator) slo(p string, t SLOTarget) {
	v.nonNegative(p+".ttft_p95_ms", t.TTFTP95Ms)
	v.nonNegative(p+".e2e_64_tokens_p95_ms", t.E2E64TokensP95Ms)
	if !(t.ErrorRate >= 0 && t.ErrorRate <= 1) {
		v.add(p+".error_rate", "must be in [0,1], got %v", t.ErrorRate)
	}
}

// deviceUse is where a GPU device is first claimed.
type deviceUse struct {
	pool int
	path string
}

func (v *validator) pools(pools []Pool) {
	if len(pools) == 0 {
		v.add("pools", "at least one pool is required")
		return
	}
	ids := map[string]int{}
	type route struct{ name, engine string }
	models := map[route]int{}
	// Devices are per host: the gateway reaches engines by URL, so a device id
	// names one GPU of the replica's host.
	devices := map[string]deviceUse{}
	for i := range pools {
		pl := &pools[i]
		p := fmt.Sprintf("pools[%d]", i)
		switch {
		case pl.ID == "":
			v.add(p+".id", "is required")
		case !idRe.MatchString(pl.ID):
			v.add(p+".id", "may hold only letters, digits, '.', '_' and '-', got %q", pl.ID)
		default:
			if j, dup := ids[pl.ID]; dup {
				v.add(p+".id", "duplicate pool id %q (also pools[%d])", pl.ID, j)
			} else {
				ids[pl.ID] = i
			}
		}
		v.oneOf(p+".engine", pl.Engine, EngineLlamaCpp, EngineVLLM, EngineTGI, EngineTriton)
		if pl.Model == "" {
			v.add(p+".model", "is required")
		} else if j, dup := models[route{pl.Model, pl.Engine}]; dup {
			v.add(p+".model", "pools[%d] already serves model %q on engine %s", j, pl.Model, pl.Engine)
		} else {
			models[route{pl.Model, pl.Engine}] = i
		}
		v.positive(p+".ctx", pl.Ctx)

		q := &pl.Queue
		v.positive(p+".queue.capacity", q.Capacity)
		v.oneOf(p+".queue.full_policy", q.FullPolicy, FullPolicyReject, FullPolicyDropLRU, FullPolicyShedLowPriority)
		if pp := q.PerPriority; pp != nil {
			v.cap(p+".queue.per_priority.interactive", pp.Interactive, q.Capacity)
			v.cap(p+".queue.per_priority.batch", pp.Batch, q.Capacity)
		}

		v.positive(p+".timeouts.first_token_ms", pl.Timeouts.FirstTokenMs)
		v.positive(p+".timeouts.idle_ms", pl.Timeouts.IdleMs)
		v.positive(p+".timeouts.wall_ms", pl.Timeouts.WallMs)
		v.oneOf(p+".failover", pl.Failover, FailoverError, FailoverResume)
		v.oneOf(p+".preemption", pl.Preemption, PreemptionSoft, PreemptionHard)

		if len(pl.Replicas) == 0 {
			v.add(p+".replicas", "at least one replica is required")
		}
		rids := map[string]int{}
		for j := range pl.Replicas {
			r := &pl.Replicas[j]
			rp := fmt.Sprintf("%s.replicas[%d]", p, j)
			switch {
			case r.ID == "":
				v.add(rp+".id", "is required")
			case !idRe.MatchString(r.ID):
				v.add(rp+".id", "may hold only letters, digits, '.', '_' and '-', got %q", r.ID)
			default:
				if k, dup := rids[r.ID]; dup {
					v.add(rp+".id", "duplicate replica id %q (also %s.replicas[%d])", r.ID, p, k)
				} else {
					rids[r.ID] = j
				}
			}
			host := v.url(rp+".url", r.URL)
			v.nonNegative(rp+".slots", r.Slots)
			v.devices(rp, r, i, host, devices)
		}
	}
	// model_ref may name a pool's model or its id: a pool id that is another
	// pool's model on the same engine would make routing ambiguous.
	for i := range pools {
		pl := &pools[i]
		if j, ok := models[route{pl.ID, pl.Engine}]; ok && j != i && pl.ID != "" {
			v.add(fmt.Sprintf("pools[%d].id", i), "%q is also the model of pools[%d] on engine %s: model_ref would be ambiguous", pl.ID, j, pl.Engine)
		}
	}
}

// url checks a replica URL and returns its host ("" when invalid).
func (v *validator) url(path, raw string) string {
	if raw == "" {
		v.add(path, "is required")
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		v.add(path, "must be an absolute http or https URL, got %q", raw)
		return ""
	}
	if u.Scheme == "fake" && v.o.AllowFakeURLs {
		if u.Host == "" {
			v.add(path, "must be fake://NAME, got %q", raw)
			return ""
		}
		return u.Host
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		v.add(path, "must be an absolute http or https URL, got %q", raw)
		return ""
	}
	if u.Hostname() == "" || u.Port() == "" {
		v.add(path, "must name a host and a port, e.g. http://127.0.0.1:8080, got %q", raw)
		return ""
	}
	if n, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || n == 0 {
		v.add(path, "invalid port in %q", raw)
		return ""
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		v.add(path, "must not carry user info, a query or a fragment, got %q", raw)
		return ""
	}
	return u.Hostname()
}

// devices checks a replica's device mask and tensor split (SPEC §5): no
// device of a host in two pools, a split given whenever several devices are,
// one share per device, summing to 1.
func (v *validator) devices(rp string, r *Replica, pool int, host string, used map[string]deviceUse) {
	mine := map[int]bool{}
	for k, d := range r.Devices {
		dp := fmt.Sprintf("%s.devices[%d]", rp, k)
		if d < 0 {
			v.add(dp, "must be >= 0, got %d", d)
			continue
		}
		if mine[d] {
			v.add(dp, "device %d listed twice", d)
			continue
		}
		mine[d] = true
		if host == "" {
			continue
		}
		key := host + "#" + strconv.Itoa(d)
		if u, ok := used[key]; ok && u.pool != pool {
			v.add(dp, "device %d of host %s is already used by %s: device masks of pools must not overlap", d, host, u.path)
		} else if !ok {
			used[key] = deviceUse{pool: pool, path: rp}
		}
	}
	n, s := len(r.Devices), len(r.TensorSplit)
	switch {
	case s == 0 && n > 1:
		v.add(rp+".tensor_split", "is required when a replica spans %d devices (the split must be explicit)", n)
	case s > 0 && s != n:
		v.add(rp+".tensor_split", "has %d entries for %d devices: give one per device", s, n)
	case s > 0:
		sum := 0.0
		bad := false
		for k, f := range r.TensorSplit {
			if !(f > 0 && f <= 1) {
				v.add(fmt.Sprintf("%s.tensor_split[%d]", rp, k), "must be in (0,1], got %v", f)
				bad = true
			}
			sum += f
		}
		if !bad && math.Abs(sum-1) > 1e-6 {
			v.add(rp+".tensor_split", "must sum to 1, sums to %v", sum)
		}
	}
	// Per-GPU KV budget: every device holds its own KV share, so the budget
	// must fit the smallest GPU (SPEC §5, OC-POOL-3021).
	if m := len(r.VRAMBytes); m > 0 {
		if m != n {
			v.add(rp+".vram_bytes", "has %d entries for %d devices: give one per device", m, n)
		}
		smallest := int64(math.MaxInt64)
		for k, b := range r.VRAMBytes {
			if b <= 0 {
				v.add(fmt.Sprintf("%s.vram_bytes[%d]", rp, k), "must be > 0, got %d", b)
			}
			smallest = min(smallest, b)
		}
		if r.KVBytesGPU > 0 && smallest > 0 && r.KVBytesGPU > smallest {
			v.add(rp+".kv_bytes_per_gpu", "is %d bytes, above the smallest GPU's %d bytes of vram_bytes", r.KVBytesGPU, smallest)
		}
	} else if r.KVBytesGPU > 0 && n > 1 {
		v.add(rp+".kv_bytes_per_gpu", "needs vram_bytes (one per device) to be checked against the smallest GPU")
	}
	if r.KVBytesGPU < 0 {
		v.add(rp+".kv_bytes_per_gpu", "must be >= 0")
	}
}

func (v *validator) cap(path string, n, capacity int) {
	switch {
	case n < 0:
		v.add(path, "must be >= 0, got %d", n)
	case n > capacity:
		v.add(path, "must be at most queue.capacity (%d), got %d", capacity, n)
	}
}

func (v *validator) oneOf(path, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.add(path, "must be one of %s, got %q", strings.Join(allowed, ", "), val)
}

func (v *validator) positive(path string, n int) {
	if n <= 0 {
		v.add(path, "must be > 0, got %d", n)
	}
}

func (v *validator) nonNegative(path string, n int) {
	if n < 0 {
		v.add(path, "must be >= 0, got %d", n)
	}
}

func (v *validator) positiveF(path string, f float64) {
	if !(f > 0) || math.IsInf(f, 0) {
		v.add(path, "must be > 0, got %v", f)
	}
}

func (v *validator) nonNegativeF(path string, f float64) {
	if !(f >= 0) || math.IsInf(f, 0) {
		v.add(path, "must be >= 0, got %v", f)
	}
}
