package fake

import (
	"errors"
	"sync/atomic"

	"github.com/llama-orch/llama-orch/engines/fake/internal/slots"
)

// errGone: the client left, or the server closed, while a request waited.
var errGone = errors.New("fake: request abandoned")

// slot is one llama.cpp slot: a sequence in the KV cache.
type slot struct {
	busy bool
	used bool
	// lastUsed orders idle slots for least-recently-used choice.
	lastUsed uint64
	// cache is the token ids the slot's KV holds: the last prompt and
	// its output minus the last token.
	cache []int32

	// The last task, shown by /slots.
	idTask           int64
	nPrompt          int
	nPromptProcessed int
	nPromptCache     int
	params           params
	// nDecoded is written by the generating goroutine per token and read
	// by /slots.
	nDecoded atomic.Int64
}

// stats are llama.cpp's /metrics counters.
type stats struct {
	promptTokens       int64
	promptCached       int64
	promptSeconds      float64
	predicted          int64
	predictedSeconds   float64
	nDecode            int64
	nTokensMax         int64
	busySlotsPerDecode int64 // sum over decodes of busy slots
	// Since the last scrape, for the throughput gauges.
	windowPrompt        int64
	windowPromptSeconds float64
	windowPred          int64
	windowPredSeconds   float64
}

// sched is the slot scheduler; every field is guarded by Server.mu.
type sched struct {
	slots   []slot
	busy    int
	waiters slots.Queue // deferred tasks, FIFO
	seq     uint64
	stats   stats
}

func (q *sched) init(n int) {
	q.slots = make([]slot, n)
}

// pick returns an idle slot for a task, or -1. A task naming a slot gets
// only that one; otherwise the idle slot whose cache shares the longest
// prefix with the prompt wins when it covers over 10 % of the prompt (llama.cpp's
// similarity threshold), else the least recently used.
func (q *sched) pick(want int, ids []int32) int {
	if want >= 0 {
		if q.slots[want].busy {
			return -1
		}
		return want
	}
	best, bestLCP, lru := -1, 0, -1
	for i := range q.slots {
		sl := &q.slots[i]
		if sl.busy {
			continue
		}
		if n := lcp(sl.cache, ids); n > bestLCP && 10*n > len(ids) {
			best, bestLCP = i, n
			if n == len(ids) {
				return best // nothing can share more
			}
		}
		if lru < 0 || sl.lastUsed < q.slots[lru].lastUsed {
			lru = i
		}
	}
	if best >= 0 {
		return best
	}
	return lru
}

func lcp(a, b []int32) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

func (q *sched) take(id int) {
	q.slots[id].busy = true
	q.busy++
}

// free marks a slot idle and hands it to the first deferred task that can
// use it.
func (q *sched) free(id int) {
	sl := &q.slots[id]
	sl.busy = false
	sl.nDecoded.Store(0)
	q.busy--
	q.seq++
	sl.lastUsed = q.seq
	if q.waiters.Grant(id) {
		q.take(id)
	}
}

// acquire waits for a slot in FIFO order (llama.cpp defers a task while no
// slot is free) until the slot is granted, gone closes or the server
// closes.
func (s *Server) acquire(want int, ids []int32, gone <-chan struct{}) (int, error) {
	s.mu.Lock()
	if s.g.Closed() {
		s.mu.Unlock()
		return -1, errGone
	}
	if id := s.sched.pick(want, ids); id >= 0 {
		s.sched.take(id)
		s.mu.Unlock()
		return id, nil
	}
	w := s.sched.waiters.Push(want)
	s.mu.Unlock()
	if id, ok := w.Wait(gone, s.g.Done()); ok {
		return id, nil
	}
	s.mu.Lock()
	if id, granted := s.sched.waiters.Leave(w); granted {
		// Granted while we were leaving: give it back.
		s.sched.free(id)
	}
	s.mu.Unlock()
	return -1, errGone
}
