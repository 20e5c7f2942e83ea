package vllm

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/llama-orch/llama-orch/engines/fake/internal/slots"
)

// blockSize is vLLM's default KV cache block size (tokens per block).
const blockSize = 16

// sched admits at most Slots requests at once (vLLM --max-num-seqs); the
// rest wait in FIFO order. It also keeps what /metrics reports.
type sched struct {
	mu    sync.Mutex
	slots slots.Pool
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

func (q *sched) init(nSlots, ctx int) {
	q.slots.SetSize(nSlots)
	q.live = make(map[*seq]struct{})
	// Room for every slot's whole context, as a KV cache sized for
	// --max-num-seqs × --max-model-len.
	q.blocks = nSlots * ((ctx + blockSize - 1) / blockSize)
}

// acquire waits for a slot in FIFO order; false when ctx ends or done
// closes first.
func (q *sched) acquire(ctx context.Context, done <-chan struct{}, sq *seq) bool {
	if !q.slots.Acquire(&q.mu, ctx.Done(), done) {
		return false
	}
	q.mu.Lock()
	q.live[sq] = struct{}{}
	q.mu.Unlock()
	return true
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
	q.slots.Release()
}

func (q *sched) countPrompt(n int) {
	q.mu.Lock()
	q.promptTokens += int64(n)
	q.mu.Unlock()
}

func (q *sched) running() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.slots.Busy()
}

func (q *sched) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.slots.Waiting()
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
	sn := snapshot{running: q.slots.Busy(), waiting: q.slots.Waiting(), promptTokens: q.promptTokens,
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
