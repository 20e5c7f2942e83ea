package tgi

import (
	"time"

	"github.com/llama-orch/llama-orch/engines/fake/internal/slots"
)

// Failure labels of tgi_request_failure, in the order /metrics prints them.
const (
	failOverloaded = iota
	failValidation
	failGeneration
	failDropped
	failIncomplete
	nFailures
)

var failureLabels = [nFailures]string{"overloaded", "validation", "generation", "dropped", "incomplete"}

// sched is the admission and batch state plus the /metrics counters; every
// field is guarded by Server.mu.
type sched struct {
	// permits is the number of requests in flight (TGI's semaphore of
	// --max-concurrent-requests, held from admission to the end of the
	// stream).
	permits int
	// batch is the requests generating (busy) and those queued for it.
	batch slots.Pool
	// batchTokens is the sum of input + max_new_tokens over the batch
	// (tgi_batch_current_max_tokens).
	batchTokens int
	// TGI registers its gauges when it first sets them: a fresh router's
	// /metrics has no queue or batch gauge.
	queueSeen, batchSeen bool

	requestCount int64
	success      int64
	failures     [nFailures]int64
	queueTime    histogram // tgi_request_queue_duration
	timePerToken histogram // tgi_request_mean_time_per_token_duration
}

func (q *sched) init(batch int) {
	q.batch.SetSize(batch)
	q.queueTime.init()
	q.timePerToken.init()
}

// admit takes an in-flight permit, or reports that the replica is
// overloaded.
func (s *Server) admit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sched.permits >= s.maxConcurrent {
		s.sched.failures[failOverloaded]++
		return false
	}
	s.sched.permits++
	return true
}

// unadmit returns the permit.
func (s *Server) unadmit() {
	s.mu.Lock()
	s.sched.permits--
	s.mu.Unlock()
}

// count adds one to a tgi_request_failure label.
func (s *Server) count(label int) {
	s.mu.Lock()
	s.sched.failures[label]++
	s.mu.Unlock()
}

// enqueue queues a validated request for a batch slot: it returns nil when
// the slot is taken at once, else the waiter to wait on.
func (s *Server) enqueue() *slots.Waiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sched.queueSeen = true
	if s.sched.batch.TryTake() {
		s.sched.batchSeen = true
		return nil
	}
	return s.sched.batch.Push()
}

// leave takes a request that gave up waiting out of the queue, returning
// the slot if it had been granted meanwhile.
func (s *Server) leave(w *slots.Waiter) {
	s.mu.Lock()
	s.sched.batch.Leave(w)
	s.mu.Unlock()
}

// join adds a request's token budget to the batch.
func (s *Server) join(tokens int) {
	s.mu.Lock()
	s.sched.batchTokens += tokens
	s.mu.Unlock()
}

// free releases a batch slot, handing it to the first queued request, and
// the token budget.
func (s *Server) free(tokens int) {
	s.mu.Lock()
	s.sched.batchTokens -= tokens
	s.sched.batch.Release()
	s.mu.Unlock()
}

// succeeded records a finished request's timings.
func (s *Server) succeeded(queued, start, end time.Time, tokens int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sched.success++
	s.sched.queueTime.observe(start.Sub(queued).Seconds())
	if tokens > 0 {
		s.sched.timePerToken.observe(end.Sub(start).Seconds() / float64(tokens))
	}
}

// histogram is a Prometheus histogram with TGI's duration buckets: 35
// bounds from 0.0001·1.5 growing by 1.5 (router/src/server.rs).
type histogram struct {
	counts [nBuckets]int64
	sum    float64
	n      int64
}

const nBuckets = 35

var durationBuckets = func() (b [nBuckets]float64) {
	v := 0.0001
	for i := range b {
		v *= 1.5
		b[i] = v
	}
	return b
}()

func (h *histogram) init() { *h = histogram{} }

func (h *histogram) observe(v float64) {
	for i, le := range durationBuckets {
		if v <= le {
			h.counts[i]++
		}
	}
	h.sum += v
	h.n++
}
