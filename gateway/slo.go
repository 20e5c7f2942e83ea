package gateway

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// SLO attainment (issue 6, SPEC §8): per priority, over the last sloWindow
// finished tasks, the share that met each latency objective and the error
// rate, against the config's targets:
//
//   - ttft: time to first token (admission to first token) ≤ ttft_p95_ms;
//   - e2e_64: time to first token + 64 × the task's own ms per token ≤
//     e2e_64_tokens_p95_ms (a task's latency normalised to 64 tokens);
//   - errors: tasks that ended with an error the client did not cause
//     (engine faults, timeouts, exhaustion — not cancels, not invalid
//     requests) over all finished tasks.
//
// A p95 objective is met while attainment ≥ 0.95; the error objective while
// the error rate ≤ its target.
const sloWindow = 1024

type sloOutcome struct {
	ttftMs, e2e64Ms float64 // -1 when there was no first token
	failed          bool
}

type sloRing struct {
	buf  [sloWindow]sloOutcome
	n, i int
}

func (r *sloRing) add(o sloOutcome) {
	r.buf[r.i] = o
	r.i = (r.i + 1) % sloWindow
	r.n = min(r.n+1, sloWindow)
}

type sloTracker struct {
	mu      sync.Mutex
	targets [admission.NumPriorities]config.SLOTarget
	rings   [admission.NumPriorities]sloRing
}

func newSLOTracker(c config.SLO) *sloTracker {
	t := &sloTracker{}
	t.targets[admission.Interactive] = c.Interactive
	t.targets[admission.Batch] = c.Batch
	return t
}

// observe records one finished task: ttftMs < 0 when no token came.
func (t *sloTracker) observe(p admission.Priority, ttftMs, msPerToken float64, failed bool) {
	o := sloOutcome{ttftMs: ttftMs, e2e64Ms: -1, failed: failed}
	if ttftMs >= 0 {
		o.e2e64Ms = ttftMs + 64*msPerToken
	}
	t.mu.Lock()
	t.rings[p].add(o)
	t.mu.Unlock()
}

// sloStatus is one priority's attainment, for /v1/replicasets and metrics.
type sloStatus struct {
	Priority  string             `json:"priority"`
	Tasks     int                `json:"tasks"`
	ErrorRate float64            `json:"error_rate"`
	Targets   map[string]float64 `json:"targets"`
	// Attainment is the share of tasks meeting each latency objective.
	Attainment map[string]float64 `json:"attainment"`
	// P95 is the observed p95 of each latency objective's measure, ms.
	P95 map[string]float64 `json:"p95_ms"`
	// Met says whether each objective holds now.
	Met map[string]bool `json:"met"`
}

// status reports every priority that has finished tasks.
func (t *sloTracker) status() []sloStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []sloStatus
	for p := admission.Priority(0); p < admission.NumPriorities; p++ {
		r := &t.rings[p]
		if r.n == 0 {
			continue
		}
		tg := t.targets[p]
		st := sloStatus{Priority: p.String(), Tasks: r.n, Targets: map[string]float64{"error_rate": tg.ErrorRate},
			Attainment: map[string]float64{}, P95: map[string]float64{}, Met: map[string]bool{}}
		failed := 0
		var ttft, e2e []float64
		for i := 0; i < r.n; i++ {
			o := r.buf[i]
			if o.failed {
				failed++
			}
			if o.ttftMs >= 0 {
				ttft = append(ttft, o.ttftMs)
				e2e = append(e2e, o.e2e64Ms)
			}
		}
		st.ErrorRate = float64(failed) / float64(r.n)
		st.Met["errors"] = st.ErrorRate <= tg.ErrorRate
		for _, obj := range []struct {
			name   string
			target int
			vals   []float64
		}{{"ttft", tg.TTFTP95Ms, ttft}, {"e2e_64", tg.E2E64TokensP95Ms, e2e}} {
			if obj.target <= 0 || len(obj.vals) == 0 {
				continue
			}
			met := 0
			for _, v := range obj.vals {
				if v <= float64(obj.target) {
					met++
				}
			}
			sort.Float64s(obj.vals)
			st.Targets[obj.name+"_p95_ms"] = float64(obj.target)
			st.Attainment[obj.name] = float64(met) / float64(len(obj.vals))
			st.P95[obj.name] = obj.vals[min(len(obj.vals)-1, int(0.95*float64(len(obj.vals))))]
			st.Met[obj.name] = st.Attainment[obj.name] >= 0.95
		}
		out = append(out, st)
	}
	return out
}

// registerSLOGauges writes slo_attainment{priority,objective},
// slo_error_rate{priority} and slo_objective_met{priority,objective} at
// scrape time; a priority with no finished task has no series.
func (m *gwMetrics) registerSLOGauges(t *sloTracker) {
	m.set.RegisterMetricsWriter(func(w io.Writer) {
		for _, st := range t.status() {
			for _, obj := range []string{"ttft", "e2e_64"} {
				if a, ok := st.Attainment[obj]; ok {
					fmt.Fprintf(w, "slo_attainment{priority=%q,objective=%q} %g\n", st.Priority, obj, a)
				}
			}
			fmt.Fprintf(w, "slo_error_rate{priority=%q} %g\n", st.Priority, st.ErrorRate)
			for _, obj := range []string{"ttft", "e2e_64", "errors"} {
				if met, ok := st.Met[obj]; ok {
					v := 0
					if met {
						v = 1
					}
					fmt.Fprintf(w, "slo_objective_met{priority=%q,objective=%q} %d\n", st.Priority, obj, v)
				}
			}
		}
	})
}

// sinceMs is first − from in ms, or -1 when first is zero (no token came).
func sinceMs(from, first time.Time) float64 {
	if first.IsZero() {
		return -1
	}
	return float64(first.Sub(from).Microseconds()) / 1000
}

// setTargets replaces the objectives (config apply); the window is kept.
func (t *sloTracker) setTargets(c config.SLO) {
	t.mu.Lock()
	t.targets[admission.Interactive] = c.Interactive
	t.targets[admission.Batch] = c.Batch
	t.mu.Unlock()
}
