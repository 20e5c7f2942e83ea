package balancer

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// replica returns a ready replica with inflight slots taken; ready is applied
// last so a full or unready replica can be built.
func replica(t testing.TB, index, slots, inflight int, ready bool) *Replica {
	t.Helper()
	r := NewReplica(index, "r"+string(rune('0'+index)), "http://r", slots)
	r.SetReady(true)
	for range inflight {
		if !r.TryAcquire() {
			t.Fatalf("replica %d: cannot take %d of %d slots", index, inflight, slots)
		}
	}
	r.SetReady(ready)
	return r
}

func TestNewReplicaStartsNotReady(t *testing.T) {
	r := NewReplica(3, "a", "http://a", 2)
	if r.Ready() || r.Available() {
		t.Fatalf("new replica: Ready=%v Available=%v, want both false", r.Ready(), r.Available())
	}
	if r.TryAcquire() {
		t.Fatal("TryAcquire on a replica that never passed health succeeded")
	}
	if r.Index != 3 || r.ID != "a" || r.URL != "http://a" || r.Slots() != 2 || r.InFlight() != 0 {
		t.Fatalf("NewReplica fields: %+v slots=%d inflight=%d", r, r.Slots(), r.InFlight())
	}
}

func TestSetSlots(t *testing.T) {
	f := func(n, want int) {
		t.Helper()
		r := NewReplica(0, "a", "", 4)
		r.SetSlots(n)
		if got := r.Slots(); got != want {
			t.Fatalf("SetSlots(%d): Slots()=%d, want %d", n, got, want)
		}
	}
	f(0, 1)                           // unknown slot count still admits one request
	f(-5, 1)                          // negative is a config mistake, not "never available"
	f(1, 1)                           // the minimum itself
	f(7, 7)                           // ordinary value
	f(math.MaxInt32, math.MaxInt32)   // the largest value stored as is
	f(math.MaxInt32+1, math.MaxInt32) // would wrap to a negative int32
	f(math.MaxInt, math.MaxInt32)     // likewise, from the far end
}

func TestAvailableAndTryAcquire(t *testing.T) {
	r := replica(t, 0, 2, 0, true)
	if !r.Available() {
		t.Fatal("ready empty replica not Available")
	}
	if !r.TryAcquire() || !r.TryAcquire() {
		t.Fatal("cannot take both slots")
	}
	if r.Available() || r.TryAcquire() {
		t.Fatalf("full replica: Available=%v and a third TryAcquire succeeded", r.Available())
	}
	if got := r.Load(); got != 1 {
		t.Fatalf("full Load()=%v, want 1", got)
	}
	r.Release()
	if !r.Available() || r.InFlight() != 1 {
		t.Fatalf("after Release: Available=%v InFlight=%d", r.Available(), r.InFlight())
	}
	r.SetReady(false)
	if r.Available() || r.TryAcquire() {
		t.Fatal("unready replica with a free slot is Available or acquirable")
	}
	// Shrinking below inflight keeps the holders and admits nobody new.
	r.SetReady(true)
	r.SetSlots(1)
	if r.Available() || r.TryAcquire() {
		t.Fatal("replica shrunk to its inflight count still admits")
	}
}

func TestReleaseWithoutAcquirePanics(t *testing.T) {
	r := replica(t, 0, 2, 1, true)
	r.Release()
	func() {
		defer func() {
			msg, _ := recover().(string)
			if !strings.HasPrefix(msg, "BUG:") || !strings.Contains(msg, r.ID) {
				t.Fatalf("Release below zero: recovered %q, want a BUG: panic naming the replica", msg)
			}
		}()
		r.Release()
	}()
	// The broken call did not move the counter: the replica still admits
	// exactly its slot count.
	if got := r.InFlight(); got != 0 {
		t.Fatalf("InFlight after the recovered panic = %d, want 0", got)
	}
	n := 0
	for r.TryAcquire() {
		n++
	}
	if n != 2 {
		t.Fatalf("after the recovered panic %d acquires succeeded, want 2", n)
	}
}

// TestTryAcquireConcurrent runs many acquirers against a few slots; the
// holders counted outside the replica must never exceed the slot count, and
// every slot is returned at the end. Run it with -race.
func TestTryAcquireConcurrent(t *testing.T) {
	const (
		slots   = 3
		workers = 32
		rounds  = 2000
	)
	r := replica(t, 0, slots, 0, true)
	var holders, peak, acquired atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				if !r.TryAcquire() {
					if r.InFlight() > slots {
						t.Errorf("InFlight %d > slots %d", r.InFlight(), slots)
					}
					continue
				}
				acquired.Add(1)
				h := holders.Add(1)
				for {
					p := peak.Load()
					if h <= p || peak.CompareAndSwap(p, h) {
						break
					}
				}
				if h > slots || r.InFlight() > slots {
					t.Errorf("%d holders, InFlight %d, slots %d", h, r.InFlight(), slots)
				}
				holders.Add(-1)
				r.Release()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > slots || p < 1 {
		t.Fatalf("peak holders %d, want 1..%d", p, slots)
	}
	if acquired.Load() == 0 {
		t.Fatal("no acquire ever succeeded")
	}
	if r.InFlight() != 0 || !r.Available() {
		t.Fatalf("after all releases: InFlight=%d Available=%v", r.InFlight(), r.Available())
	}
}

// TestPickConcurrent has many dispatchers Pick and acquire across replicas
// while health flaps; no replica may ever hold more than its slots.
func TestPickConcurrent(t *testing.T) {
	replicas := []*Replica{replica(t, 0, 1, 0, true), replica(t, 1, 2, 0, true), replica(t, 2, 4, 0, true)}
	stop := make(chan struct{})
	var flapper sync.WaitGroup
	flapper.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				replicas[1].SetReady(true)
				return
			default:
				replicas[1].SetReady(i%2 == 0)
			}
		}
	})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 2000 {
				r := LeastLoaded{}.Pick(replicas, replicas[0])
				if r == nil || !r.TryAcquire() {
					continue // lost the race for the slot, as the dispatcher may
				}
				if r.InFlight() > r.Slots() {
					t.Errorf("replica %d: InFlight %d > slots %d", r.Index, r.InFlight(), r.Slots())
				}
				r.Release()
			}
		})
	}
	wg.Wait()
	close(stop)
	flapper.Wait()
	for _, r := range replicas {
		if r.InFlight() != 0 {
			t.Fatalf("replica %d: InFlight %d after all releases", r.Index, r.InFlight())
		}
	}
}

func TestLeastLoadedPick(t *testing.T) {
	type rep struct {
		slots, inflight int
		ready           bool
	}
	tests := []struct {
		name     string
		replicas []rep
		prefer   int // index into replicas, -1 for none
		want     int // index of the picked replica, -1 for nil
	}{
		// No replicas at all.
		{"empty", nil, -1, -1},
		// Every replica failed its health check.
		{"none ready", []rep{{2, 0, false}, {4, 0, false}}, -1, -1},
		// Every ready replica is full; the one with room is unready.
		{"none free", []rep{{1, 1, true}, {2, 2, true}, {4, 0, false}}, -1, -1},
		// The only candidate, even though busier than the unready one.
		{"skips unready", []rep{{4, 0, false}, {4, 3, true}}, -1, 1},
		// A full replica is skipped even when it has the lowest index.
		{"skips full", []rep{{1, 1, true}, {4, 3, true}}, -1, 1},
		// Load is per slot: 2/8 beats 1/2 although it has more in flight.
		{"per slot not absolute", []rep{{2, 1, true}, {8, 2, true}}, -1, 1},
		// Idle beats busy regardless of slot count.
		{"idle wins", []rep{{8, 1, true}, {1, 0, true}}, -1, 1},
		// 1/2 == 2/4 == 3/6: the lowest index wins the tie.
		{"tie lowest index", []rep{{4, 3, true}, {2, 1, true}, {4, 2, true}, {6, 3, true}}, -1, 1},
		// All idle: the first replica.
		{"all idle", []rep{{1, 0, true}, {2, 0, true}, {3, 0, true}}, -1, 0},
		// The preferred replica is kept while available even when busier.
		{"prefer kept", []rep{{4, 0, true}, {4, 3, true}}, 1, 1},
		// A full preferred replica is ignored: least loaded instead.
		{"prefer full", []rep{{4, 2, true}, {2, 2, true}, {4, 1, true}}, 1, 2},
		// An unready preferred replica is ignored, even if idle.
		{"prefer unready", []rep{{4, 2, true}, {4, 0, false}}, 1, 0},
		// Preferred but nothing else available and it is full: nil.
		{"prefer full alone", []rep{{1, 1, true}}, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rs []*Replica
			for i, r := range tt.replicas {
				rs = append(rs, replica(t, i, r.slots, r.inflight, r.ready))
			}
			var prefer *Replica
			if tt.prefer >= 0 {
				prefer = rs[tt.prefer]
			}
			got := LeastLoaded{}.Pick(rs, prefer)
			switch {
			case tt.want < 0 && got != nil:
				t.Fatalf("Pick = replica %d, want nil", got.Index)
			case tt.want >= 0 && got != rs[tt.want]:
				t.Fatalf("Pick = %v, want replica %d", got, tt.want)
			}
		})
	}
}

// TestPickTieByIndexNotOrder: the tie break follows Replica.Index, so a
// caller passing replicas in another order gets the same choice.
func TestPickTieByIndexNotOrder(t *testing.T) {
	r0, r1, r2 := replica(t, 0, 2, 1, true), replica(t, 1, 4, 2, true), replica(t, 2, 2, 1, true)
	if got := (LeastLoaded{}).Pick([]*Replica{r2, r1, r0}, nil); got != r0 {
		t.Fatalf("Pick over reversed slice = replica %d, want 0", got.Index)
	}
}

// TestPickPreferOutsideList: the preferred replica (a session's last one) is
// honoured while available even if the caller's slice omits it.
func TestPickPreferOutsideList(t *testing.T) {
	in := replica(t, 0, 4, 0, true)
	out := replica(t, 7, 4, 3, true)
	if got := (LeastLoaded{}).Pick([]*Replica{in}, out); got != out {
		t.Fatalf("Pick = %v, want the preferred replica", got)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	rs := []*Replica{replica(t, 0, 4, 2, true), replica(t, 1, 8, 1, true), replica(t, 2, 2, 2, true)}
	var p Policy = LeastLoaded{}
	if n := testing.AllocsPerRun(100, func() { p.Pick(rs, rs[2]) }); n != 0 {
		t.Fatalf("Pick allocates %v times, want 0", n)
	}
}

func BenchmarkPick(b *testing.B) {
	var rs []*Replica
	for i := range 8 {
		rs = append(rs, replica(b, i, 4, i%4, true))
	}
	var p Policy = LeastLoaded{}
	b.ReportAllocs()
	for b.Loop() {
		r := p.Pick(rs, rs[3])
		if r == nil || !r.TryAcquire() {
			b.Fatal("no replica")
		}
		r.Release()
	}
}

func TestEngineLoad(t *testing.T) {
	r := replica(t, 0, 4, 0, true)
	if p, d, ok := r.EngineLoad(); ok || p != 0 || d != 0 {
		t.Fatalf("EngineLoad before any report = %d, %d, %v; want 0, 0, false", p, d, ok)
	}
	r.SetEngineLoad(0, 0) // an idle engine is a report too
	if _, _, ok := r.EngineLoad(); !ok {
		t.Fatal("EngineLoad after SetEngineLoad(0, 0): ok=false")
	}
	f := func(processing, deferred, wantP, wantD int) {
		t.Helper()
		r.SetEngineLoad(processing, deferred)
		if p, d, ok := r.EngineLoad(); !ok || p != wantP || d != wantD {
			t.Fatalf("SetEngineLoad(%d, %d): EngineLoad = %d, %d, %v; want %d, %d, true", processing, deferred, p, d, ok, wantP, wantD)
		}
	}
	f(3, 2, 3, 2)                                                 // ordinary report
	f(-1, -7, 0, 0)                                               // negative gauges (scrape glitch) read as 0
	f(math.MaxInt32, math.MaxInt32, math.MaxInt32, math.MaxInt32) // the largest stored as is
	f(math.MaxInt, math.MaxInt, math.MaxInt32, math.MaxInt32)     // capped, neither wraps into the other
	r.ClearEngineLoad()
	if _, _, ok := r.EngineLoad(); ok {
		t.Fatal("EngineLoad after ClearEngineLoad: ok=true")
	}
}

func TestScore(t *testing.T) {
	tests := []struct {
		name                 string
		slots, inflight      int
		report               bool // SetEngineLoad called
		processing, deferred int
		want                 float64
	}{
		// No engine report: in-flight per slot, exactly Load.
		{"no report idle", 4, 0, false, 0, 0, 0},
		{"no report half", 4, 2, false, 0, 0, 0.5},
		// The engine sees what we see: max(2, 2) / 4.
		{"report agrees", 4, 2, true, 2, 0, 0.5},
		// Other gateways keep the engine busier than our in-flight shows:
		// max(1, 3) / 4.
		{"engine busier", 4, 1, true, 3, 0, 0.75},
		// A stale scrape missed our newest requests: max(3, 1) / 4.
		{"scrape stale", 4, 3, true, 1, 0, 0.75},
		// Queued requests inside the engine add: (max(2, 4) + 4) / 4.
		{"engine queue", 4, 2, true, 4, 4, 2},
		// An idle engine report does not hide our in-flight: max(1, 0) / 2.
		{"idle report", 2, 1, true, 0, 0, 0.5},
		// Unbounded above: (max(0, 8) + 24) / 8.
		{"oversubscribed", 8, 0, true, 8, 24, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := replica(t, 0, tt.slots, tt.inflight, true)
			if tt.report {
				r.SetEngineLoad(tt.processing, tt.deferred)
			}
			if got := r.Score(); got != tt.want {
				t.Fatalf("Score() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLeastLoadedUsesEngineLoad: the engine's own queue moves the choice
// away from the replica our in-flight count alone would pick.
func TestLeastLoadedUsesEngineLoad(t *testing.T) {
	r0, r1 := replica(t, 0, 4, 0, true), replica(t, 1, 4, 1, true)
	if got := (LeastLoaded{}).Pick([]*Replica{r0, r1}, nil); got != r0 {
		t.Fatalf("without reports Pick = replica %d, want 0", got.Index)
	}
	r0.SetEngineLoad(3, 1) // other gateways' work: score (3+1)/4 = 1 > 1/4
	if got := (LeastLoaded{}).Pick([]*Replica{r0, r1}, nil); got != r1 {
		t.Fatalf("with r0's engine busy Pick = replica %d, want 1", got.Index)
	}
}

func TestReplicaReadsDoNotAllocate(t *testing.T) {
	r := replica(t, 0, 4, 1, true)
	r.SetEngineLoad(2, 1)
	r.SetBreaker(BreakerConfig{})
	if n := testing.AllocsPerRun(100, func() { _ = r.Score() + r.Load(); _ = r.Available() }); n != 0 {
		t.Fatalf("Score/Load/Available allocate %v times, want 0", n)
	}
}

func benchLeastLoaded(b *testing.B, n int) {
	var rs []*Replica
	for i := range n {
		rs = append(rs, replica(b, i, 16, i%4, true))
	}
	b.ReportAllocs()
	for b.Loop() {
		if (LeastLoaded{}).Pick(rs, nil) == nil {
			b.Fatal("no replica")
		}
	}
}

// BenchmarkLeastLoaded is a full scan (no preferred replica): the selection
// cost for a task without a session.
func BenchmarkLeastLoaded(b *testing.B) {
	for _, n := range []int{8, 256} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchLeastLoaded(b, n) })
	}
}
