package gateway

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// TestStalledReaderIsDropped: a client that keeps its connection open but
// stops reading is dropped after streamWriteTimeout, on the canonical stream
// and on the OpenAI door; its task, left with no reader, is abandoned after
// detach_grace_ms instead of decoding for nobody. The client talks over an
// in-memory connection, which buffers only a few writes, so the server's
// writes really block. Without the deadline the task would run its 3,000
// tokens to `end`.
func TestStalledReaderIsDropped(t *testing.T) {
	defer func(d time.Duration) { streamWriteTimeout = d }(streamWriteTimeout)
	streamWriteTimeout = 200 * time.Millisecond
	e := newEnv(t, func(c *config.Config) {
		c.DetachGraceMs = 100
		c.OpenAICompat = true
	}, fake.Options{Slots: 2, ITL: time.Millisecond})
	ln := fasthttputil.NewInmemoryListener()
	go func() { _ = e.srv.Serve(ln) }() // e's shutdown stops it
	send := func(req string) net.Conn {
		c, err := ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		return c // never read
	}
	abandoned := func(id string) {
		t.Helper()
		eventually(t, "task "+id+" to end", func() bool {
			tk, ok := e.srv.tasks.get(taskKey{"t1", id})
			return ok && tk.log.Closed()
		})
		evs := e.openStream(id, testKey).all(t)
		last := evs[len(evs)-1]
		if last.name != "error" || last.data["code"] != CodeCanceled || !strings.Contains(fmt.Sprint(last.data["message"]), "abandoned") {
			t.Fatalf("the task of the stalled reader ended with %s %v", last.name, last.data)
		}
	}

	t.Run("canonical stream", func(t *testing.T) {
		id := newID()
		if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, maxTokens: 3000}.body()); r.status != 202 {
			t.Fatalf("enqueue: %d %s", r.status, r.body)
		}
		send("GET /v1/tasks/" + id + "/stream HTTP/1.1\r\nHost: orchd\r\nAuthorization: Bearer " + testKey + "\r\n\r\n")
		abandoned(id)
	})
	t.Run("OpenAI door", func(t *testing.T) {
		body := `{"model":"m","prompt":"Hello","max_tokens":3000,"stream":true}`
		send(fmt.Sprintf("POST /v1/completions HTTP/1.1\r\nHost: orchd\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", testKey, len(body), body))
		var id string
		eventually(t, "the door's task to run", func() bool {
			for _, tk := range e.srv.tasks.live() {
				if !tk.log.Closed() {
					id = tk.key.id
					return true
				}
			}
			return false
		})
		abandoned(id)
	})
}
