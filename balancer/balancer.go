// Package balancer chooses the engine replica that runs a task (SPEC §5):
// a replica is a candidate while it is Available — Ready, not full, and its
// circuit breaker not open (OC-CORE-1010, ORCH-3040) — and among candidates a
// policy picks by load: LeastLoaded by Score (in-flight per slot blended with
// the engine's own queue, OC-CORE-1012, ORCH-3019), or BoundedLoad, which
// keeps a session on its replica and otherwise hashes the session onto a Ring
// with bounded loads, so several gateways agree without shared state
// (ORCH-3009, OC-CORE-1013).
//
// A Replica keeps its configuration apart from its shared atomic state, so a
// Pick reads no locks and allocates nothing. Health probes and engine metric
// scrapes live outside this package (the gateway passes their results in with
// SetReady, SetEngineLoad and ProbeResult), so balancer never imports engines.
package balancer

import (
	"math"
	"sync/atomic"
)

// Replica is one engine endpoint as the balancer sees it.
type Replica struct {
	// The state a Pick reads comes first, to share a cache line.
	slots    atomic.Int32
	inflight atomic.Int32
	ready    atomic.Bool
	// engine packs the engine-reported load into one word so a reader never
	// sees processing from one scrape and deferred from another: 0 means
	// not reported, else engineKnown | processing<<32 | deferred.
	engine atomic.Uint64
	// br is the circuit breaker, nil until SetBreaker (no breaker: always
	// allows).
	br atomic.Pointer[breaker]

	// ID and URL come from configuration and never change.
	ID  string
	URL string
	// Index is the replica's position in its pool (for callers that keep
	// per-replica state in parallel slices).
	Index int
	// Owner is the caller's own per-replica data (the gateway's adapter and
	// engine-reported state), set once before the replica is shared; the
	// balancer never reads it. It travels with the replica, so code holding
	// a replica of a set that was since replaced still finds its data.
	Owner any
}

// NewReplica returns a replica with the given slot count (minimum 1). It starts
// not ready: health checks make it ready.
func NewReplica(index int, id, url string, slots int) *Replica {
	r := &Replica{ID: id, URL: url, Index: index}
	r.SetSlots(slots)
	return r
}

// SetSlots changes the number of requests the replica decodes in parallel
// (minimum 1; values beyond int32 are capped rather than wrapped negative).
func (r *Replica) SetSlots(n int) {
	n = min(max(n, 1), math.MaxInt32)
	r.slots.Store(int32(n))
}

// Slots returns the replica's slot count.
func (r *Replica) Slots() int { return int(r.slots.Load()) }

// InFlight returns the number of requests holding a slot.
func (r *Replica) InFlight() int { return int(r.inflight.Load()) }

// SetReady records the outcome of the replica's health check.
func (r *Replica) SetReady(ok bool) { r.ready.Store(ok) }

// Ready reports whether the replica passed its last health check.
func (r *Replica) Ready() bool { return r.ready.Load() }

// Available reports whether the replica can take one more request now:
// Ready, not full, and its breaker (if any) neither open nor half-open with
// its trial request in flight. It reads atomics only (and the clock while
// the breaker is open), except once per open period, when the open time has
// run out: then it asks gobreaker, which moves to half-open (and
// OnTransition is called).
func (r *Replica) Available() bool {
	return r.free() && (r.closed() || r.breakerAllows())
}

// free is Ready and not full. free and closed inline, so Pick loops spell
// Available as free() && (closed() || breakerAllows()) and pay a call only
// for a replica whose breaker is not closed.
func (r *Replica) free() bool {
	return r.ready.Load() && r.inflight.Load() < r.slots.Load()
}

// Load is in-flight requests per slot, in [0, 1] while not oversubscribed.
// It is this gateway's view only; Score adds the engine's.
func (r *Replica) Load() float64 {
	return float64(r.inflight.Load()) / float64(r.slots.Load())
}

const (
	engineKnown = 1 << 63
	engineMax   = math.MaxInt32 // each reported value is capped to 31 bits
)

// SetEngineLoad records the load the engine itself reports (llama.cpp
// requests_processing / requests_deferred, scraped off the request path):
// processing is requests decoding now, deferred requests queued inside the
// engine waiting for a slot. Negative values count as 0.
func (r *Replica) SetEngineLoad(processing, deferred int) {
	p := uint64(min(max(processing, 0), engineMax))
	d := uint64(min(max(deferred, 0), engineMax))
	r.engine.Store(engineKnown | p<<32 | d)
}

// ClearEngineLoad forgets the engine-reported load (its scrape failed or the
// replica restarted), so Score falls back to in-flight per slot.
func (r *Replica) ClearEngineLoad() { r.engine.Store(0) }

// EngineLoad returns the last SetEngineLoad values; ok is false until the
// first one (or after ClearEngineLoad).
func (r *Replica) EngineLoad() (processing, deferred int, ok bool) {
	e := r.engine.Load()
	if e == 0 {
		return 0, 0, false
	}
	return int(e >> 32 & engineMax), int(e & engineMax), true
}

// units is the replica's load in requests: in-flight from this gateway,
// raised to the engine's own count when that is higher, plus the engine's
// queue (see Score).
func (r *Replica) units() int64 {
	n := int64(r.inflight.Load())
	if e := r.engine.Load(); e != 0 {
		n = max(n, int64(e>>32&engineMax)) + int64(e&engineMax)
	}
	return n
}

// Score is the replica's load per slot, in [0, ∞), lower is better:
//
//	without an engine report:  inflight / slots                           (= Load)
//	with one:                  (max(inflight, processing) + deferred) / slots
//
// max, not a sum, because the two count mostly the same requests: the
// engine's processing also includes other gateways' requests (so it can be
// higher), while the scrape is periodic and misses what this gateway
// dispatched since (so inflight can be higher); the larger is the better
// guess. deferred is queueing the slots cannot hide, so it adds, and pushes
// Score past 1 for an oversubscribed engine.
func (r *Replica) Score() float64 {
	return float64(r.units()) / float64(r.slots.Load())
}

// TryAcquire takes one slot if the replica is Ready and not full. It does not
// ask the breaker: call Allow for that (after TryAcquire, releasing the slot
// when Allow refuses), so a half-open trial is never taken without a slot.
func (r *Replica) TryAcquire() bool {
	for {
		n := r.inflight.Load()
		if !r.ready.Load() || n >= r.slots.Load() {
			return false
		}
		if r.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release returns a slot taken by TryAcquire. The counter never goes below
// zero, so a recovered BUG panic does not leave the replica admitting one
// request more than it has slots.
func (r *Replica) Release() {
	for {
		n := r.inflight.Load()
		if n <= 0 {
			panic("BUG: balancer: Release without Acquire on replica " + r.ID)
		}
		if r.inflight.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// Policy picks one replica for a request, or nil when none is available.
// prefer, when not nil, is a replica the caller would like (the session's last
// replica, whose KV cache is warm).
type Policy interface {
	Pick(replicas []*Replica, prefer *Replica) *Replica
}

// LeastLoaded picks the Available replica with the lowest Score (in-flight per
// slot blended with the engine-reported load), keeping the preferred replica
// while it is Available (session affinity v0). Ties go to the lowest index,
// so the choice is deterministic.
type LeastLoaded struct{}

var _ Policy = LeastLoaded{}

// Pick implements Policy.
func (LeastLoaded) Pick(replicas []*Replica, prefer *Replica) *Replica {
	if prefer != nil && prefer.Available() {
		return prefer
	}
	var best *Replica
	var bestUnits, bestSlots int64
	for _, r := range replicas {
		if !r.free() || !r.closed() && !r.breakerAllows() {
			continue
		}
		// Score compared without dividing: u/s < bu/bs ⇔ u·bs < bu·s
		// (both products < 2^63: units < 2^32, slots < 2^31).
		u, s := r.units(), int64(r.slots.Load())
		l, bl := u*bestSlots, bestUnits*s
		// Ties compare Index, not slice order, so callers need not sort.
		if best == nil || l < bl || (l == bl && r.Index < best.Index) {
			best, bestUnits, bestSlots = r, u, s
		}
	}
	return best
}
