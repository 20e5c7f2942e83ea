package admission

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newQueue returns a queue or fails the test.
func newQueue(t testing.TB, cfg Config) *Queue[int] {
	t.Helper()
	q, err := NewQueue[int](cfg)
	if err != nil {
		t.Fatalf("NewQueue(%+v): %v", cfg, err)
	}
	return q
}

// push pushes v or fails the test, returning the entry.
func push(t testing.TB, q *Queue[int], p Priority, v int) *Entry[int] {
	t.Helper()
	e, _, err := q.Push(p, v)
	if err != nil {
		t.Fatalf("Push(%v, %d): %v", p, v, err)
	}
	return e
}

// drain pops everything and returns the values in dispatch order.
func drain(q *Queue[int]) []int {
	var got []int
	for {
		e, ok := q.Pop()
		if !ok {
			return got
		}
		got = append(got, e.Value)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPriority(t *testing.T) {
	f := func(s string, want Priority, wantOK bool) {
		t.Helper()
		got, ok := ParsePriority(s)
		if got != want || ok != wantOK {
			t.Fatalf("ParsePriority(%q) = %v, %v; want %v, %v", s, got, ok, want, wantOK)
		}
		if ok && s != "" && got.String() != s {
			t.Fatalf("%v.String() = %q, want %q", got, got.String(), s)
		}
	}
	f("", Interactive, true) // absent means interactive
	f("interactive", Interactive, true)
	f("batch", Batch, true)
	f("Batch", 0, false) // names are case-sensitive like the rest of the API
	f("realtime", 0, false)
	if s := NumPriorities.String(); s != "unknown" {
		t.Fatalf("out-of-range priority String() = %q", s)
	}
}

func TestNewQueue(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means success
		policy  string // Policy() on success
	}{
		// Empty policy defaults to reject.
		{"default policy", Config{Capacity: 1}, "", PolicyReject},
		// Reject named explicitly.
		{"reject", Config{Capacity: 5, Policy: PolicyReject}, "", PolicyReject},
		// A queue that can hold nothing is a config mistake.
		{"zero capacity", Config{Capacity: 0}, "capacity", ""},
		// Negative capacity likewise.
		{"negative capacity", Config{Capacity: -3}, "capacity", ""},
		// Spec policies this build does not implement yet are refused, not ignored.
		{"drop-lru unsupported", Config{Capacity: 1, Policy: PolicyDropLRU}, "drop-lru", ""},
		// Same for shed-low-priority.
		{"shed unsupported", Config{Capacity: 1, Policy: PolicyShedLowPriority}, "shed-low-priority", ""},
		// A typo is refused.
		{"unknown policy", Config{Capacity: 1, Policy: "rejectt"}, "not supported", ""},
		// NaN weights would make every credit comparison false.
		{"NaN weight", Config{Capacity: 1, Weights: [NumPriorities]float64{math.NaN(), 1}}, "finite", ""},
		// Infinite weights turn credits into NaN after one pop.
		{"Inf weight", Config{Capacity: 1, Weights: [NumPriorities]float64{8, math.Inf(1)}}, "finite", ""},
		// Zero and negative weights count as 1.
		{"zero weights", Config{Capacity: 1, Weights: [NumPriorities]float64{0, -2}}, "", PolicyReject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := NewQueue[int](tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewQueue error = %v, want one mentioning %q", err, tt.wantErr)
				}
				if q != nil {
					t.Fatal("NewQueue returned a queue with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("NewQueue: %v", err)
			}
			if q.Policy() != tt.policy || q.Capacity() != tt.cfg.Capacity || q.Len() != 0 {
				t.Fatalf("Policy=%q Capacity=%d Len=%d", q.Policy(), q.Capacity(), q.Len())
			}
		})
	}
}

func TestCapacityAcrossPriorities(t *testing.T) {
	q := newQueue(t, Config{Capacity: 3})
	push(t, q, Interactive, 1)
	push(t, q, Batch, 2)
	push(t, q, Interactive, 3)
	for _, p := range []Priority{Interactive, Batch} {
		e, ahead, err := q.Push(p, 4)
		var fe *FullError
		if !errors.As(err, &fe) {
			t.Fatalf("Push(%v) on a full queue: err=%v, want *FullError", p, err)
		}
		if e != nil || ahead != 0 {
			t.Fatalf("rejected Push returned entry %v, ahead %d", e, ahead)
		}
		if *fe != (FullError{Policy: PolicyReject, Queued: 3, Capacity: 3}) {
			t.Fatalf("FullError = %+v", *fe)
		}
		if !errors.Is(err, ErrFull) {
			t.Fatal("FullError does not unwrap to ErrFull")
		}
		if msg := err.Error(); msg != "queue full (3 queued, capacity 3, policy reject)" {
			t.Fatalf("Error() = %q", msg)
		}
	}
	if q.Len() != 3 || q.LenPriority(Interactive) != 2 || q.LenPriority(Batch) != 1 {
		t.Fatalf("rejections changed the queue: Len=%d", q.Len())
	}
	// Running tasks do not count: a pop frees a place for any priority.
	if _, ok := q.Pop(); !ok {
		t.Fatal("Pop on a full queue failed")
	}
	push(t, q, Batch, 5)
	// A removed (canceled) task frees its place too.
	q2 := newQueue(t, Config{Capacity: 1})
	e := push(t, q2, Batch, 1)
	q2.Remove(e)
	push(t, q2, Interactive, 2)
}

func TestPerPriorityCap(t *testing.T) {
	q := newQueue(t, Config{Capacity: 4, PerPriority: [NumPriorities]int{0, 2}})
	push(t, q, Batch, 1)
	push(t, q, Batch, 2)
	_, _, err := q.Push(Batch, 3)
	var fe *FullError
	if !errors.As(err, &fe) || !errors.Is(err, ErrFull) {
		t.Fatalf("third batch: err=%v, want *FullError", err)
	}
	// The error names the priority's own cap and count.
	if *fe != (FullError{Policy: PolicyReject, Queued: 2, Capacity: 2}) {
		t.Fatalf("FullError = %+v", *fe)
	}
	// Interactive (no cap of its own) fills the rest of the pool.
	push(t, q, Interactive, 4)
	push(t, q, Interactive, 5)
	if _, _, err := q.Push(Interactive, 6); !errors.Is(err, ErrFull) {
		t.Fatalf("interactive over pool capacity: err=%v", err)
	}
	if _, _, err := q.Push(Interactive, 6); err.(*FullError).Capacity != 4 {
		t.Fatalf("pool-full error reports capacity %d, want 4", err.(*FullError).Capacity)
	}
}

func TestFIFOWithinPriority(t *testing.T) {
	for _, p := range []Priority{Interactive, Batch} {
		q := newQueue(t, Config{Capacity: 100})
		var want []int
		for i := range 50 {
			push(t, q, p, i)
			want = append(want, i)
		}
		if got := drain(q); !equalInts(got, want) {
			t.Fatalf("%v: dispatch order %v, want %v", p, got, want)
		}
		if _, ok := q.Pop(); ok {
			t.Fatal("Pop on an empty queue returned an entry")
		}
	}
}

// TestWeightedRoundRobin checks the dispatch shares between priorities when
// both stay busy.
func TestWeightedRoundRobin(t *testing.T) {
	tests := []struct {
		name                   string
		weights                [NumPriorities]float64
		pops                   int
		interactive, batch     int // dispatches of each in pops
		maxBatchGap            int // most consecutive pops without a batch task
		queuedInt, queuedBatch int
	}{
		// The default 8:1 split: exactly 80:10 over 90 pops, batch every ninth.
		{"8:1", [NumPriorities]float64{8, 1}, 90, 80, 10, 8, 200, 200},
		// Equal weights alternate.
		{"1:1", [NumPriorities]float64{1, 1}, 90, 45, 45, 1, 200, 200},
		// Unset weights count as 1 each.
		{"unset", [NumPriorities]float64{}, 90, 45, 45, 1, 200, 200},
		// 3:1 with non-integer scaling gives the same shares.
		{"0.75:0.25", [NumPriorities]float64{0.75, 0.25}, 100, 75, 25, 3, 200, 200},
		// Batch may outweigh interactive.
		{"1:2", [NumPriorities]float64{1, 2}, 90, 30, 60, 1, 200, 200},
		// Once batch runs out, interactive takes every turn.
		{"batch runs out", [NumPriorities]float64{8, 1}, 90, 87, 3, 90, 200, 3},
		// Once interactive runs out, batch takes every turn: never starved.
		{"interactive runs out", [NumPriorities]float64{8, 1}, 90, 5, 85, 5, 5, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 1000, Weights: tt.weights})
			for i := range tt.queuedInt {
				push(t, q, Interactive, i)
			}
			for i := range tt.queuedBatch {
				push(t, q, Batch, i)
			}
			var n [NumPriorities]int
			gap, maxGap := 0, 0
			for range tt.pops {
				e, ok := q.Pop()
				if !ok {
					t.Fatal("queue ran dry")
				}
				n[e.prio]++
				if e.prio == Batch {
					gap = 0
				} else {
					gap++
					maxGap = max(maxGap, gap)
				}
			}
			if n[Interactive] != tt.interactive || n[Batch] != tt.batch {
				t.Fatalf("dispatched %d interactive, %d batch; want %d, %d", n[Interactive], n[Batch], tt.interactive, tt.batch)
			}
			if maxGap > tt.maxBatchGap {
				t.Fatalf("batch waited %d pops in a row, want at most %d", maxGap, tt.maxBatchGap)
			}
		})
	}
}

// TestBatchNeverStarved keeps interactive refilled (steady interactive
// traffic): batch still gets one turn in nine.
func TestBatchNeverStarved(t *testing.T) {
	q := newQueue(t, Config{Capacity: 100, Weights: [NumPriorities]float64{8, 1}})
	for i := range 10 {
		push(t, q, Interactive, i)
		push(t, q, Batch, i)
	}
	batch := 0
	for i := range 900 {
		e, _ := q.Pop()
		if e.prio == Interactive {
			push(t, q, Interactive, i)
		} else {
			batch++
			push(t, q, Batch, i)
		}
	}
	if batch != 100 {
		t.Fatalf("batch got %d of 900 turns, want 100", batch)
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name   string
		remove []int // indexes of the five pushed entries, in order
		want   []int
	}{
		// A middle entry is unlinked; its neighbours stay in order.
		{"middle", []int{2}, []int{0, 1, 3, 4}},
		// The head.
		{"head", []int{0}, []int{1, 2, 3, 4}},
		// The tail, then a push must still append after the new tail.
		{"tail", []int{4}, []int{0, 1, 2, 3}},
		// Adjacent entries.
		{"adjacent", []int{1, 2}, []int{0, 3, 4}},
		// Everything: the FIFO is empty and reusable.
		{"all", []int{3, 0, 4, 2, 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 10})
			var es []*Entry[int]
			for i := range 5 {
				es = append(es, push(t, q, Batch, i))
			}
			for _, i := range tt.remove {
				if !q.Remove(es[i]) {
					t.Fatalf("Remove(entry %d) = false", i)
				}
				if q.Remove(es[i]) {
					t.Fatalf("second Remove(entry %d) = true", i)
				}
			}
			if q.Len() != 5-len(tt.remove) {
				t.Fatalf("Len = %d after %d removals", q.Len(), len(tt.remove))
			}
			push(t, q, Batch, 99)
			want := append(tt.want, 99)
			if got := drain(q); !equalInts(got, want) {
				t.Fatalf("order after Remove = %v, want %v", got, want)
			}
		})
	}
}

func TestRemoveDispatched(t *testing.T) {
	q := newQueue(t, Config{Capacity: 10})
	a := push(t, q, Interactive, 1)
	b := push(t, q, Interactive, 2)
	e, _ := q.Pop()
	if e != a {
		t.Fatalf("Pop = %v, want the first entry", e.Value)
	}
	// A cancel racing dispatch: the popped entry is not in the queue.
	if q.Remove(a) {
		t.Fatal("Remove of a popped entry = true")
	}
	if q.Remove(nil) {
		t.Fatal("Remove(nil) = true")
	}
	if q.Len() != 1 || q.LenPriority(Interactive) != 1 {
		t.Fatalf("Len = %d, want 1", q.Len())
	}
	if e, _ := q.Pop(); e != b {
		t.Fatal("the remaining entry was disturbed")
	}
}

// TestRemoveIsConstantTime removes the middle of a long queue many times;
// a linear scan would take ~N²/2 steps and time out, so this guards the O(1)
// promise of SPEC §4.1 without a wall-clock assertion.
func TestRemoveIsConstantTime(t *testing.T) {
	const n = 200_000
	q := newQueue(t, Config{Capacity: n})
	es := make([]*Entry[int], n)
	for i := range n {
		es[i] = push(t, q, Batch, i)
	}
	for i := n / 2; i < n; i++ {
		if !q.Remove(es[i]) {
			t.Fatalf("Remove(%d) = false", i)
		}
	}
	for i := n/2 - 1; i >= 0; i -= 2 {
		q.Remove(es[i])
	}
	if got := q.Len(); got != n/4 {
		t.Fatalf("Len = %d, want %d", got, n/4)
	}
	for i := 0; i < n/2; i += 2 {
		if e, _ := q.Pop(); e.Value != i {
			t.Fatalf("Pop = %d, want %d", e.Value, i)
		}
	}
}

func TestPushFront(t *testing.T) {
	q := newQueue(t, Config{Capacity: 2})
	push(t, q, Batch, 1)
	push(t, q, Batch, 2)
	e, _ := q.Pop()
	// The place is taken by a newcomer while dispatch looked for a replica.
	push(t, q, Batch, 3)
	q.PushFront(e)
	if q.Len() != 3 {
		t.Fatalf("PushFront ignores capacity: Len = %d, want 3", q.Len())
	}
	if got := drain(q); !equalInts(got, []int{1, 2, 3}) {
		t.Fatalf("order after PushFront = %v, want [1 2 3]", got)
	}

	// Into an empty priority: it becomes head and tail.
	q = newQueue(t, Config{Capacity: 4})
	push(t, q, Interactive, 1)
	e, _ = q.Pop()
	q.PushFront(e)
	push(t, q, Interactive, 2)
	// A pushed-front entry is queued again: Remove works on it.
	if !q.Remove(e) {
		t.Fatal("Remove of a pushed-front entry = false")
	}
	if got := drain(q); !equalInts(got, []int{2}) {
		t.Fatalf("after PushFront+Remove: %v, want [2]", got)
	}
}

func TestPushFrontQueuedPanics(t *testing.T) {
	q := newQueue(t, Config{Capacity: 4})
	e := push(t, q, Interactive, 1)
	defer func() {
		msg, _ := recover().(string)
		if !strings.HasPrefix(msg, "BUG:") {
			t.Fatalf("PushFront of a queued entry: recovered %q, want a BUG: panic", msg)
		}
		if q.Len() != 1 {
			t.Fatalf("the failed PushFront changed Len to %d", q.Len())
		}
	}()
	q.PushFront(e)
}

// TestPushAhead checks the `ahead` Push returns (queue_position at
// admission) on hand-computed cases.
func TestPushAhead(t *testing.T) {
	tests := []struct {
		name         string
		weights      [NumPriorities]float64
		inter, batch int // queued before the newcomer (fresh queue)
		p            Priority
		want         int
	}{
		// Empty queue: dispatched next.
		{"empty", [NumPriorities]float64{8, 1}, 0, 0, Interactive, 0},
		// Only its own priority queued: FIFO position.
		{"own only", [NumPriorities]float64{8, 1}, 5, 0, Interactive, 5},
		// Batch newcomer behind batch only.
		{"batch own only", [NumPriorities]float64{8, 1}, 0, 7, Batch, 7},
		// Interactive newcomer ahead of a long batch queue: goes first.
		{"interactive before batch", [NumPriorities]float64{8, 1}, 0, 50, Interactive, 0},
		// 8:1 dispatches I I I I B I I I I: the fifth interactive waits for one batch.
		{"fifth interactive", [NumPriorities]float64{8, 1}, 4, 50, Interactive, 5},
		// The ninth interactive also comes after one batch.
		{"ninth interactive", [NumPriorities]float64{8, 1}, 8, 50, Interactive, 9},
		// The first batch task runs fifth in the round, not ninth.
		{"first batch", [NumPriorities]float64{8, 1}, 50, 0, Batch, 4},
		// The second batch after 4+8 interactive.
		{"second batch", [NumPriorities]float64{8, 1}, 50, 1, Batch, 13},
		// Few interactive queued: batch waits only for those.
		{"batch behind short interactive", [NumPriorities]float64{8, 1}, 2, 3, Batch, 5},
		// Equal weights alternate, interactive first.
		{"1:1 interactive", [NumPriorities]float64{1, 1}, 3, 3, Interactive, 6},
		// Equal weights: batch newcomer after three pairs and one more interactive.
		{"1:1 batch", [NumPriorities]float64{1, 1}, 5, 3, Batch, 7},
		// An extreme ratio must not overflow int and report a negative position.
		{"extreme ratio", [NumPriorities]float64{1e300, 1e-300}, 3, 2, Batch, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 1000, Weights: tt.weights})
			for range tt.inter {
				push(t, q, Interactive, 0)
			}
			for range tt.batch {
				push(t, q, Batch, 0)
			}
			_, ahead, err := q.Push(tt.p, 1)
			if err != nil {
				t.Fatal(err)
			}
			if ahead != tt.want {
				t.Fatalf("ahead = %d, want %d", ahead, tt.want)
			}
			if pos := position(q, 1); pos != ahead {
				t.Fatalf("ahead = %d but dispatched after %d", ahead, pos)
			}
		})
	}
}

// position pops until the entry with value v and returns how many came first.
func position(q *Queue[int], v int) int {
	for n := 0; ; n++ {
		e, ok := q.Pop()
		if !ok {
			return -1
		}
		if e.Value == v {
			return n
		}
	}
}

// TestPushAheadExact: after any history of pushes, pops, removals and
// put-backs, `ahead` is exactly how many tasks dispatch before the newcomer
// when nothing else changes (weights exact in binary floating point).
func TestPushAheadExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for _, w := range [][NumPriorities]float64{{8, 1}, {1, 1}, {3, 1}, {1, 8}, {2, 3}, {5, 2}, {0.5, 2.5}} {
		for range 2000 {
			q := newQueue(t, Config{Capacity: 1000, Weights: w})
			var live []*Entry[int]
			for k := rng.IntN(80); k > 0; k-- {
				switch r := rng.IntN(10); {
				case r < 6:
					live = append(live, push(t, q, Priority(rng.IntN(2)), 0))
				case r < 8:
					if e, ok := q.Pop(); ok && rng.IntN(4) == 0 {
						q.PushFront(e) // dispatch lost its replica
					}
				default:
					if len(live) > 0 {
						q.Remove(live[rng.IntN(len(live))])
					}
				}
			}
			p := Priority(rng.IntN(2))
			_, ahead, err := q.Push(p, 1)
			if err != nil {
				t.Fatal(err)
			}
			if pos := position(q, 1); pos != ahead {
				t.Fatalf("weights %v, %v newcomer: ahead = %d, dispatched after %d", w, p, ahead, pos)
			}
		}
	}
}

// TestConcurrent pushes, pops and removes from many goroutines (run with
// -race): every admitted value is dispatched or removed exactly once.
func TestConcurrent(t *testing.T) {
	const (
		producers = 8
		perProd   = 2000
	)
	q := newQueue(t, Config{Capacity: 64, Weights: [NumPriorities]float64{8, 1}})
	var (
		mu     sync.Mutex
		seen   = make(map[int]int)
		pushed = make(chan struct{})
		prodWG sync.WaitGroup
		consWG sync.WaitGroup
	)
	for p := range producers {
		prodWG.Go(func() {
			for i := 0; i < perProd; {
				v := p*perProd + i
				e, _, err := q.Push(Priority(v%2), v)
				if errors.Is(err, ErrFull) {
					runtime.Gosched() // back-pressure: let a consumer run, retry
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				i++
				if v%7 == 0 && q.Remove(e) { // canceled while queued
					mu.Lock()
					seen[v]++
					mu.Unlock()
				}
			}
		})
	}
	go func() { prodWG.Wait(); close(pushed) }()
	for range 4 {
		consWG.Go(func() {
			for {
				e, ok := q.Pop()
				if !ok {
					select {
					case <-pushed:
						if q.Len() == 0 {
							return
						}
					default:
					}
					runtime.Gosched()
					continue
				}
				if e.Value%13 == 0 && rand.IntN(2) == 0 {
					q.PushFront(e) // dispatch lost its replica: it comes back
					continue
				}
				mu.Lock()
				seen[e.Value]++
				mu.Unlock()
			}
		})
	}
	consWG.Wait()
	if len(seen) != producers*perProd {
		t.Fatalf("%d distinct values seen, want %d", len(seen), producers*perProd)
	}
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("value %d seen %d times", v, n)
		}
	}
	if q.Len() != 0 {
		t.Fatalf("Len = %d at the end", q.Len())
	}
}

// BenchmarkPushPop measures one admission and one dispatch with 10k tasks
// queued; the only allocation is the Entry the caller keeps for Remove.
func BenchmarkPushPop(b *testing.B) {
	q := newQueue(b, Config{Capacity: 20_000, Weights: [NumPriorities]float64{8, 1}})
	for i := range 10_000 {
		push(b, q, Priority(i%2), i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := q.Push(Priority(i%2), i); err != nil {
			b.Fatal(err)
		}
		if _, ok := q.Pop(); !ok {
			b.Fatal("empty")
		}
		i++
	}
	if q.Len() != 10_000 {
		b.Fatalf("Len = %d", q.Len())
	}
}

// BenchmarkPushRemove is the cancel path: admit, then remove by entry.
func BenchmarkPushRemove(b *testing.B) {
	q := newQueue(b, Config{Capacity: 20_000})
	for i := range 10_000 {
		push(b, q, Priority(i%2), i)
	}
	b.ReportAllocs()
	for b.Loop() {
		e, _, _ := q.Push(Batch, 0)
		q.Remove(e)
	}
}
