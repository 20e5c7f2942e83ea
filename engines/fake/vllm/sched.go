package vllm

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
)

// blockSize is vLLM's default KV cache block size (tokens per block).
const blockSize = 16

// sched admits at most max requests at once (vLLM --max-num-seqs); the rest
// wait in FIFO order. It also keeps what /metrics reports.
type sched struct {
	mu      sync.Mutex
	max     int
	busy    int
	waiters list.List // of *waiter
	// live are the running requests, for the KV cache usage gauge.
	live   map[*seq]struct{}
	blocks int // KV cache capacity in blocks

	// Counters (vllm:*_total).
	promptTokens int64
	genTokens    int64
	success      [3]int64 // by finished_reason: stop, length, abort
}

// Indexes of sched.success.
const (
	finishedStop = iota
	finishedLength
	finishedAbort
)

var finishedNames = [...]string{"stop", "length", "abort"}

// seq is one running request's KV footprint.
type seq struct {
	tokens atomic.Int64 // prompt + generated
}

type waiter struct {
	ch      chan struct{}
	granted bool
}

func (q *sched) init(slots, ctx int) {
	q.max = slots
	q.waiters.Init()
	q.live = make(map[*seq]struct{})
	// Room for every slot's whole context, as a KV cache sized for
	// --max-num-seqs × --max-model-len.
	q.blocks = slots * ((ctx + blockSize - 1) / blockSize)
}

// acquire waits for a slot in FIFO order; false when ctx ends or done
// closes first.
func (q *sched) acquire(ctx context.Context, done <-chan struct{}, sq *seq) bool {
	q.mu.Lock()
	if q.busy < q.max && q.waiters.Len() == 0 {
		q.busy++
		q.live[sq] = struct{}{}
		q.mu.Unlock()
		return true
	}
	w := &waiter{ch: make(chan struct{}, 1)}
	e := q.waiters.PushBack(w)
	q.mu.Unlock()
	select {
	case <-w.ch:
		q.mu.Lock()
		q.live[sq] = struct{}{}
		q.mu.Unlock()
		return true
	case <-ctx.Done():
	case <-done:
	}
	q.mu.Lock()
	if w.granted {
		q.mu.Unlock()
		q.release(nil, -1, 0)
		return false
	}
	q.waiters.Remove(e)
	q.mu.Unlock()
	return false
}

// release frees a slot (handing it to the first waiter) and counts the
// request: finished is finishedStop/Length/Abort, or -1 to count nothing.
func (q *sched) release(sq *seq, finished int, generated int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if sq != nil {
		delete(q.live, sq)
	}
	if finished >= 0 {
		q.success[finished]++
		q.genTokens += int64(generated)
	}
	if e := q.waiters.Front(); e != nil {
		w := q.waiters.Remove(e).(*waiter)
		w.granted = true
		w.ch <- struct{}{}
		return // the slot passes on: busy stays
	}
	q.busy--
}

func (q *sched) countPrompt(n int) {
	q.mu.Lock()
	q.promptTokens += int64(n)
	q.mu.Unlock()
}

func (q *sched) running() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.busy
}

func (q *sched) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiters.Len()
}

// snapshot is what /metrics reports.
type snapshot struct {
	running, waiting int
	kvUsage          float64
	promptTokens     int64
	genTokens        int64
	success          [3]int64
}

func (q *sched) snapshot() snapshot {
	q.mu.Lock()
	defer q.mu.Unlock()
	sn := snapshot{running: q.busy, waiting: q.waiters.Len(), promptTokens: q.promptTokens,
		genTokens: q.genTokens, success: q.success}
	used := 0
	for sq := range q.live {
		used += int((sq.tokens.Load() + blockSize - 1) / blockSize)
	}
	if q.blocks > 0 {
		sn.kvUsage = min(float64(used)/float64(q.blocks), 1)
	}
	return sn
}
