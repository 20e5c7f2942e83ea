package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	cpu, per, perTok := 1.5, 0.0015, 1.5
	rss := int64(48 << 20)
	r := newReport(&Config{
		Scenario: "a-unpaced-c512", GatewayURL: "http://127.0.0.1:8090", DirectURL: "http://127.0.0.1:18081",
		Params: Params{Model: "tiny-llama", Engine: "llamacpp", Tokens: 64}, C: 512,
		Duration: 15 * time.Second, Timeout: time.Minute,
	})
	r.Direct = &Phase{Requests: 100, OK: 100, Tokens: 6400, RPS: 10, TokensPerS: 640, Errors: map[string]int64{},
		TTFT: Percentiles{1, 2, 3, 4}, ITL: Percentiles{0.001, 0.002, 0.05, 1}, Total: Percentiles{5, 6, 7, 8}}
	r.Gateway = &Phase{Requests: 99, OK: 97, Tokens: 6300, RPS: 9.9, TokensPerS: 630,
		Errors: map[string]int64{"http_429": 1, "error_event_<WORKER_RESET>": 1},
		TTFT:   Percentiles{1.5, 2.5, 4, 9}, ITL: Percentiles{0.001, 0.003, 0.06, 2}, Total: Percentiles{5.5, 7, 9, 12},
		CPUS: &cpu, CPUSPer1000Tokens: &per, CPUUsPerToken: &perTok, PeakRSSBytes: &rss}
	r.finish()
	return r
}

// TestReportJSONFields checks report.json has every SPEC §14 field.
func TestReportJSONFields(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("report.json is not JSON: %v", err)
	}
	for _, side := range []string{"gateway", "direct"} {
		obj, ok := m[side].(map[string]any)
		if !ok {
			t.Fatalf("no %s object", side)
		}
		for _, k := range []string{"requests", "tokens", "rps", "tokens_per_s"} {
			if _, ok := obj[k].(float64); !ok {
				t.Errorf("%s.%s missing or not a number", side, k)
			}
		}
		if _, ok := obj["errors"].(map[string]any); !ok {
			t.Errorf("%s.errors missing or not an object", side)
		}
		for _, h := range []string{"ttft_ms", "itl_ms", "total_ms"} {
			p, ok := obj[h].(map[string]any)
			if !ok {
				t.Errorf("%s.%s missing", side, h)
				continue
			}
			for _, q := range []string{"p50", "p90", "p99", "max"} {
				if _, ok := p[q].(float64); !ok {
					t.Errorf("%s.%s.%s missing", side, h, q)
				}
			}
			if len(p) != 4 {
				t.Errorf("%s.%s has %d keys, want exactly p50,p90,p99,max", side, h, len(p))
			}
		}
	}
	gw := m["gateway"].(map[string]any)
	if gw["cpu_s_per_1000_tokens"] != 0.0015 || gw["peak_rss_bytes"] != float64(48<<20) {
		t.Errorf("gateway cpu/rss = %v, %v", gw["cpu_s_per_1000_tokens"], gw["peak_rss_bytes"])
	}
	if _, ok := m["direct"].(map[string]any)["cpu_s_per_1000_tokens"]; ok {
		t.Error("direct has gateway-only fields")
	}
	// Additive fields.
	for _, k := range []string{"scenario", "c", "duration", "tokens", "paced", "started_at", "go_version", "machine", "delta"} {
		if _, ok := m[k]; !ok {
			t.Errorf("additive field %s missing", k)
		}
	}
	if d := m["delta"].(map[string]any)["ttft_ms"].(map[string]any)["p99"]; d != 1.0 {
		t.Errorf("delta.ttft_ms.p99 = %v, want 1", d)
	}
	// Without the PID the gateway-only fields are absent, and the report
	// still reads back.
	r := sampleReport()
	r.Gateway.CPUS, r.Gateway.CPUSPer1000Tokens, r.Gateway.CPUUsPerToken, r.Gateway.PeakRSSBytes = nil, nil, nil, nil
	buf.Reset()
	_ = WriteJSON(&buf, r)
	if strings.Contains(buf.String(), "cpu_s_per_1000_tokens") || strings.Contains(buf.String(), "peak_rss_bytes") {
		t.Error("PID-only fields written without a PID")
	}
}

// xmlWellFormed decodes every token of b.
func xmlWellFormed(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("report.svg is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
			if se.Name.Space != "http://www.w3.org/2000/svg" {
				t.Errorf("root namespace %q", se.Name.Space)
			}
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
}

func TestWriteReports(t *testing.T) {
	dir := t.TempDir()
	r := sampleReport()
	r.Scenario = `<odd & "name">`
	if err := WriteReports(dir, r); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "report.svg"))
	if err != nil {
		t.Fatal(err)
	}
	xmlWellFormed(t, svg)
	for _, want := range []string{"Time to first token", "Inter-token latency", "direct (engine)", "gateway", "p99", "milliseconds"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("report.svg lacks %q", want)
		}
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| metric | direct | gateway | delta | ratio |", "| TTFT p99 (ms) | 3.000 | 4.000 | +1.000 | 1.33× |",
		"gateway CPU per 1000 tokens (ms) | | 1.500", "http_429 1"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	back, err := ReadReport(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Gateway.Requests != 99 || back.Scenario != r.Scenario {
		t.Errorf("read back %+v", back)
	}
	// An empty run (nothing measured) still renders.
	empty := newReport(&Config{Scenario: "empty", Duration: time.Second})
	empty.Gateway = &Phase{Errors: map[string]int64{}}
	empty.finish()
	var buf bytes.Buffer
	if err := WriteSVG(&buf, empty); err != nil {
		t.Fatal(err)
	}
	xmlWellFormed(t, buf.Bytes())
}

func TestSummary(t *testing.T) {
	a := sampleReport()
	b := sampleReport()
	b.Scenario, b.C, b.PacedMs, b.Paced, b.Tokens = "b-paced20ms-c1000", 1000, 20, "20ms", 128
	b.Delta.TTFT.P99 = 1.5
	n := sampleReport()
	n.Scenario, n.Mode = "nginx-a-unpaced-c512", "engine-api"
	nginxCPU := 0.0014
	n.Gateway.CPUSPer1000Tokens = &nginxCPU
	var buf bytes.Buffer
	if err := WriteSummary(&buf, []*Report{a, b}, []*Report{n}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"| a-unpaced-c512 | orchd (one-round-trip) | 512 | 64, unpaced |",
		"| nginx-a-unpaced-c512 | nginx (reference) |",
		"| gateway CPU per 1000 tokens, unpaced c=512 | ≤ nginx in this run (1.400 ms) | 1.500 ms | **no** |",
		"| added TTFT p99 vs direct, 1000 paced streams | ≤ +2 ms | +1.500 ms | yes |",
		"| 5,000 paced streams complete | 0 errors | not run | – |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestNiceAxis(t *testing.T) {
	f := func(v, wantMax, wantStep float64) {
		t.Helper()
		max, step := niceAxis(v)
		if max != wantMax || step != wantStep {
			t.Errorf("niceAxis(%v) = %v, %v; want %v, %v", v, max, step, wantMax, wantStep)
		}
	}
	f(68.4, 80, 20)
	f(0.074, 0.08, 0.02)
	f(0, 1, 0.2)
	f(4722, 6000, 1000)
}
