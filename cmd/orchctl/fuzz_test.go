package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// hasControl reports a control character other than the line ends allowed.
func hasControl(s string, allowNewline bool) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) && !(allowNewline && r == '\n')
	})
}

// FuzzFormatEvent: any event data renders as exactly one line without
// control characters, starting with the event's "at" when it has a clean one.
func FuzzFormatEvent(f *testing.F) {
	for _, s := range [][2]string{
		{"hello", evHello}, {"breaker", evBreaker}, {"replica", evReplica}, {"drain", evDrain},
		{"reload", evReload}, {"config", evConfig},
		{"config", `{"type":"config","at":"2026-01-02T15:04:10.000Z","ok":false,"reason":"pools[0].queue.capacity: must be > 0 (line 12)","changes":[]}`},
		{"", `{"type":1,"at":null,"pool_id":{"x":[1,2]},"ok":"yes","deadline_ms":"soon"}`},
		{"x", "\x00\t\r\n"}, {"", "[]"}, {"", "null"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, event, data []byte) {
		line := formatEvent(event, data)
		if hasControl(line, false) {
			t.Fatalf("control character in %q", line)
		}
		var m map[string]json.RawMessage // exact keys: "At" is not "at"
		var at string
		if json.Unmarshal(data, &m) == nil && json.Unmarshal(m["at"], &at) == nil &&
			at != "" && !hasControl(at, false) && !strings.HasPrefix(line, at) {
			t.Fatalf("line %q does not start with at %q", line, at)
		}
	})
}

// FuzzWriteStatus: any /v1/replicasets answer that decodes renders one line
// per pool and per replica (at least one per pool), with no stray controls.
func FuzzWriteStatus(f *testing.F) {
	f.Add([]byte(`{"replicasets":[{"pool_id":"llama-demo","engine":"llamacpp","engine_version":"b4500","model":"tiny-llama","ready":true,"draining":false,"queue_depth":0,` +
		`"replicas":[{"id":"r0","url":"http://127.0.0.1:18081","state":"ready","breaker":"closed","inflight":0,"slots":2,"engine_load":{"requests_processing":0,"requests_deferred":0},"last_error":"","engine_version":"b4500"}],` +
		`"slo":{"ttft_ms":{"p50":0,"p95":0,"p99":0}}}]}`))
	f.Add([]byte(`{"replicasets":[{"pool_id":"a\nb","replicas":[]},{"pool_id":"c","queue":{"capacity":64},"replicas":[{"id":"r\t0","last_error":"x\r\ny","engine_load":{"z":1.5}}]}]}`))
	f.Add([]byte(`{"replicasets":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v replicaSets
		if json.Unmarshal(data, &v) != nil {
			return
		}
		var buf bytes.Buffer
		if err := writeStatus(&buf, v.ReplicaSets); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if hasControl(out, true) {
			t.Fatalf("control character in %q", out)
		}
		want := 1 // "no pools"
		if len(v.ReplicaSets) > 0 {
			want = 1 + len(v.ReplicaSets) + 1 + 1 // header, pools, blank, header
			for _, s := range v.ReplicaSets {
				want += max(1, len(s.Replicas))
			}
		}
		if got := strings.Count(out, "\n"); got != want {
			t.Fatalf("%d lines, want %d:\n%s", got, want, out)
		}
	})
}

// FuzzStatusError: any error answer renders as one line naming its status.
func FuzzStatusError(f *testing.F) {
	f.Add(404, []byte(`{"code":"NOT_FOUND","message":"no pool \"x\"","retriable":false}`+"\n"))
	f.Add(409, []byte(`{"code":"RELOAD_FAILED","message":"replica r0 reports model \"a\", not \"b\"","pool_id":"p","retriable":false}`))
	f.Add(400, []byte(`{"code":"INVALID_PARAMS","message":"2 problems","problems":[{"path":"pools[0].queue.capacity","line":12,"message":"must be > 0"}]}`))
	f.Add(502, []byte("<html>\n<body>Bad Gateway</body>\n</html>"))
	f.Add(401, []byte(""))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		c := &client{key: "k"}
		e := c.newStatusError("op", &reply{status: status, header: http.Header{"X-Correlation-Id": {"c\n1"}}, body: body})
		msg := e.Error()
		if hasControl(msg, false) {
			t.Fatalf("control character in %q", msg)
		}
		if !strings.HasPrefix(msg, "op: ") || !strings.Contains(msg, strconv.Itoa(status)) {
			t.Fatalf("message %q lacks the op or status %d", msg, status)
		}
	})
}
