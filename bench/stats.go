package bench

import (
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: microsecond resolution up to 10 minutes, 3 significant
// digits (0.1 % error at any magnitude).
const (
	histMinUs  = 1
	histMaxUs  = int64(10 * time.Minute / time.Microsecond)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinUs, histMaxUs, histDigits)
}

// sample is what one request measured.
type sample struct {
	ttft   time.Duration   // request sent → first token (0: no token arrived)
	itl    []time.Duration // gaps between consecutive tokens
	total  time.Duration   // request sent → terminal event (successful requests)
	tokens int
	kind   string // "" for success, else the error kind
}

// shard is one lock's worth of histograms; clients are spread over shards so
// thousands of them record without contending on one mutex (one lock per
// request, not per token).
type shard struct {
	mu               sync.Mutex
	ttft, itl, total *hdrhistogram.Histogram
	requests, tokens int64
	errors           map[string]int64
	_                [64]byte // keep neighbouring shards' locks off one cache line
}

// recorder aggregates samples of one phase.
type recorder struct {
	shards []shard
}

func newRecorder(n int) *recorder {
	r := &recorder{shards: make([]shard, n)}
	for i := range r.shards {
		s := &r.shards[i]
		s.ttft, s.itl, s.total = newHist(), newHist(), newHist()
		s.errors = map[string]int64{}
	}
	return r
}

func us(d time.Duration) int64 {
	v := d.Microseconds()
	if v < histMinUs {
		return histMinUs // sub-microsecond gaps (tokens read in one go) count as 1 µs
	}
	return min(v, histMaxUs)
}

func (r *recorder) record(worker int, s *sample) {
	sh := &r.shards[worker%len(r.shards)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.requests++
	sh.tokens += int64(s.tokens)
	if s.tokens > 0 {
		_ = sh.ttft.RecordValue(us(s.ttft))
	}
	for _, g := range s.itl {
		_ = sh.itl.RecordValue(us(g))
	}
	if s.kind != "" {
		sh.errors[s.kind]++
		return
	}
	_ = sh.total.RecordValue(us(s.total))
}

// merged is a phase's aggregate.
type merged struct {
	requests, tokens int64
	errors           map[string]int64
	ttft, itl, total *hdrhistogram.Histogram
}

func (r *recorder) merge() merged {
	m := merged{errors: map[string]int64{}, ttft: newHist(), itl: newHist(), total: newHist()}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		m.requests += s.requests
		m.tokens += s.tokens
		for k, v := range s.errors {
			m.errors[k] += v
		}
		m.ttft.Merge(s.ttft)
		m.itl.Merge(s.itl)
		m.total.Merge(s.total)
		s.mu.Unlock()
	}
	return m
}

// Percentiles are latency percentiles in milliseconds (µs resolution).
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	ms := func(v int64) float64 { return round3(float64(v) / 1000) }
	return Percentiles{
		P50: ms(h.ValueAtQuantile(50)),
		P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)),
		Max: ms(h.Max()),
	}
}

// Sub returns p − q, percentile by percentile.
func (p Percentiles) Sub(q Percentiles) Percentiles {
	return Percentiles{
		P50: round3(p.P50 - q.P50), P90: round3(p.P90 - q.P90),
		P99: round3(p.P99 - q.P99), Max: round3(p.Max - q.Max),
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
