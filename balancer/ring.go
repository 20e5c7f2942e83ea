package balancer

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// Defaults of BoundedLoad and NewRing.
const (
	// DefaultFactor is the load bound c of consistent hashing with bounded
	// loads: no replica takes a request that would lift it above c times the
	// average (SPEC §13 balancer.affinity_load_factor).
	DefaultFactor = 1.25
	// DefaultVnodes is how many points each replica gets on a Ring. A
	// replica's share of the ring deviates from even by about 1/√vnodes
	// (one standard deviation): 1024 keeps 8 replicas within ±15 % of even
	// with a wide margin, at 8 bytes a point (64 KiB for 8 replicas, 2 MiB
	// for 256).
	DefaultVnodes = 1024
)

// KeyOf hashes a session id to a ring key: 64-bit FNV-1a, then murmur3's
// finalizer so nearby ids land far apart. The value is stable across
// processes and versions, which is what lets several gateways agree.
func KeyOf(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return mix64(h)
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// pointHash places virtual node v of a replica: FNV-1a over the ID, a '#'
// and v's four little-endian bytes, then the finalizer; the ring keeps the
// top 32 bits. prefix is idPrefix(ID), computed once per replica.
func pointHash(prefix uint64, v uint32) uint32 {
	h := prefix
	for range 4 {
		h = (h ^ uint64(v&0xff)) * fnvPrime
		v >>= 8
	}
	return uint32(mix64(h) >> 32)
}

// idPrefix is the FNV-1a state after a replica's ID and '#'.
func idPrefix(id string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * fnvPrime
	}
	return (h ^ '#') * fnvPrime
}

// Ring is a consistent-hash ring over a replica set, built once per set.
// Points depend only on replica IDs (which must be unique), so Rings built
// from the same replicas in any order, in any process, pick alike.
type Ring struct {
	replicas []*Replica // as given to NewRing; point.idx indexes it
	points   []point    // sorted by hash; 32 bits place 2^32 positions, ample
	// index[b] is the first point whose hash has top indexBits b, so a
	// search starts in a bucket of a few points instead of bisecting the
	// whole ring (which for large sets misses the cache at every step).
	index []uint32
	// seen recycles visited-sets for sets too large for Pick's stack.
	seen sync.Pool
}

type point struct {
	hash uint32 // top 32 bits of the point's 64-bit hash
	idx  uint32
}

// stackWords is the visited-set Pick keeps on its stack: 512 replicas.
const stackWords = 8

// indexBits sizes Ring.index: 4097 entries, 16 KiB.
const indexBits = 12

// NewRing builds a ring with vnodes points per replica (DefaultVnodes when
// vnodes ≤ 0). It keeps its own copy of the slice, not of the replicas: their
// live state (readiness, load, breaker) is read at each Pick.
func NewRing(replicas []*Replica, vnodes int) *Ring {
	if vnodes <= 0 {
		vnodes = DefaultVnodes
	}
	g := &Ring{replicas: slices.Clone(replicas)}
	// Points sort as hash<<32 | rank, rank being the replica's place in
	// (ID, Index) order: equal hashes (rare with 32 bits, not impossible)
	// then go by ID, never by slice position, so the input order cannot
	// matter — and one integer sort is several times faster than sorting
	// structs with a comparison function.
	byID := make([]uint32, len(g.replicas))
	for i := range byID {
		byID[i] = uint32(i)
	}
	slices.SortFunc(byID, func(a, b uint32) int {
		ra, rb := g.replicas[a], g.replicas[b]
		return cmp.Or(cmp.Compare(ra.ID, rb.ID), cmp.Compare(ra.Index, rb.Index))
	})
	keys := make([]uint64, 0, len(g.replicas)*vnodes)
	for rank, i := range byID {
		prefix := idPrefix(g.replicas[i].ID)
		for v := range vnodes {
			keys = append(keys, uint64(pointHash(prefix, uint32(v)))<<32|uint64(rank))
		}
	}
	slices.Sort(keys)
	g.points = make([]point, len(keys))
	for j, k := range keys {
		g.points[j] = point{uint32(k >> 32), byID[uint32(k)]}
	}
	g.index = make([]uint32, 1<<indexBits+1)
	for b, i := 0, 0; b <= 1<<indexBits; b++ {
		for i < len(g.points) && int(g.points[i].hash>>(32-indexBits)) < b {
			i++
		}
		g.index[b] = uint32(i)
	}
	words := (len(g.replicas) + 63) / 64
	g.seen.New = func() any { s := make([]uint64, words); return &s }
	return g
}

// Replicas returns the ring's replica set, in the order given to NewRing.
// The slice is the Ring's own: do not modify it.
func (g *Ring) Replicas() []*Replica { return g.replicas }

// Pick chooses a replica for a session key by consistent hashing with
// bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018):
//
//  1. prefer (the session's last good replica, warm KV cache) if Available;
//  2. else the replicas in ring order from key, skipping those not Available
//     and those whose load would exceed the bound
//     ceil(factor × (total + 1) / n) — n the replicas that are Ready with a
//     breaker allowing, total their load, a replica's load being Score ×
//     slots (in-flight, raised to the engine's own count, plus its queue),
//     so a replica may take the request while load < bound;
//  3. if every Available replica is at the bound (the ones below it are
//     full), the Available one with the lowest Score, ties to ring order.
//
// nil when nothing is Available. factor ≤ 0 (or NaN) means DefaultFactor;
// below 1 it is raised to 1. The same key and loads give the same replica in
// every gateway. Pick does not allocate (for sets up to 512 replicas; above,
// it recycles a visited-set).
func (g *Ring) Pick(key uint64, prefer *Replica, factor float64) *Replica {
	if prefer != nil && prefer.Available() {
		return prefer
	}
	r, _ := g.pick(key, factor, nil, false)
	return r
}

// pick is Pick without prefer. With check it first makes sure, in the same
// pass that sums the loads, that same is the ring's replica set, and returns
// ok false if not.
func (g *Ring) pick(key uint64, factor float64, same []*Replica, check bool) (_ *Replica, ok bool) {
	if check {
		if len(same) != len(g.replicas) {
			return nil, false
		}
		same = same[:len(g.replicas)]
	}
	var total int64
	n, avail := 0, 0
	for i, r := range g.replicas {
		if check && same[i] != r {
			return nil, false
		}
		if !r.ready.Load() || !r.closed() && !r.breakerAllows() {
			continue
		}
		n++
		total += r.units()
		if r.inflight.Load() < r.slots.Load() {
			avail++
		}
	}
	if avail == 0 {
		return nil, true
	}
	if !(factor > 0) {
		factor = DefaultFactor
	}
	factor = max(factor, 1)
	bound := math.Ceil(factor * float64(total+1) / float64(n))

	var stack [stackWords]uint64
	var seen []uint64
	if words := (len(g.replicas) + 63) / 64; words <= stackWords {
		seen = stack[:words]
	} else {
		p := g.seen.Get().(*[]uint64)
		defer g.seen.Put(p)
		seen = *p
		clear(seen)
	}

	// First point at or after key, wrapping.
	k := uint32(key >> 32)
	i, j := int(g.index[k>>(32-indexBits)]), int(g.index[k>>(32-indexBits)+1])
	for i < j {
		h := int(uint(i+j) >> 1)
		if g.points[h].hash < k {
			i = h + 1
		} else {
			j = h
		}
	}
	var fallback *Replica
	var fallbackScore float64
	for visited, steps := 0, 0; visited < len(g.replicas) && steps < len(g.points); steps++ {
		if i == len(g.points) {
			i = 0
		}
		p := g.points[i]
		i++
		w, bit := p.idx>>6, uint64(1)<<(p.idx&63)
		if seen[w]&bit != 0 {
			continue
		}
		seen[w] |= bit
		visited++
		r := g.replicas[p.idx]
		if !r.free() || !r.closed() && !r.breakerAllows() { // Available, inlined
			continue
		}
		if float64(r.units()) < bound {
			return r, true
		}
		if s := r.Score(); fallback == nil || s < fallbackScore {
			fallback, fallbackScore = r, s
		}
	}
	return fallback, true
}

// BoundedLoad is the session-affinity policy: the session's last good
// replica while it is Available, else consistent hashing with bounded loads
// over the replica set (see Ring.Pick). It builds its Ring on first use and
// again whenever it is handed a different replica set, so use one
// BoundedLoad per replica set; it is safe for concurrent use and must not be
// copied after first use.
type BoundedLoad struct {
	// Factor is the load bound c (DefaultFactor when 0).
	Factor float64
	// Vnodes is the ring points per replica (DefaultVnodes when 0).
	Vnodes int

	ring atomic.Pointer[Ring]
}

// Build makes the policy's ring for replicas now, so the first Pick after a
// replica set change does not pay for it (about 1 ms for 8 replicas, tens of
// ms for hundreds, at DefaultVnodes).
func (p *BoundedLoad) Build(replicas []*Replica) {
	p.ring.Store(NewRing(replicas, p.Vnodes))
}

// Pick returns a replica for the session hashed to key (see KeyOf), or nil
// when none is Available.
func (p *BoundedLoad) Pick(replicas []*Replica, key uint64, prefer *Replica) *Replica {
	if prefer != nil && prefer.Available() {
		return prefer
	}
	if g := p.ring.Load(); g != nil {
		if r, ok := g.pick(key, p.Factor, replicas, true); ok {
			return r
		}
	}
	g := NewRing(replicas, p.Vnodes)
	p.ring.Store(g)
	r, _ := g.pick(key, p.Factor, nil, false)
	return r
}
