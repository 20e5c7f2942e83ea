package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/llama-orch/llama-orch/sse"
)

// Watch reconnect and liveness. orchd sends `: ping` every 15 s, so a stream
// silent for watchIdle is dead even if TCP has not noticed.
const (
	watchMinBackoff = 250 * time.Millisecond
	watchMaxBackoff = 5 * time.Second
	watchIdle       = 45 * time.Second
	watchMaxFrame   = 1 << 20
)

func cmdWatch(ctx context.Context, c *command) error {
	asJSON := c.fs.Bool("json", false, "print each event's JSON on one line")
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
	w := &watcher{c: c.client, out: c.stdout, errw: c.stderr, json: *asJSON,
		minBackoff: watchMinBackoff, maxBackoff: watchMaxBackoff, idle: watchIdle}
	return w.run(ctx)
}

// watcher follows GET /v1/events across reconnects.
type watcher struct {
	c          *client
	out, errw  io.Writer
	json       bool
	minBackoff time.Duration
	maxBackoff time.Duration
	idle       time.Duration
}

// errIdle ends a stream that stayed silent past the idle bound.
var errIdle = errors.New("no data (not even a keep-alive) for too long")

// errStreamEnded is a stream orchd closed cleanly.
var errStreamEnded = errors.New("orchd closed the stream")

// run follows the event stream until ctx ends (nil). The first connection
// must succeed: failing it returns the error (unreachable: exit 2). After
// that every loss is retried with backoff, except an auth refusal.
func (w *watcher) run(ctx context.Context) error {
	everConnected := false
	backoff := w.minBackoff
	for {
		connected, err := w.stream(ctx, everConnected)
		if ctx.Err() != nil {
			return nil
		}
		var se *statusError
		if errors.As(err, &se) && (se.status == http.StatusUnauthorized || se.status == http.StatusForbidden) {
			return err
		}
		if !everConnected && !connected {
			return err
		}
		everConnected = true
		if connected {
			backoff = w.minBackoff // it worked for a while: start over
		}
		fmt.Fprintf(w.errw, "orchctl: event stream from %s lost: %v; reconnecting in %s\n", w.c.base, oneLine(err.Error()), backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, w.maxBackoff)
	}
}

// stream reads one connection's events until it fails. connected reports
// whether orchd answered 200 (the stream was up).
func (w *watcher) stream(ctx context.Context, reconnect bool) (connected bool, err error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := w.c.newRequest(sctx, http.MethodGet, "/v1/events", "", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	// Headers must come within callTimeout; the body may then idle up to w.idle.
	headers := time.AfterFunc(callTimeout, func() { cancel(fmt.Errorf("no answer within %s", callTimeout)) })
	resp, err := w.c.hc.Do(req)
	headers.Stop()
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if cause := context.Cause(sctx); cause != nil {
			err = cause
		}
		return false, &unreachableError{url: w.c.base, err: innermost(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return false, w.c.newStatusError("watch", &reply{status: resp.StatusCode, header: resp.Header, body: b})
	}
	if reconnect {
		fmt.Fprintf(w.errw, "orchctl: reconnected to %s (events during the gap are not replayed; orchctl status shows the current state)\n", w.c.base)
	}
	body := &idleReader{r: resp.Body, timer: time.AfterFunc(w.idle, func() { cancel(errIdle) }), idle: w.idle}
	defer body.stop()
	rd := sse.NewReader(body, watchMaxFrame)
	var f sse.Frame
	for {
		err := rd.Next(&f)
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if cause := context.Cause(sctx); cause != nil {
				err = cause
			} else if err == io.EOF {
				err = errStreamEnded
			}
			return true, err
		}
		if f.Comment || f.Data == nil {
			continue // keep-alive
		}
		if w.json {
			line := f.Data
			if compact, ok := compactJSON(f.Data); ok {
				line = compact
			}
			_, err = fmt.Fprintf(w.out, "%s\n", line)
		} else {
			_, err = fmt.Fprintln(w.out, formatEvent(f.Event, f.Data))
		}
		if err != nil {
			return true, fmt.Errorf("cannot write: %w", err)
		}
	}
}

// idleReader re-arms timer on every read that returns data.
type idleReader struct {
	r     io.Reader
	mu    sync.Mutex
	timer *time.Timer
	idle  time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.mu.Lock()
		r.timer.Reset(r.idle)
		r.mu.Unlock()
	}
	return n, err
}

func (r *idleReader) stop() {
	r.mu.Lock()
	r.timer.Stop()
	r.mu.Unlock()
}

// compactJSON returns data as one line when it is JSON.
func compactJSON(data []byte) ([]byte, bool) {
	var buf bytes.Buffer
	if json.Compact(&buf, data) != nil {
		return nil, false
	}
	return buf.Bytes(), true
}

// formatEvent renders one ops event as
//
//	AT  TYPE  POOL[/REPLICA]  DETAILS
//
// from its JSON (SPEC §14: {"type","at","pool_id"?,"replica_id"?,…}); fields
// it does not know are appended as key=value so nothing is hidden.
func formatEvent(event, data []byte) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		typ := string(event)
		if typ == "" {
			typ = "message"
		}
		return fmt.Sprintf("%-24s  %-7s  %-20s  %s", "-", oneLine(typ), "-", oneLine(strings.TrimSpace(string(data))))
	}
	used := map[string]bool{"type": true, "at": true, "pool_id": true, "replica_id": true}
	str := func(k string) string {
		var s string
		if json.Unmarshal(m[k], &s) == nil {
			used[k] = true
		}
		return s
	}
	typ := str("type")
	if typ == "" {
		typ = string(event)
	}
	at := str("at")
	if at == "" {
		at = "-"
	}
	target := str("pool_id")
	if r := str("replica_id"); r != "" {
		target += "/" + r
	}
	if target == "" {
		target = "-"
	}
	var details []string
	switch typ {
	case "breaker":
		from, to := str("from"), str("to")
		if from != "" || to != "" {
			details = append(details, cell(from)+" -> "+cell(to))
		}
	case "replica":
		st := str("state")
		if e := str("last_error"); e != "" {
			st += ": " + e
		}
		if st != "" {
			details = append(details, st)
		}
	case "drain":
		var ms int64
		if json.Unmarshal(m["deadline_ms"], &ms) == nil && m["deadline_ms"] != nil {
			used["deadline_ms"] = true
			details = append(details, "deadline "+(time.Duration(ms)*time.Millisecond).String())
		}
	case "reload":
		d := "model " + cell(str("model"))
		if ok, known := boolField(m, "ok", used); known && ok {
			d += " ok"
		} else if known {
			d += " failed"
			if r := str("reason"); r != "" {
				d += ": " + r
			}
		}
		details = append(details, d)
	case "model_state":
		target = cell(str("model"))
		d := cell(str("to"))
		if from := str("from"); from != "" {
			d = from + " -> " + d
		}
		var ms int64
		if json.Unmarshal(m["deadline_ms"], &ms) == nil && m["deadline_ms"] != nil {
			used["deadline_ms"] = true
			if ms > 0 {
				d += " (deadline " + (time.Duration(ms) * time.Millisecond).String() + ")"
			}
		}
		details = append(details, d)
	case "model_verification":
		target = cell(str("model"))
		if ok, known := boolField(m, "ok", used); known && ok {
			details = append(details, "verified")
		} else if known {
			details = append(details, "verification failed: "+cell(str("reason")))
		}
	case "config":
		var changes []string
		if json.Unmarshal(m["changes"], &changes) == nil && m["changes"] != nil {
			used["changes"] = true
		}
		if ok, known := boolField(m, "ok", used); known && ok {
			d := "applied"
			if len(changes) > 0 {
				d += ": " + strings.Join(changes, ", ")
			} else if m["changes"] != nil {
				d += ": no changes"
			}
			details = append(details, d)
		} else if known {
			d := "rejected"
			if r := str("reason"); r != "" {
				d += ": " + r
			}
			details = append(details, d)
		}
	}
	var extra []string
	for k, v := range m {
		if !used[k] {
			extra = append(extra, k+"="+rawValue(v))
		}
	}
	sort.Strings(extra)
	details = append(details, extra...)
	line := fmt.Sprintf("%-24s  %-7s  %-20s  %s", oneLine(at), oneLine(typ), oneLine(target), oneLine(strings.Join(details, " ")))
	return strings.TrimRight(line, " ")
}

// boolField reads m[k] as a bool; known is false when it is absent or not a bool.
func boolField(m map[string]json.RawMessage, k string, used map[string]bool) (v, known bool) {
	if json.Unmarshal(m[k], &v) == nil && m[k] != nil {
		used[k] = true
		return v, true
	}
	return false, false
}

// rawValue renders a JSON value for key=value: strings bare when they hold
// no space or quote, everything else as compact JSON.
func rawValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		if s != "" && !strings.ContainsAny(s, " \"=") {
			return s
		}
		return strconv.Quote(s)
	}
	if b, ok := compactJSON(v); ok {
		return string(b)
	}
	return string(v)
}
