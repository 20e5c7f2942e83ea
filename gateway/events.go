package gateway

import (
	"bufio"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/sse"
)

// opsEvent is one entry of the ops feed, GET /v1/events (SPEC §14): breaker
// transitions, replica state changes, drains, reloads and config applies.
type opsEvent struct {
	Seq        uint64   `json:"-"`
	Type       string   `json:"type"`
	At         string   `json:"at"`
	PoolID     string   `json:"pool_id,omitempty"`
	ReplicaID  string   `json:"replica_id,omitempty"`
	From       string   `json:"from,omitempty"`
	To         string   `json:"to,omitempty"`
	State      string   `json:"state,omitempty"`
	LastError  string   `json:"last_error,omitempty"`
	DeadlineMs *int64   `json:"deadline_ms,omitempty"`
	Model      string   `json:"model,omitempty"`
	OK         *bool    `json:"ok,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	Changes    []string `json:"changes,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// eventHub fans ops events out to the feed's subscribers. Publishing never
// blocks: a subscriber whose buffer is full is dropped (its stream ends and
// the client reconnects), so a stuck ops page cannot slow the gateway.
type eventHub struct {
	mu   sync.Mutex
	seq  uint64
	subs map[chan opsEvent]struct{}
}

const eventBuffer = 256

func newEventHub() *eventHub { return &eventHub{subs: make(map[chan opsEvent]struct{})} }

func (h *eventHub) publish(ev opsEvent) {
	ev.At = time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	ev.Seq = h.seq
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
			delete(h.subs, ch)
			close(ch)
		}
	}
}

func (h *eventHub) subscribe() chan opsEvent {
	ch := make(chan opsEvent, eventBuffer)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch
}

func (h *eventHub) unsubscribe(ch chan opsEvent) {
	h.mu.Lock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
	h.mu.Unlock()
}

func (h *eventHub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// handleEvents is GET /v1/events (control role; header or ops-page cookie):
// a live SSE feed of ops events, starting with `hello`.
func (s *Server) handleEvents(ctx *fasthttp.RequestCtx) {
	if _, ok := s.requireControlRead(ctx); !ok {
		return
	}
	ch := s.events.subscribe()
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	keep := s.keep
	stop := s.stop
	log := s.log
	// An ops client that stops reading is dropped after streamWriteTimeout
	// (the feed drops it sooner if events pile up); the writer runs until
	// the response ends, so ctx outlives it.
	dl := writeDeadline{ctx: ctx}
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.events.unsubscribe(ch)
		defer recoverLog(log, "events stream")
		var buf []byte
		write := func(ev opsEvent) bool {
			data, err := json.Marshal(ev)
			if err != nil {
				return false
			}
			buf = append(buf[:0], "id: "...)
			buf = strconv.AppendUint(buf, ev.Seq, 10)
			buf = append(buf, "\nevent: "...)
			buf = append(buf, ev.Type...)
			buf = append(buf, "\ndata: "...)
			buf = append(buf, data...)
			buf = append(buf, "\n\n"...)
			dl.arm()
			if _, err := w.Write(buf); err != nil {
				return false
			}
			return w.Flush() == nil
		}
		if !write(opsEvent{Type: "hello", At: time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")}) {
			return
		}
		ping := time.NewTicker(keep)
		defer ping.Stop()
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					return // too slow: dropped
				}
				if !write(ev) {
					return
				}
			case <-ping.C:
				dl.arm()
				if _, err := w.Write(sse.AppendComment(buf[:0], "ping")); err != nil || w.Flush() != nil {
					return
				}
			case <-stop:
				return
			}
		}
	})
}

// replicaEvent publishes a replica's readiness change.
func (s *Server) replicaEvent(p *pool, replicaID string, ready bool, cause string) {
	state := "ready"
	if !ready {
		state = "unready"
		if st := p.set(); st != nil {
			for i, r := range st.replicas {
				if r.ID == replicaID && st.states[i].heldOut.Load() {
					state = "held_out"
				}
			}
		}
	}
	s.events.publish(opsEvent{Type: "replica", PoolID: p.id, ReplicaID: replicaID, State: state, LastError: cause})
	if ce := s.log.Check(zap.DebugLevel, "replica event"); ce != nil {
		ce.Write(zap.String("pool_id", p.id), zap.String("replica_id", replicaID), zap.String("state", state))
	}
}
