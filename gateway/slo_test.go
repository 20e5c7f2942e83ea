package gateway

import (
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/config"
)

func TestSLOTracker(t *testing.T) {
	tr := newSLOTracker(config.SLO{
		Interactive: config.SLOTarget{TTFTP95Ms: 900, E2E64TokensP95Ms: 2500, ErrorRate: 0.005},
		Batch:       config.SLOTarget{ErrorRate: 0.01},
	})
	if len(tr.status()) != 0 {
		t.Fatal("status before any task")
	}
	// 96 fast interactive tasks, 4 slow ones: 96 % within 900 ms → met.
	for i := range 100 {
		ttft := 100.0
		if i < 4 {
			ttft = 2000
		}
		tr.observe(admission.Interactive, ttft, 10, false) // e2e_64 = ttft + 640
	}
	// Batch: 2 failures in 100 → 2 % > 1 %.
	for i := range 100 {
		tr.observe(admission.Batch, 50, 1, i < 2)
	}
	st := tr.status()
	if len(st) != 2 {
		t.Fatalf("status: %+v", st)
	}
	in, b := st[0], st[1]
	if in.Priority != "interactive" || in.Attainment["ttft"] != 0.96 || !in.Met["ttft"] || in.Attainment["e2e_64"] != 0.96 ||
		!in.Met["e2e_64"] || in.ErrorRate != 0 || !in.Met["errors"] || in.P95["ttft"] != 100 {
		t.Fatalf("interactive: %+v", in)
	}
	if b.ErrorRate != 0.02 || b.Met["errors"] || len(b.Attainment) != 0 {
		t.Fatalf("batch: %+v", b)
	}
	// The window slides: 1024 fast tasks push the slow ones out.
	for range sloWindow {
		tr.observe(admission.Interactive, 100, 10, false)
	}
	if a := tr.status()[0].Attainment["ttft"]; a != 1 {
		t.Fatalf("attainment after the window slid: %v", a)
	}
	// A failure with no first token counts for errors only.
	tr.observe(admission.Interactive, -1, 0, true)
	if st := tr.status()[0]; st.Tasks != sloWindow || st.ErrorRate != 1.0/sloWindow || st.Met["errors"] != true {
		t.Fatalf("after one failure: %+v", st)
	}
	m := newMetrics()
	m.registerSLOGauges(tr)
	var sb strings.Builder
	m.WritePrometheus(&sb)
	for _, want := range []string{`slo_attainment{priority="interactive",objective="ttft"} 1`, `slo_error_rate{priority="batch"} 0.02`,
		`slo_objective_met{priority="batch",objective="errors"} 0`, `slo_objective_met{priority="interactive",objective="e2e_64"} 1`} {
		if !strings.Contains(sb.String(), want) {
			t.Fatalf("metrics lack %s:\n%s", want, sb.String())
		}
	}
}

// TestSLOCountsWatchdogTimeouts: a task the watchdog ends (DECODE_TIMEOUT)
// is a failed task for the error-rate objective.
func TestSLOCountsWatchdogTimeouts(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Pools[0].Timeouts.IdleMs = 200 }, fake.Options{Fail: fake.FailStall})
	evs := e.postStream(taskSpec{maxTokens: 8}.body()).all(t)
	if last := evs[len(evs)-1]; last.name != "error" || last.data["code"] != "DECODE_TIMEOUT" {
		t.Fatalf("stalled task ended with %s %v", last.name, last.data)
	}
	// The watchdog records the failure just after it appends the error event
	// the client reads, so wait for it rather than race it.
	eventually(t, "the watchdog timeout to reach the SLO tracker", func() bool { return len(e.srv.slo.status()) == 1 })
	st := e.srv.slo.status()
	if st[0].Tasks != 1 || st[0].ErrorRate != 1 || st[0].Met["errors"] {
		t.Fatalf("SLO after a watchdog timeout: %+v", st)
	}
}
