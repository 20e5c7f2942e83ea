package balancer

import (
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
)

// fleet returns n ready, idle replicas named replica-0… with slots each.
func fleet(t testing.TB, n, slots int) []*Replica {
	t.Helper()
	rs := make([]*Replica, n)
	for i := range rs {
		rs[i] = NewReplica(i, "replica-"+strconv.Itoa(i), "http://r"+strconv.Itoa(i), slots)
		rs[i].SetReady(true)
	}
	return rs
}

// sessionKeys returns the keys of n session ids.
func sessionKeys(n int) []uint64 {
	keys := make([]uint64, n)
	for i := range keys {
		keys[i] = KeyOf("session-" + strconv.Itoa(i))
	}
	return keys
}

// TestKeyOfStable pins the hash: gateways of different builds must map a
// session to the same ring point, so changing it is a breaking change.
func TestKeyOfStable(t *testing.T) {
	f := func(s string, want uint64) {
		t.Helper()
		if got := KeyOf(s); got != want {
			t.Fatalf("KeyOf(%q) = %#x, want %#x", s, got, want)
		}
	}
	f("", mix64(fnvOffset))           // FNV-1a of nothing is its offset basis
	f("a", mix64(0xaf63dc4c8601ec8c)) // published FNV-1a 64 test vector
	f("foobar", mix64(0x85944171f73967e8))
	f("session-1", 0xf267abb32d450b1f)
}

// TestRingSpread: 10,000 idle sessions over 8 replicas land within ±15 % of
// an even 1,250 each.
func TestRingSpread(t *testing.T) {
	rs := fleet(t, 8, 1<<20)
	g := NewRing(rs, 0)
	counts := make([]int, len(rs))
	for _, k := range sessionKeys(10000) {
		counts[g.Pick(k, nil, 0).Index]++
	}
	for i, c := range counts {
		if dev := float64(c)/1250 - 1; math.Abs(dev) > 0.15 {
			t.Errorf("replica %d got %d sessions (%+.1f %% of even)", i, c, 100*dev)
		}
	}
	t.Logf("sessions per replica: %v", counts)
}

// TestRingSticky: a key keeps its replica while that replica is available
// and under the bound, whatever happens to the others; it moves when its
// replica goes away and comes back with it.
func TestRingSticky(t *testing.T) {
	rs := fleet(t, 8, 64)
	g := NewRing(rs, 0)
	keys := sessionKeys(10000)
	first := make([]*Replica, len(keys))
	for i, k := range keys {
		first[i] = g.Pick(k, nil, 0)
	}
	// Load every replica alike (2 in flight each, bound ceil(1.25×17/8) = 3)
	// and break another replica: keys not on it stay put.
	for _, r := range rs {
		r.TryAcquire()
		r.TryAcquire()
	}
	rs[5].SetReady(false)
	for i, k := range keys {
		got := g.Pick(k, nil, 0)
		if first[i] != rs[5] && got != first[i] {
			t.Fatalf("key %d moved from %s to %s though its replica is fine", i, first[i].ID, got.ID)
		}
		if got == rs[5] {
			t.Fatalf("key %d picked the unready replica", i)
		}
	}
	rs[5].SetReady(true)
	for i, k := range keys {
		if got := g.Pick(k, nil, 0); got != first[i] {
			t.Fatalf("key %d on %s, want %s again after recovery", i, got.ID, first[i].ID)
		}
	}
}

// TestRingRemoval: removing a replica from the set moves only its own keys,
// idle (exactly) and when bounded loads are in play (≥ 85 % of the others
// keep their replica).
func TestRingRemoval(t *testing.T) {
	keys := sessionKeys(10000)
	const removed = 3

	t.Run("idle", func(t *testing.T) {
		rs := fleet(t, 8, 1<<20)
		before, after := NewRing(rs, 0), NewRing(append(rs[:removed:removed], rs[removed+1:]...), 0)
		for i, k := range keys {
			b, a := before.Pick(k, nil, 0), after.Pick(k, nil, 0)
			if b != rs[removed] && a != b {
				t.Fatalf("key %d moved from %s to %s", i, b.ID, a.ID)
			}
		}
	})

	t.Run("loaded", func(t *testing.T) {
		// Sessions arrive one by one and keep their slot, so the bound
		// steers early arrivals (when the average is small) off their
		// hashed replica.
		place := func(rs []*Replica) []string {
			g := NewRing(rs, 0)
			ids := make([]string, len(keys))
			for i, k := range keys {
				r := g.Pick(k, nil, 0)
				if !r.TryAcquire() {
					t.Fatalf("key %d: %s full", i, r.ID)
				}
				ids[i] = r.ID
			}
			return ids
		}
		rs := fleet(t, 8, 1<<20)
		before := place(rs)
		rs = fleet(t, 8, 1<<20)
		after := place(append(rs[:removed:removed], rs[removed+1:]...))
		kept, others := 0, 0
		for i := range keys {
			if before[i] == rs[removed].ID {
				continue
			}
			others++
			if after[i] == before[i] {
				kept++
			}
		}
		share := float64(kept) / float64(others)
		t.Logf("%d of %d keys of the remaining replicas kept theirs (%.1f %%)", kept, others, 100*share)
		if share < 0.85 {
			t.Fatalf("only %.1f %% of the other replicas' keys kept their replica, want ≥ 85 %%", 100*share)
		}
	})
}

// TestRingBoundedLoad: sessions arrive and hold their slot; at every step
// no replica carries more than ceil(c × average), even when all sessions
// hash to the same point (the case plain consistent hashing piles onto one
// replica).
func TestRingBoundedLoad(t *testing.T) {
	tests := []struct {
		name   string
		factor float64
		keys   func(i int) uint64
	}{
		// Ordinary sessions, default factor 1.25.
		{"spread keys", 0, func(i int) uint64 { return KeyOf("session-" + strconv.Itoa(i)) }},
		// One hot key: without the bound all 10,000 would go to one replica.
		{"one hot key", 0, func(int) uint64 { return KeyOf("hot") }},
		// A tighter factor, ordinary keys.
		{"factor 1.1", 1.1, func(i int) uint64 { return KeyOf("s" + strconv.Itoa(i)) }},
		// Factor 1 (perfect balance) still places everything.
		{"factor 1", 1, func(i int) uint64 { return KeyOf("s" + strconv.Itoa(i)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := fleet(t, 8, 1<<20)
			g := NewRing(rs, 0)
			c := tt.factor
			if c == 0 {
				c = DefaultFactor
			}
			for i := range 10000 {
				r := g.Pick(tt.keys(i), nil, tt.factor)
				if r == nil || !r.TryAcquire() {
					t.Fatalf("session %d: no replica", i)
				}
				limit := int(math.Ceil(c * float64(i+1) / float64(len(rs))))
				for _, r := range rs {
					if r.InFlight() > limit {
						t.Fatalf("after %d sessions %s holds %d > ceil(%v × avg) = %d", i+1, r.ID, r.InFlight(), c, limit)
					}
				}
			}
		})
	}
}

// TestRingOrderIndependent: rings built from the same replicas in different
// orders (as two gateways might list them) pick alike, idle and loaded.
func TestRingOrderIndependent(t *testing.T) {
	rs := fleet(t, 8, 64)
	shuffled := append([]*Replica(nil), rs...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	a, b := NewRing(rs, 0), NewRing(shuffled, 0)
	keys := sessionKeys(10000)
	check := func(what string) {
		t.Helper()
		for i, k := range keys {
			if ra, rb := a.Pick(k, nil, 0), b.Pick(k, nil, 0); ra != rb {
				t.Fatalf("%s: key %d: %s versus %s", what, i, ra.ID, rb.ID)
			}
		}
	}
	check("idle")
	for i, r := range rs { // uneven loads, so the bound skips some
		for range i * 3 {
			r.TryAcquire()
		}
	}
	rs[2].SetEngineLoad(20, 5)
	check("loaded")
}

func TestRingPick(t *testing.T) {
	type rep struct {
		slots, inflight int
		ready           bool
		open            bool // breaker tripped
	}
	idle := rep{8, 0, true, false}
	tests := []struct {
		name     string
		replicas []rep
		prefer   int // index, -1 for none
		factor   float64
		want     int // index, -1 for nil, -2 for "the key's hashed replica"
	}{
		// Nothing in the set.
		{"empty", nil, -1, 0, -1},
		// All idle: the key's own replica.
		{"idle", []rep{idle, idle, idle}, -1, 0, -2},
		// The preferred replica wins while available, even if busier.
		{"prefer", []rep{idle, {8, 5, true, false}, idle}, 1, 0, 1},
		// A full preferred replica: back to hashing.
		{"prefer full", []rep{idle, {8, 8, true, false}, idle}, 1, 0, -2},
		// A preferred replica behind an open breaker: back to hashing.
		{"prefer open", []rep{idle, {8, 0, true, true}, idle}, 1, 0, -2},
		// Nothing ready.
		{"none ready", []rep{{8, 0, false, false}, {8, 0, false, false}}, -1, 0, -1},
		// The only one not behind an open breaker.
		{"breakers", []rep{{8, 0, true, true}, {8, 0, true, true}, {8, 3, true, false}}, -1, 0, 2},
		// Everyone with room is over the bound (the others are full or
		// unready): the least loaded with room, not nil.
		{"all over bound", []rep{{8, 8, true, false}, {16, 8, true, false}, {16, 6, true, false}}, -1, 0, 2},
		// A big factor never binds: the hashed replica even if busy.
		{"factor huge", []rep{idle, idle, idle}, -1, math.Inf(1), -2},
	}
	key := KeyOf("some session")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := make([]*Replica, len(tt.replicas))
			for i, r := range tt.replicas {
				rs[i] = replica(t, i, r.slots, r.inflight, r.ready)
				if r.open {
					rs[i].SetBreaker(BreakerConfig{ConsecutiveFailures: 1})
					done, _ := rs[i].Allow()
					done(false)
				}
			}
			g := NewRing(rs, 0)
			var prefer *Replica
			if tt.prefer >= 0 {
				prefer = rs[tt.prefer]
			}
			want := (*Replica)(nil)
			switch {
			case tt.want == -2:
				want = g.Pick(key, nil, math.Inf(1)) // hashed, nothing binds
			case tt.want >= 0:
				want = rs[tt.want]
			}
			if got := g.Pick(key, prefer, tt.factor); got != want {
				t.Fatalf("Pick = %v, want %v", got, want)
			}
		})
	}
}

// TestRingLarge: past the stack visited-set (512 replicas) Pick still
// visits every replica before giving up.
func TestRingLarge(t *testing.T) {
	rs := fleet(t, 600, 1)
	g := NewRing(rs, 8)
	for _, r := range rs[:599] {
		r.SetReady(false)
	}
	for _, k := range sessionKeys(50) {
		if got := g.Pick(k, nil, 0); got != rs[599] {
			t.Fatalf("Pick = %v, want the one ready replica", got)
		}
	}
}

// TestBoundedLoadPolicy: the policy keeps sessions on their replica, reuses
// its ring for the same set and rebuilds it for a new one.
func TestBoundedLoadPolicy(t *testing.T) {
	rs := fleet(t, 8, 4)
	p := &BoundedLoad{}
	key := KeyOf("s")
	r := p.Pick(rs, key, nil)
	if r == nil || r != NewRing(rs, 0).Pick(key, nil, 0) {
		t.Fatalf("Pick = %v, want the ring's choice", r)
	}
	ring := p.ring.Load()
	if got := p.Pick(rs, KeyOf("other"), rs[6]); got != rs[6] {
		t.Fatalf("Pick with prefer = %v, want replica 6", got)
	}
	p.Pick(rs, key, nil)
	if p.ring.Load() != ring {
		t.Fatal("ring rebuilt for the same replica set")
	}
	smaller := rs[:7]
	if got := p.Pick(smaller, key, nil); got == nil || p.ring.Load() == ring {
		t.Fatalf("new set: Pick = %v, ring rebuilt %v", got, p.ring.Load() != ring)
	}
	// Same length, one replica replaced in place: a new set too.
	swapped := append([]*Replica(nil), smaller...)
	swapped[2] = NewReplica(2, "new", "", 4)
	ring = p.ring.Load()
	if p.Pick(swapped, key, nil); p.ring.Load() == ring {
		t.Fatal("ring not rebuilt for a replica replaced in place")
	}
	// An empty set picks nothing, whatever the ring held before.
	if got := p.Pick(nil, key, nil); got != nil {
		t.Fatalf("empty set: Pick = %v, want nil", got)
	}
	// Build makes the ring ahead of the first Pick.
	p.Build(rs)
	ring = p.ring.Load()
	p.Pick(rs, key, nil)
	if p.ring.Load() != ring || len(ring.Replicas()) != len(rs) {
		t.Fatal("Pick rebuilt the ring Build made")
	}
}

func TestRingPickDoesNotAllocate(t *testing.T) {
	for _, n := range []int{8, 256, 600} {
		rs := fleet(t, n, 16)
		for i, r := range rs {
			for range i % 4 {
				r.TryAcquire()
			}
		}
		p := &BoundedLoad{Vnodes: 64} // vnodes do not change allocations; fewer build faster
		keys := sessionKeys(64)
		i := 0
		p.Pick(rs, keys[0], nil) // builds the ring
		if allocs := testing.AllocsPerRun(200, func() {
			p.Pick(rs, keys[i%len(keys)], nil)
			i++
		}); allocs != 0 {
			t.Errorf("%d replicas: Pick allocates %v times, want 0", n, allocs)
		}
	}
}

// TestRingPickConcurrent has dispatchers Pick and hold slots while health
// flaps; no replica ever exceeds its slots. Run with -race.
func TestRingPickConcurrent(t *testing.T) {
	rs := fleet(t, 8, 3)
	p := &BoundedLoad{}
	stop := make(chan struct{})
	var flapper sync.WaitGroup
	flapper.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				rs[1].SetReady(true)
				return
			default:
				rs[1].SetReady(i%2 == 0)
				rs[2].SetEngineLoad(i%5, i%3)
			}
		}
	})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 2000 {
				r := p.Pick(rs, KeyOf(strconv.Itoa(g*7919+i)), rs[g%8])
				if r == nil || !r.TryAcquire() {
					continue
				}
				if r.InFlight() > r.Slots() {
					t.Errorf("%s: InFlight %d > slots %d", r.ID, r.InFlight(), r.Slots())
				}
				r.Release()
			}
		})
	}
	wg.Wait()
	close(stop)
	flapper.Wait()
}

func benchBoundedLoad(b *testing.B, n int) {
	rs := fleet(b, n, 16)
	for i, r := range rs {
		for range i % 4 {
			r.TryAcquire()
		}
	}
	p := &BoundedLoad{}
	keys := sessionKeys(1024)
	p.Pick(rs, keys[0], nil) // builds the ring outside the timing
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if p.Pick(rs, keys[i&1023], nil) == nil {
			b.Fatal("no replica")
		}
		i++
	}
}

// BenchmarkBoundedLoadPick is the selection cost for a session without a
// usable preferred replica (the full path: load pass, ring search, walk).
func BenchmarkBoundedLoadPick(b *testing.B) {
	for _, n := range []int{8, 256} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchBoundedLoad(b, n) })
	}
}

// BenchmarkBoundedLoadPrefer is the common path of an ongoing session: its
// replica is still available.
func BenchmarkBoundedLoadPrefer(b *testing.B) {
	rs := fleet(b, 8, 16)
	p := &BoundedLoad{}
	b.ReportAllocs()
	for b.Loop() {
		if p.Pick(rs, 42, rs[3]) != rs[3] {
			b.Fatal("prefer not kept")
		}
	}
}

func BenchmarkNewRing(b *testing.B) {
	for _, n := range []int{8, 256} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			rs := fleet(b, n, 16)
			b.ReportAllocs()
			for b.Loop() {
				NewRing(rs, 0)
			}
		})
	}
}
