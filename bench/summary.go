package bench

import (
	"bufio"
	"fmt"
	"io"
	"time"
)

// WriteSummary writes one table over several scenarios' reports, then the
// issue-7 targets checked against them. peers are reference runs of other
// relays (a plain proxy such as nginx in front of the same engine, mode
// engine-api); their "gateway" column is that relay.
func WriteSummary(w io.Writer, reports, peers []*Report) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# orch-bench summary\n\n")
	if len(reports) > 0 {
		r := reports[0]
		fmt.Fprintf(bw, "%s, %s; started %s. One run: figures move ±5–10 %% between runs on this machine class.\n\n",
			machineText(r), r.Machine.Kernel, r.StartedAt.Format(time.RFC3339))
	}
	fmt.Fprintf(bw, "| scenario | relay | c | tokens, pacing | tokens/s direct / relay | TTFT p50 direct → relay (ms) | TTFT p99 direct → relay (ms) | ITL p99 direct → relay (ms) | relay CPU per 1000 tokens (ms) | relay peak RSS (MiB) | errors direct / relay | unattributed CPU direct / relay (s) |\n")
	fmt.Fprintf(bw, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	row := func(r *Report, relay string) {
		d, g := r.Direct, r.Gateway
		cpu, rss := "–", "–"
		if g.CPUSPer1000Tokens != nil {
			cpu = fmt.Sprintf("%.3f", *g.CPUSPer1000Tokens*1000)
		}
		if g.PeakRSSBytes != nil {
			rss = fmt.Sprintf("%.1f", float64(*g.PeakRSSBytes)/(1<<20))
		}
		other := "–"
		if do, ok := d.OtherCPUS(); ok {
			if gv, ok := g.OtherCPUS(); ok {
				other = fmt.Sprintf("%.1f / %.1f", do, gv)
			}
		}
		fmt.Fprintf(bw, "| %s | %s | %d | %d, %s | %.0f / %.0f | %.3f → %.3f (%s) | %.3f → %.3f (%s) | %.3f → %.3f (%s) | %s | %s | %d / %d%s | %s |\n",
			r.Scenario, relay, r.C, r.Tokens, pacedShort(r),
			d.TokensPerS, g.TokensPerS,
			d.TTFT.P50, g.TTFT.P50, signed(g.TTFT.P50-d.TTFT.P50, 3),
			d.TTFT.P99, g.TTFT.P99, signed(g.TTFT.P99-d.TTFT.P99, 3),
			d.ITL.P99, g.ITL.P99, signed(g.ITL.P99-d.ITL.P99, 3),
			cpu, rss, d.ErrorCount(), g.ErrorCount(), errorsNote(g), other)
	}
	for _, r := range reports {
		row(r, "orchd ("+r.Mode+")")
	}
	for _, r := range peers {
		row(r, "nginx (reference)")
	}
	writeTargets(bw, reports, peers)
	fmt.Fprintf(bw, "\nEach scenario: a direct phase (clients → engine) then a relay phase (clients → relay → the same engine), each its own -d long; see each scenario's report.md and report.svg. "+
		"Unattributed CPU: the machine's busy CPU time in the phase minus orch-bench's, the engine's and the relay's — kernel network work not charged to a process, plus anything else running on the machine (which skews the figures when large).\n")
	return bw.Flush()
}

func errorsNote(p *Phase) string {
	if len(p.Errors) == 0 {
		return ""
	}
	return " (" + errorsText(p.Errors) + ")"
}

// writeTargets checks the issue-7 targets against the scenarios that
// measure them, matched by their parameters.
func writeTargets(w io.Writer, reports, peers []*Report) {
	find := func(rs []*Report, c int, paced time.Duration) *Report {
		for _, r := range rs {
			if r.C == c && time.Duration(r.PacedMs*float64(time.Millisecond)) == paced {
				return r
			}
		}
		return nil
	}
	type target struct {
		what, goal string
		got        func() (string, bool, bool) // value, met, measured
	}
	unpaced512 := find(reports, 512, 0)
	paced1000 := find(reports, 1000, 20*time.Millisecond)
	var big *Report
	for _, r := range reports {
		if r.C >= 5000 {
			big = r
		}
	}
	nginx512 := find(peers, 512, 0)
	cpuGoal := 1.5
	cpuGoalText := "≤ 1.5 ms (nginx 1.22: 1.54 in PERFORMANCE.md)"
	if nginx512 != nil && nginx512.Gateway.CPUSPer1000Tokens != nil {
		cpuGoal = *nginx512.Gateway.CPUSPer1000Tokens * 1000
		cpuGoalText = fmt.Sprintf("≤ nginx in this run (%.3f ms)", cpuGoal)
	}
	ts := []target{
		{"gateway CPU per 1000 tokens, unpaced c=512", cpuGoalText, func() (string, bool, bool) {
			if unpaced512 == nil || unpaced512.Gateway.CPUSPer1000Tokens == nil {
				return "", false, false
			}
			v := *unpaced512.Gateway.CPUSPer1000Tokens * 1000
			return fmt.Sprintf("%.3f ms", v), v <= cpuGoal, true
		}},
		{"added TTFT p99 vs direct, 1000 paced streams", "≤ +2 ms", func() (string, bool, bool) {
			if paced1000 == nil || paced1000.Delta == nil {
				return "", false, false
			}
			v := paced1000.Delta.TTFT.P99
			return signed(v, 3) + " ms", v <= 2, true
		}},
		{"gateway peak RSS, 1000 paced streams", "≤ 64 MiB", func() (string, bool, bool) {
			if paced1000 == nil || paced1000.Gateway.PeakRSSBytes == nil {
				return "", false, false
			}
			v := float64(*paced1000.Gateway.PeakRSSBytes) / (1 << 20)
			return fmt.Sprintf("%.1f MiB", v), v <= 64, true
		}},
		{"5,000 paced streams complete", "0 errors", func() (string, bool, bool) {
			if big == nil {
				return "", false, false
			}
			n := big.Gateway.ErrorCount()
			return fmt.Sprintf("%d requests, %d errors", big.Gateway.Requests, n), n == 0 && big.Gateway.Requests >= int64(big.C), true
		}},
	}
	fmt.Fprintf(w, "\n## Targets (issue 7)\n\n| target | goal | measured | met |\n|---|---|---:|---|\n")
	for _, t := range ts {
		v, met, ok := t.got()
		switch {
		case !ok:
			fmt.Fprintf(w, "| %s | %s | not run | – |\n", t.what, t.goal)
		case met:
			fmt.Fprintf(w, "| %s | %s | %s | yes |\n", t.what, t.goal, v)
		default:
			fmt.Fprintf(w, "| %s | %s | %s | **no** |\n", t.what, t.goal, v)
		}
	}
}
