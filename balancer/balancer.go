// Package balancer chooses the engine replica that runs a task: only Ready
// replicas with a free slot are candidates, and among them the least loaded by
// in-flight requests per slot wins (SPEC §5, OC-CORE-1010/1012).
//
// A Replica keeps its configuration apart from its shared atomic state, so a
// Pick reads no locks. Health probes live outside this package (the gateway
// passes their results in with SetReady), so balancer never imports engines.
package balancer

import (
	"math"
	"sync/atomic"
)

// Replica is one engine endpoint as the balancer sees it.
type Replica struct {
	// ID and URL come from configuration and never change.
	ID  string
	URL string
	// Index is the replica's position in its pool (for callers that keep
	// per-replica state in parallel slices).
	Index int

	slots    atomic.Int32
	inflight atomic.Int32
	ready    atomic.Bool
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
// Ready and not full.
func (r *Replica) Available() bool {
	return r.ready.Load() && r.inflight.Load() < r.slots.Load()
}

// Load is in-flight requests per slot, in [0, 1] while not oversubscribed.
func (r *Replica) Load() float64 {
	return float64(r.inflight.Load()) / float64(r.slots.Load())
}

// TryAcquire takes one slot if the replica is Available.
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

// LeastLoaded picks the available replica with the lowest in-flight per slot,
// keeping the preferred replica while it is available (session affinity v0).
// Ties go to the lowest index, so the choice is deterministic.
type LeastLoaded struct{}

var _ Policy = LeastLoaded{}

// Pick implements Policy.
func (LeastLoaded) Pick(replicas []*Replica, prefer *Replica) *Replica {
	if prefer != nil && prefer.Available() {
		return prefer
	}
	var best *Replica
	var bestLoad float64
	for _, r := range replicas {
		if !r.Available() {
			continue
		}
		l := r.Load()
		// Ties compare Index, not slice order, so callers need not sort.
		if best == nil || l < bestLoad || (l == bestLoad && r.Index < best.Index) {
			best, bestLoad = r, l
		}
	}
	return best
}
