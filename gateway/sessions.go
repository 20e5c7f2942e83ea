package gateway

import (
	"strconv"
	"sync"
	"time"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// session is a tenant's conversation: its turns, budget and the replica that
// holds its KV cache (SPEC §3.4).
type session struct {
	turns       int
	lastUsed    time.Time
	lastPool    *pool
	lastReplica *balancer.Replica
	slot        int
	kvTokens    int
	tokensUsed  int    // session budget: reserved at admission, settled at end
	model       string // the model its first turn asked for (lifecycle: an existing session of a deprecated model continues)
}

// sessionStore keeps sessions per tenant. Sessions expire TTL after their last
// turn or once max_turns are used (ORCH-3021).
type sessionStore struct {
	mu       sync.Mutex
	m        map[taskKey]*session
	ttl      time.Duration
	maxTurns int
	budget   int
	now      func() time.Time
}

func newSessionStore(c config.Sessions) *sessionStore {
	return &sessionStore{
		m:        make(map[taskKey]*session),
		ttl:      time.Duration(c.TTLMs) * time.Millisecond,
		maxTurns: c.MaxTurns,
		budget:   c.TokenBudget,
		now:      time.Now,
	}
}

func (st *sessionStore) expired(s *session, now time.Time) bool {
	return now.Sub(s.lastUsed) > st.ttl || s.turns >= st.maxTurns
}

// reserve starts a turn for t: an expired session starts afresh, the session
// budget (when configured) must cover max_tokens. The task keeps a pointer to
// the session it reserved in, so a late finish of an old turn never touches a
// session started afresh since. It returns an undo for a later admission
// rejection, or the rejection itself.
func (st *sessionStore) reserve(t *task, maxTokens int) (undo func(), _ *APIError) {
	k := taskKey{t.key.tenant, t.sessionID}
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	s, ok := st.m[k]
	fresh := !ok || st.expired(s, now)
	if fresh {
		s = &session{slot: -1, model: t.pool.model()}
	}
	reserved := 0
	if st.budget > 0 {
		remaining := st.budget - s.tokensUsed
		if maxTokens > remaining {
			return nil, &APIError{Code: CodeAdmissionReject, PolicyLabel: "session-budget", Engine: t.pool.engine, PoolID: t.pool.id,
				Message: "session token budget exhausted: " + strconv.Itoa(remaining) + " tokens remain, max_tokens asks " + strconv.Itoa(maxTokens),
				status:  429, RetryAfterMs: int64(st.ttl / time.Millisecond)}
		}
		reserved = maxTokens
	}
	s.tokensUsed += reserved
	s.turns++
	prevUsed := s.lastUsed
	s.lastUsed = now
	if fresh {
		st.m[k] = s
	}
	t.session, t.reserved = s, reserved
	return func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		// Deltas, not a snapshot: other turns may have been reserved since.
		s.turns--
		s.tokensUsed -= reserved
		if s.lastUsed == now {
			s.lastUsed = prevUsed
		}
		if fresh && s.turns == 0 && st.m[k] == s {
			delete(st.m, k)
		}
		t.session, t.reserved = nil, 0
	}, nil
}

// servedModel reports whether tenant's session id is live and was opened on
// model (an earlier turn asked for it).
func (st *sessionStore) servedModel(tenant, id, model string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[taskKey{tenant, id}]
	return ok && !st.expired(s, st.now()) && s.model == model
}

// lastReplica returns the replica holding the session's KV in p, if any.
func (st *sessionStore) lastReplica(tenant, id string, p *pool) *balancer.Replica {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[taskKey{tenant, id}]
	if !ok || s.lastPool != p {
		return nil
	}
	return s.lastReplica
}

// finishTurn settles a turn: refunds the unused budget and, while the
// session is still the live one, records the replica that served it (nil when
// it failed). It returns the remaining budget when one is configured. It is
// idempotent.
func (st *sessionStore) finishTurn(t *task, res engines.Result, r *balancer.Replica) *int {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := t.session
	if s == nil {
		return nil
	}
	if t.reserved > 0 {
		s.tokensUsed -= t.reserved - min(max(res.TokensOut, 0), t.reserved)
		t.reserved = 0
	}
	if r != nil && st.m[taskKey{t.key.tenant, t.sessionID}] == s {
		s.lastPool, s.lastReplica, s.slot = t.pool, r, res.Slot
		s.kvTokens = res.TokensIn + res.TokensOut
	}
	if st.budget <= 0 {
		return nil
	}
	rem := max(st.budget-s.tokensUsed, 0)
	return &rem
}

// remaining is the session budget left for t's session (nil: no budget).
func (st *sessionStore) remaining(t *task) *int {
	if st.budget <= 0 || t.session == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	rem := max(st.budget-t.session.tokensUsed, 0)
	return &rem
}

// sessionView is GET /v1/sessions/{id} (SPEC §3.4).
type sessionView struct {
	TTLMsRemaining        int64 `json:"ttl_ms_remaining"`
	Turns                 int   `json:"turns"`
	KVBytes               int64 `json:"kv_bytes"`
	KVTokens              int   `json:"kv_tokens"`
	KVWarmth              bool  `json:"kv_warmth"`
	TokensBudgetRemaining *int  `json:"tokens_budget_remaining,omitempty"`
}

func (st *sessionStore) view(tenant, id string) (sessionView, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	s, ok := st.m[taskKey{tenant, id}]
	if !ok || st.expired(s, now) {
		return sessionView{}, false
	}
	v := sessionView{
		TTLMsRemaining: (st.ttl - now.Sub(s.lastUsed)).Milliseconds(),
		Turns:          s.turns,
		KVTokens:       s.kvTokens,
		KVWarmth:       s.lastReplica != nil && s.lastReplica.Ready(),
	}
	if st.budget > 0 {
		rem := max(st.budget-s.tokensUsed, 0)
		v.TokensBudgetRemaining = &rem
	}
	return v, true
}

// remove forgets a session; it returns what is needed to evict its KV.
func (st *sessionStore) remove(tenant, id string) (p *pool, r *balancer.Replica, slot int, ok bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	k := taskKey{tenant, id}
	s, ok := st.m[k]
	if !ok || st.expired(s, st.now()) {
		delete(st.m, k)
		return nil, nil, -1, false
	}
	delete(st.m, k)
	return s.lastPool, s.lastReplica, s.slot, true
}

// sweep drops expired sessions.
func (st *sessionStore) sweep() {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	for k, s := range st.m {
		if now.Sub(s.lastUsed) > st.ttl {
			delete(st.m, k)
		}
	}
}
