package gateway

import (
	"sync"

	"github.com/llama-orch/llama-orch/gateway/admission"
)

// shareTracker keeps admission_share{tenant,priority}: the EWMA share of
// dispatches (slot grants) each tenant received within its priority
// (SPEC §4.3). Each dispatch moves every known tenant of that priority
// toward 0 and the served one toward 1, so shares within a priority sum to 1.
type shareTracker struct {
	mu     sync.Mutex
	shares [admission.NumPriorities]map[string]float64
}

// shareAlpha weighs one dispatch: about the last 50 dispatches count.
const shareAlpha = 0.02

func newShareTracker() *shareTracker {
	st := &shareTracker{}
	for i := range st.shares {
		st.shares[i] = make(map[string]float64)
	}
	return st
}

func (st *shareTracker) observe(tenant string, p admission.Priority) {
	st.mu.Lock()
	defer st.mu.Unlock()
	m := st.shares[p]
	if _, ok := m[tenant]; !ok {
		if len(m) == 0 {
			m[tenant] = 1
			return
		}
		m[tenant] = 0
	}
	for k, v := range m {
		hit := 0.0
		if k == tenant {
			hit = 1
		}
		m[k] = (1-shareAlpha)*v + shareAlpha*hit
	}
}

// each calls f for every (tenant, priority, share).
func (st *shareTracker) each(f func(tenant string, p admission.Priority, share float64)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for p := range st.shares {
		for k, v := range st.shares[p] {
			f(k, admission.Priority(p), v)
		}
	}
}

// deadlineTracker keeps deadlines_met_ratio{priority}: of the finished tasks
// that had a deadline, the fraction that met it.
type deadlineTracker struct {
	mu         sync.Mutex
	met, total [admission.NumPriorities]int64
}

func (d *deadlineTracker) observe(p admission.Priority, met bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.total[p]++
	if met {
		d.met[p]++
	}
}

func (d *deadlineTracker) each(f func(p admission.Priority, ratio float64)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p := range d.total {
		if d.total[p] > 0 {
			f(admission.Priority(p), float64(d.met[p])/float64(d.total[p]))
		}
	}
}
