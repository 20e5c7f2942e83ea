package gateway

import (
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/llama-orch/llama-orch/gateway/config"
)

// tenantState is one tenant's quota state (SPEC §4.3, ORCH-3006): a token
// bucket for submissions per second and a count of its queued + running tasks.
type tenantState struct {
	weight        float64
	maxConcurrent int
	limiter       *rate.Limiter // nil = no rate limit
	active        int           // queued + running, guarded by quotas.mu
}

// quotas enforces per-tenant limits before enqueue. A tenant without a
// config entry gets weight 1 and no quota.
type quotas struct {
	mu      sync.Mutex
	tenants map[string]*tenantState
	now     func() time.Time
}

func newQuotas(ts []config.Tenant) *quotas {
	q := &quotas{tenants: make(map[string]*tenantState), now: time.Now}
	for _, t := range ts {
		st := &tenantState{weight: t.Weight, maxConcurrent: t.MaxConcurrent}
		if st.weight <= 0 {
			st.weight = 1
		}
		if t.RPS > 0 {
			st.limiter = rate.NewLimiter(rate.Limit(t.RPS), max(t.Burst, 1))
		}
		q.tenants[t.ID] = st
	}
	return q
}

// state returns the tenant's state, creating the unlimited default.
func (q *quotas) state(tenant string) *tenantState {
	st, ok := q.tenants[tenant]
	if !ok {
		st = &tenantState{weight: 1}
		q.tenants[tenant] = st
	}
	return st
}

// weight is the tenant's fair-share weight.
func (q *quotas) weight(tenant string) float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.state(tenant).weight
}

// acquire checks the tenant's quotas and takes one concurrency place, or
// returns the 429 that explains which limit refused. The rate token is only
// looked at here: commit spends it once the task is admitted, so a request
// refused by a later check changes nothing (undo gives the place back). The
// place itself is given back by release when the task ends.
func (q *quotas) acquire(tenant string) (commit, undo func(), _ *APIError) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.state(tenant)
	if st.maxConcurrent > 0 && st.active >= st.maxConcurrent {
		return nil, nil, &APIError{Code: CodeAdmissionReject, PolicyLabel: "tenant-quota", RetryAfterMs: 1000,
			Message: "tenant " + tenant + " has " + strconv.Itoa(st.active) + " tasks queued or running, its max_concurrent is " + strconv.Itoa(st.maxConcurrent)}
	}
	if lim := st.limiter; lim != nil {
		now := q.now()
		if avail := lim.TokensAt(now); avail < 1 {
			wait := time.Duration((1 - avail) / float64(lim.Limit()) * float64(time.Second))
			return nil, nil, &APIError{Code: CodeAdmissionReject, PolicyLabel: "tenant-quota", RetryAfterMs: max(wait.Milliseconds(), 1),
				Message: "tenant " + tenant + " exceeds its rate of " + strconv.FormatFloat(float64(lim.Limit()), 'g', -1, 64) + " tasks/s (burst " + strconv.Itoa(lim.Burst()) + ")"}
		}
	}
	st.active++
	commit = func() {
		if st.limiter != nil {
			// Spend the token looked at above; a concurrent admission may
			// have taken it meanwhile, leaving the bucket briefly in debt.
			st.limiter.ReserveN(q.now(), 1)
		}
	}
	return commit, func() { q.release(tenant) }, nil
}

// release gives back a concurrency place (task finished, or admission
// failed after acquire).
func (q *quotas) release(tenant string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.state(tenant)
	if st.active <= 0 {
		panic("BUG: gateway: quota release without acquire for tenant " + tenant)
	}
	st.active--
}

// update applies a new tenant list in place (config apply): limits and
// weights change, running counts are kept so that tasks admitted before
// release their places correctly. A tenant no longer listed gets the
// defaults (weight 1, no quota).
func (q *quotas) update(ts []config.Tenant) {
	fresh := newQuotas(ts)
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, st := range q.tenants {
		n, ok := fresh.tenants[id]
		if !ok {
			n = &tenantState{weight: 1}
			fresh.tenants[id] = n
		}
		n.active = st.active
		if st.limiter != nil && n.limiter != nil && st.limiter.Limit() == n.limiter.Limit() && st.limiter.Burst() == n.limiter.Burst() {
			n.limiter = st.limiter // unchanged: keep its tokens
		}
	}
	q.tenants = fresh.tenants
}
