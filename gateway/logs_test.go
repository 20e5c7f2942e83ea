package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llama-orch/llama-orch/internal/syncbuf"
)

// Logs (issue 6 item 4, SPEC §8): the mixed workload plus a drain and a
// reload, logged as zap JSON into a buffer. Each kind of line must carry
// the SPEC §8 fields that mean something for it (table below), and no line
// may contain an API key (plain or as its SHA-256 hex) or prompt text.

// syncBuffer is a zap sink tests can read while the server writes.
type syncBuffer = syncbuf.Buffer

// jsonLogger logs everything from debug up as production zap JSON.
func jsonLogger(buf *syncBuffer) *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), buf, zap.DebugLevel))
}

// logLines parses every line of buf as one JSON object.
func logLines(t *testing.T, buf *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// taskFields are the SPEC §8 fields every task log line carries: what is
// known of a task from its admission on.
var taskFields = []string{"job_id", "session_id", "tenant_id", "engine", "pool_id", "model_id", "priority",
	"queue_position", "predicted_start_ms", "deadline_ms"}

// ranFields are known once a task ran on a replica.
var ranFields = []string{"replica_id", "engine_version", "kv_warmth", "queue_time_ms"}

func fields(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// logExpect is what one kind of log line must carry.
type logExpect struct {
	name  string                    // subtest name
	msg   string                    // the line's "msg"
	match func(map[string]any) bool // which lines of msg (nil: all)
	want  []string
}

func fieldIs(k string, v any) func(map[string]any) bool {
	return func(m map[string]any) bool { return m[k] == v }
}

// logExpectations: the SPEC §8 fields meaningful for each line. A field a
// line cannot know is not asked for (no replica at admission, no tokens
// before the end); everything the gateway knows at that moment is.
var logExpectations = []logExpect{
	{name: "admission", msg: "task admitted", want: fields(taskFields, []string{"on_time_probability"})},
	{name: "start", msg: "task started", want: fields(taskFields, ranFields)},
	{name: "end", msg: "task finished", want: fields(taskFields, ranFields,
		[]string{"decode_time_ms", "tokens_in", "tokens_out", "on_time_probability", "preempted"})},
	{name: "cancel_queued", msg: "task canceled", match: fieldIs("state", "queued"), want: fields(taskFields, []string{"reason"})},
	{name: "cancel_running", msg: "task canceled", match: fieldIs("state", "running"), want: fields(taskFields, ranFields,
		[]string{"reason", "tokens_out", "preempted"})},
	{name: "failure", msg: "task failed", want: fields(taskFields, ranFields, []string{"code", "tokens_out", "preempted"})},
	{name: "preemption", msg: "task preempted", want: fields(taskFields, []string{"replica_id", "engine_version", "preempted"})},
	{name: "resumption", msg: "task resumed", want: fields(taskFields, []string{"replica_id", "engine_version", "preempted"})},
	{name: "retry", msg: "task moves to another replica", want: fields(taskFields, []string{"why", "failed_replica_id"})},
	{name: "reject", msg: "task rejected", match: func(m map[string]any) bool {
		return m["pool_id"] == poolFull || m["code"] == CodeAdmissionReject // the full queue's reject
	}, want: []string{"job_id", "session_id", "tenant_id", "engine", "pool_id", "model_id",
		"priority", "code"}},
	{name: "breaker_transition", msg: "breaker transition", want: []string{"engine", "pool_id", "replica_id", "engine_version",
		"model_id", "from", "to"}},
	{name: "drain", msg: "pool draining", want: []string{"engine", "pool_id", "model_id", "deadline_ms"}},
	{name: "drained", msg: "pool drained", want: []string{"engine", "pool_id", "model_id"}},
	{name: "reload", msg: "pool reloaded", want: []string{"engine", "pool_id", "model_id"}},
}

// TestLogs runs the mixed workload, a drain and a reload with a JSON
// logger and checks each line kind's fields and that no secret leaks.
func TestLogs(t *testing.T) {
	var buf syncBuffer
	oe := startMixed(t, jsonLogger(&buf))
	runMixedWorkload(t, oe)
	if r := oe.do("POST", "/v1/pools/"+poolFull+"/reload", testKey, `{"new_model_ref":"tiny.gguf","timeout_ms":2000}`); r.status != 200 {
		t.Fatalf("reload: %d %s", r.status, r.body)
	}
	if r := oe.do("POST", "/v1/pools/"+poolDrop+"/drain", testKey, `{"deadline_ms":20}`); r.status != 202 {
		t.Fatalf("drain: %d %s", r.status, r.body)
	}
	eventually(t, "the drain to end", func() bool { return strings.Contains(buf.String(), `"pool drained"`) })
	oe.shutdown() // everything the server logs is in buf

	lines := logLines(t, &buf)
	t.Run("SPEC8_fields_per_line", func(t *testing.T) {
		for _, x := range logExpectations {
			t.Run(x.name, func(t *testing.T) {
				n := 0
				missing := map[string]bool{}
				for _, l := range lines {
					if l["msg"] != x.msg || x.match != nil && !x.match(l) {
						continue
					}
					n++
					for _, f := range x.want {
						if _, ok := l[f]; !ok {
							missing[f] = true
						}
					}
				}
				if n == 0 {
					t.Fatalf("no %q log line (SPEC §8 wants one with %s)", x.msg, strings.Join(x.want, ", "))
				}
				if len(missing) > 0 {
					var ms []string
					for f := range missing {
						ms = append(ms, f)
					}
					sort.Strings(ms)
					t.Errorf("%q lines lack %s", x.msg, strings.Join(ms, ", "))
				}
			})
		}
	})

	t.Run("no_keys_or_prompts", func(t *testing.T) {
		all := buf.String()
		for _, secret := range []string{testKey, obsWrongKey, sha256Hex(testKey), sha256Hex(obsWrongKey), obsPrompt, "okapi-quartz-5813"} {
			if strings.Contains(all, secret) {
				t.Errorf("the logs contain %q", secret)
			}
		}
	})

	t.Run("task_ids_are_the_clients", func(t *testing.T) {
		for _, l := range lines {
			if id, ok := l["job_id"].(string); ok && id == "" {
				t.Errorf("%q: empty job_id", l["msg"])
			}
		}
	})
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
