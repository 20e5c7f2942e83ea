package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
)

// replicaSets is GET /v1/replicasets. Fields orchctl does not show are left
// to --json; absent optional fields decode as zero values.
type replicaSets struct {
	ReplicaSets []replicaSet `json:"replicasets"`
}

// replicaSet is one pool as /v1/replicasets and a reload's 200 show it.
type replicaSet struct {
	PoolID        string    `json:"pool_id"`
	Engine        string    `json:"engine"`
	EngineVersion string    `json:"engine_version"`
	Model         string    `json:"model"`
	Ready         bool      `json:"ready"`
	Draining      bool      `json:"draining"`
	QueueDepth    int       `json:"queue_depth"`
	Queue         *struct { // optional
		Capacity int `json:"capacity"`
	} `json:"queue"`
	Replicas []replica `json:"replicas"`
	SLO      struct {
		TTFTMs struct {
			P50 float64 `json:"p50"`
			P95 float64 `json:"p95"`
			P99 float64 `json:"p99"`
		} `json:"ttft_ms"`
	} `json:"slo"`
}

// replica is one replica of a replicaSet.
type replica struct {
	ID         string             `json:"id"`
	URL        string             `json:"url"`
	State      string             `json:"state"`
	Breaker    string             `json:"breaker"`
	Inflight   int                `json:"inflight"`
	Slots      int                `json:"slots"`
	EngineLoad map[string]float64 `json:"engine_load"`
	LastError  string             `json:"last_error"`
}

func cmdStatus(ctx context.Context, c *command) error {
	asJSON := c.fs.Bool("json", false, "print the server's JSON (indented) instead of tables")
	pos, err := c.parse()
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{msg: "unexpected arguments: " + strings.Join(pos, " ")}
	}
	if err := c.connect(); err != nil {
		return err
	}
	r, err := c.client.call(ctx, "status", http.MethodGet, "/v1/replicasets", "", nil, callTimeout)
	if err != nil {
		return err
	}
	if *asJSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, bytes.TrimSpace(r.body), "", "  "); err != nil {
			return fmt.Errorf("status: orchd answered something that is not JSON: %w", err)
		}
		buf.WriteByte('\n')
		_, err := c.stdout.Write(buf.Bytes())
		return err
	}
	var v replicaSets
	if err := json.Unmarshal(r.body, &v); err != nil {
		return fmt.Errorf("status: cannot decode orchd's /v1/replicasets answer: %w", err)
	}
	return writeStatus(c.stdout, v.ReplicaSets)
}

// writeStatus prints a pools table and a replicas table.
func writeStatus(w io.Writer, sets []replicaSet) error {
	if len(sets) == 0 {
		_, err := fmt.Fprintln(w, "no pools")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tENGINE\tMODEL\tREADY\tDRAINING\tQUEUE\tTTFT P95")
	for i := range sets {
		s := &sets[i]
		queue := strconv.Itoa(s.QueueDepth)
		if s.Queue != nil && s.Queue.Capacity > 0 {
			queue += "/" + strconv.Itoa(s.Queue.Capacity)
		}
		engine := s.Engine
		if s.EngineVersion != "" {
			engine += " " + s.EngineVersion
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(s.PoolID), cell(engine), cell(s.Model),
			yesNo(s.Ready), yesNo(s.Draining), queue, fmtMs(s.SLO.TTFTMs.P95))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tREPLICA\tSTATE\tBREAKER\tINFLIGHT/SLOTS\tENGINE LOAD\tLAST ERROR")
	for i := range sets {
		s := &sets[i]
		if len(s.Replicas) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\n", cell(s.PoolID))
		}
		for j := range s.Replicas {
			r := &s.Replicas[j]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", cell(s.PoolID), cell(r.ID), cell(r.State),
				cell(r.Breaker), r.Inflight, r.Slots, fmtLoad(r.EngineLoad), cell(r.LastError))
		}
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// fmtMs renders a latency; 0 means no sample yet.
func fmtMs(ms float64) string {
	switch {
	case ms <= 0:
		return "-"
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	default:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	}
}

// fmtLoad renders the engine's own load report, e.g. "processing=2
// deferred=0" (llama.cpp /metrics); "-" when the engine reports none.
func fmtLoad(m map[string]float64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		switch k {
		case "requests_processing":
			return 0
		case "requests_deferred":
			return 1
		}
		return 2
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = oneLine(strings.TrimPrefix(k, "requests_")) + "=" + strconv.FormatFloat(m[k], 'f', -1, 64)
	}
	return strings.Join(parts, " ")
}

// cell is a table cell: one line, no tabs, "-" when empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return oneLine(s)
}

// oneLine escapes control characters (newlines, tabs, escapes) of text that
// came from the server, so one record stays one line and a table stays aligned.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
