package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Report is report.json. The fields of SPEC §14 — `gateway` and `direct`,
// each with requests, tokens, rps, tokens_per_s, errors, ttft_ms, itl_ms,
// total_ms, and the gateway's cpu_s_per_1000_tokens and peak_rss_bytes — are
// contract; the others are additive.
type Report struct {
	Scenario    string    `json:"scenario"`
	StartedAt   time.Time `json:"started_at"`
	GoVersion   string    `json:"go_version"`
	Machine     Machine   `json:"machine"`
	C           int       `json:"c"`
	Duration    string    `json:"duration"`
	DurationS   float64   `json:"duration_s"`
	Tokens      int       `json:"tokens"`
	Paced       string    `json:"paced"`
	PacedMs     float64   `json:"paced_ms"`
	Mode        string    `json:"mode"` // one-round-trip | two-step | engine-api (a plain proxy in front of the engine)
	Engine      string    `json:"engine"`
	Model       string    `json:"model"`
	GatewayURL  string    `json:"gateway_url"`
	DirectURL   string    `json:"direct_url,omitempty"`
	TimeoutS    float64   `json:"timeout_s"`
	RampS       float64   `json:"ramp_s,omitempty"`
	Interrupted bool      `json:"interrupted,omitempty"`

	Direct  *Phase `json:"direct"`
	Gateway *Phase `json:"gateway"`
	// Delta is the latency the gateway adds: gateway − direct, percentile by
	// percentile (absent without a direct phase).
	Delta *Delta `json:"delta,omitempty"`
}

// Phase is one side of the comparison.
type Phase struct {
	// Requests finished in the phase (successful or not; requests aborted by
	// an interrupt are not counted).
	Requests int64 `json:"requests"`
	// OK is Requests minus the errors.
	OK int64 `json:"ok"`
	// Tokens received by the clients (token events, or engine frames with
	// text), in every request including failed ones.
	Tokens     int64   `json:"tokens"`
	RPS        float64 `json:"rps"`          // Requests / WallS
	TokensPerS float64 `json:"tokens_per_s"` // Tokens / WallS
	// Errors counts failed requests by kind (connect, timeout, no_terminal,
	// token_count, http_<status>, error_event_<code>).
	Errors map[string]int64 `json:"errors"`
	TTFT   Percentiles      `json:"ttft_ms"`  // request sent → first token, every request that got one
	ITL    Percentiles      `json:"itl_ms"`   // gap between consecutive tokens as the client reads them
	Total  Percentiles      `json:"total_ms"` // request sent → terminal event, successful requests
	// WallS is the phase's wall time: from its start to its last request's
	// end (requests started before the deadline run to completion).
	WallS float64 `json:"wall_s"`
	// ClientCPUS is orch-bench's own CPU time in the phase.
	ClientCPUS float64 `json:"client_cpu_s"`
	// MachineBusyCPUS is the CPU time the whole machine was busy in the
	// phase (/proc/stat): minus client, gateway and engine CPU it shows what
	// else ran (the three share the machine's cores).
	MachineBusyCPUS float64 `json:"machine_busy_cpu_s"`
	// EngineCPUS is the engine's CPU time in the phase (with --engine-pid).
	EngineCPUS *float64 `json:"engine_cpu_s,omitempty"`
	// With the gateway's PID(s): its CPU seconds in the phase, per 1000
	// tokens relayed (and per token, in µs), and its peak RSS (VmHWM: the
	// process's peak since it started).
	CPUS              *float64 `json:"cpu_s,omitempty"`
	CPUSPer1000Tokens *float64 `json:"cpu_s_per_1000_tokens,omitempty"`
	CPUUsPerToken     *float64 `json:"cpu_us_per_token,omitempty"`
	PeakRSSBytes      *int64   `json:"peak_rss_bytes,omitempty"`
}

// ErrorCount is the number of failed requests.
func (p *Phase) ErrorCount() int64 {
	var n int64
	for _, v := range p.Errors {
		n += v
	}
	return n
}

// OtherCPUS is the machine's busy CPU time in the phase not charged to
// orch-bench, the engine or the gateway: kernel work done in interrupt
// context (loopback networking) and any other load sharing the cores. Known
// only when the engine's PID was given.
func (p *Phase) OtherCPUS() (float64, bool) {
	if p.EngineCPUS == nil || p.MachineBusyCPUS == 0 {
		return 0, false
	}
	v := p.MachineBusyCPUS - p.ClientCPUS - *p.EngineCPUS
	if p.CPUS != nil {
		v -= *p.CPUS
	}
	return round3(max(v, 0)), true
}

// Delta is gateway − direct for each latency histogram, in ms.
type Delta struct {
	TTFT  Percentiles `json:"ttft_ms"`
	ITL   Percentiles `json:"itl_ms"`
	Total Percentiles `json:"total_ms"`
}

// Machine describes where the run happened.
type Machine struct {
	NProc         int    `json:"nproc"`
	GOMAXPROCS    int    `json:"gomaxprocs"`
	CPUModel      string `json:"cpu_model,omitempty"`
	Kernel        string `json:"kernel,omitempty"`
	MemTotalBytes int64  `json:"mem_total_bytes,omitempty"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
}

func newReport(c *Config) *Report {
	mode := "one-round-trip"
	switch {
	case c.GatewayAPI == "engine":
		mode = "engine-api"
	case c.TwoStep:
		mode = "two-step"
	}
	return &Report{
		Scenario:   c.Scenario,
		StartedAt:  time.Now().UTC().Truncate(time.Second),
		GoVersion:  runtime.Version(),
		Machine:    machine(),
		C:          c.C,
		Duration:   c.Duration.String(),
		DurationS:  c.Duration.Seconds(),
		Tokens:     c.Tokens,
		Paced:      c.Paced.String(),
		PacedMs:    float64(c.Paced) / float64(time.Millisecond),
		Mode:       mode,
		Engine:     c.Engine,
		Model:      c.Model,
		GatewayURL: c.GatewayURL,
		DirectURL:  c.DirectURL,
		TimeoutS:   c.Timeout.Seconds(),
		RampS:      c.Ramp.Seconds(),
	}
}

func (r *Report) finish() {
	if r.Direct == nil {
		// Keep the §14 shape: a direct object is always there.
		r.Direct = &Phase{Errors: map[string]int64{}}
		return
	}
	r.Delta = &Delta{
		TTFT:  r.Gateway.TTFT.Sub(r.Direct.TTFT),
		ITL:   r.Gateway.ITL.Sub(r.Direct.ITL),
		Total: r.Gateway.Total.Sub(r.Direct.Total),
	}
}

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if v, err := parseStatusKB(b, "MemTotal:"); err == nil {
			m.MemTotalBytes = v
		}
	}
	return m
}

// ReadReport reads a report.json.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("cannot parse report %s: %w", path, err)
	}
	if r.Gateway == nil || r.Direct == nil {
		return nil, fmt.Errorf("report %s has no gateway or direct object", path)
	}
	return &r, nil
}

// WriteReports writes report.json, report.md and report.svg into dir.
func WriteReports(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	for _, f := range []struct {
		name  string
		write func(io.Writer, *Report) error
	}{
		{"report.json", WriteJSON},
		{"report.md", WriteMarkdown},
		{"report.svg", WriteSVG},
	} {
		if err := writeFile(filepath.Join(dir, f.name), func(w io.Writer) error { return f.write(w, r) }); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return fmt.Errorf("cannot render %s: %w", path, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes the gateway-vs-direct table.
func WriteMarkdown(w io.Writer, r *Report) error {
	bw := bufio.NewWriter(w)
	d, g := r.Direct, r.Gateway
	fmt.Fprintf(bw, "# orch-bench: %s\n\n", r.Scenario)
	fmt.Fprintf(bw, "c=%d closed-loop clients, %d tokens per stream, engine %s, %s per phase; gateway %s (%s), engine %s %s (model %s); %s; started %s.\n",
		r.C, r.Tokens, pacedText(r), r.Duration, r.GatewayURL, r.Mode, r.Engine, r.DirectURL, r.Model, machineText(r), r.StartedAt.Format(time.RFC3339))
	if r.Interrupted {
		fmt.Fprintf(bw, "\n**Interrupted**: the run was stopped early; figures cover what finished.\n")
	}
	fmt.Fprintf(bw, "\n| metric | direct | gateway | delta | ratio |\n|---|---:|---:|---:|---:|\n")
	row := func(name string, dv, gv float64, prec int) {
		fmt.Fprintf(bw, "| %s | %s | %s | %s | %s |\n", name, num(dv, prec), num(gv, prec), signed(gv-dv, prec), ratio(gv, dv))
	}
	row("requests", float64(d.Requests), float64(g.Requests), 0)
	row("requests/s", d.RPS, g.RPS, 1)
	row("tokens", float64(d.Tokens), float64(g.Tokens), 0)
	row("tokens/s", d.TokensPerS, g.TokensPerS, 0)
	row("errors", float64(d.ErrorCount()), float64(g.ErrorCount()), 0)
	for _, h := range []struct {
		name string
		d, g Percentiles
	}{{"TTFT", d.TTFT, g.TTFT}, {"inter-token", d.ITL, g.ITL}, {"total", d.Total, g.Total}} {
		row(h.name+" p50 (ms)", h.d.P50, h.g.P50, 3)
		row(h.name+" p90 (ms)", h.d.P90, h.g.P90, 3)
		row(h.name+" p99 (ms)", h.d.P99, h.g.P99, 3)
		row(h.name+" max (ms)", h.d.Max, h.g.Max, 3)
	}
	fmt.Fprintf(bw, "| orch-bench CPU (s) | %s | %s | | |\n", num(d.ClientCPUS, 2), num(g.ClientCPUS, 2))
	if d.EngineCPUS != nil && g.EngineCPUS != nil {
		fmt.Fprintf(bw, "| engine CPU (s) | %s | %s | | |\n", num(*d.EngineCPUS, 2), num(*g.EngineCPUS, 2))
	}
	fmt.Fprintf(bw, "| machine busy CPU (s) | %s | %s | | |\n", num(d.MachineBusyCPUS, 2), num(g.MachineBusyCPUS, 2))
	if do, ok := d.OtherCPUS(); ok {
		if gv, ok := g.OtherCPUS(); ok {
			fmt.Fprintf(bw, "| unattributed CPU (s) | %s | %s | | |\n", num(do, 2), num(gv, 2))
		}
	}
	if g.CPUS != nil {
		fmt.Fprintf(bw, "| gateway CPU (s) | | %s | | |\n", num(*g.CPUS, 2))
	}
	if g.CPUSPer1000Tokens != nil {
		fmt.Fprintf(bw, "| gateway CPU per 1000 tokens (ms) | | %s | | |\n", num(*g.CPUSPer1000Tokens*1000, 3))
	}
	if g.PeakRSSBytes != nil {
		fmt.Fprintf(bw, "| gateway peak RSS (MiB) | | %s | | |\n", num(float64(*g.PeakRSSBytes)/(1<<20), 1))
	}
	for _, p := range []struct {
		name string
		ph   *Phase
	}{{"direct", d}, {"gateway", g}} {
		if len(p.ph.Errors) == 0 {
			continue
		}
		fmt.Fprintf(bw, "\nErrors (%s): %s\n", p.name, errorsText(p.ph.Errors))
	}
	fmt.Fprintf(bw, "\nTTFT: request sent → first token; inter-token: gaps between tokens as read; total: request sent → terminal event. "+
		"Delta = gateway − direct, ratio = gateway / direct. Gateway CPU = utime+stime of its process(es) over the gateway phase.\n")
	return bw.Flush()
}

func pacedText(r *Report) string {
	if r.PacedMs == 0 {
		return "unpaced"
	}
	return "paced " + r.Paced + " per token"
}

func machineText(r *Report) string {
	s := fmt.Sprintf("%d CPUs", r.Machine.NProc)
	if r.Machine.CPUModel != "" {
		s += " " + r.Machine.CPUModel
	}
	return s + ", " + r.GoVersion
}

func errorsText(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func num(v float64, prec int) string { return fmt.Sprintf("%.*f", prec, v) }

func signed(v float64, prec int) string {
	if v >= 0 {
		return fmt.Sprintf("+%.*f", prec, v)
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func ratio(g, d float64) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", g/d)
}
