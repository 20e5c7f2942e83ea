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

// acquire takes one concurrency place and one rate token, or returns the
// 429 that explains which limit refused. The place is given back by release
// when the task ends; undo gives back both place and token when admission
// fails at a later check, so a rejected request changes nothing.
func (q *quotas) acquire(tenant string) (undo func(), _ *APIError) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.state(tenant)
	if st.maxConcurrent > 0 && st.active >= st.maxConcurrent {
		return nil, &APIError{Code: CodeAdmissionReject, PolicyLabel: "tenant-quota", RetryAfterMs: 1000,
			Message: "tenant " + tenant + " has " + strconv.Itoa(st.active) + " tasks queued or running, its max_concurrent is " + strconv.Itoa(st.maxConcurrent)}
	}
	var res *rate.Reservation
	if st.limiter != nil {
		now := q.now()
		res = st.limiter.ReserveN(now, 1)
		if d := res.DelayFrom(now); d > 0 {
			res.CancelAt(now)
			return nil, &APIError{Code: CodeAdmissionReject, PolicyLabel: "tenant-quota", RetryAfterMs: max(d.Milliseconds(), 1),
				Message: "tenant " + tenant + " exceeds its rate of " + strconv.FormatFloat(float64(st.limiter.Limit()), 'g', -1, 64) + " tasks/s (burst " + strconv.Itoa(st.limiter.Burst()) + ")"}
		}
	}
	st.active++
	return func() {
		if res != nil {
			res.CancelAt(q.now())
		}
		q.release(tenant)
	}, nil
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
