package admission

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

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

// push admits v with m or fails the test (an eviction fails it too).
func push(t testing.TB, q *Queue[int], m Meta, v int) *Entry[int] {
	t.Helper()
	e, _, victim, err := q.Push(m, v)
	if err != nil {
		t.Fatalf("Push(%+v, %d): %v", m, v, err)
	}
	if victim != nil {
		t.Fatalf("Push(%+v, %d) evicted %d", m, v, victim.Value)
	}
	return e
}

// at is a Meta of priority p for tenant tn.
func at(p Priority, tn string) Meta { return Meta{Prio: p, Tenant: tn} }

// drain pops everything and returns the values in dispatch order. It stops
// after maxDrain pops so a Pop that never reports empty fails the caller's
// comparison instead of hanging the test.
func drain(q *Queue[int]) []int {
	var got []int
	for range maxDrain {
		e, ok := q.Pop()
		if !ok {
			return got
		}
		got = append(got, e.Value)
	}
	return got
}

// maxDrain bounds drain: far more entries than any test queues.
const maxDrain = 1 << 20

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
		// drop-lru is supported.
		{"drop-lru", Config{Capacity: 1, Policy: PolicyDropLRU}, "", PolicyDropLRU},
		// shed-low-priority is supported.
		{"shed", Config{Capacity: 1, Policy: PolicyShedLowPriority}, "", PolicyShedLowPriority},
		// A queue that can hold nothing is a config mistake.
		{"zero capacity", Config{Capacity: 0}, "capacity", ""},
		// Negative capacity likewise.
		{"negative capacity", Config{Capacity: -3}, "capacity", ""},
		// A negative per-priority cap is a mistake, not "no cap".
		{"negative cap", Config{Capacity: 3, PerPriority: [NumPriorities]int{0, -1}}, "cap of batch", ""},
		// A typo is refused, naming what is supported.
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

func TestPushBadPriorityPanics(t *testing.T) {
	q := newQueue(t, Config{Capacity: 1})
	defer func() {
		if msg, _ := recover().(string); !strings.HasPrefix(msg, "BUG:") {
			t.Fatalf("recovered %q, want a BUG: panic", msg)
		}
	}()
	q.Push(Meta{Prio: NumPriorities}, 1)
}

// TestFullPolicies fills a queue, pushes one more and checks the policy's
// decision: the victim (evicted and returned) or the *FullError.
func TestFullPolicies(t *testing.T) {
	type item struct {
		p      Priority
		tenant string
	}
	I, B := Interactive, Batch
	tests := []struct {
		name    string
		cfg     Config
		queued  []item // pushed in order; values are their indexes
		popPush bool   // pop the first dispatched entry and PushFront it back
		in      item   // the newcomer, value 100
		victim  int    // index of the evicted entry, -1 for none
		err     *FullError
	}{
		// reject: the newcomer is refused whatever its priority.
		{"reject interactive", Config{Capacity: 3}, []item{{B, "a"}, {B, "a"}, {I, "a"}}, false, item{I, "a"}, -1,
			&FullError{Policy: PolicyReject, Queued: 3, Capacity: 3}},
		// reject by a priority cap reports that cap and its count.
		{"reject by cap", Config{Capacity: 9, PerPriority: [NumPriorities]int{0, 2}}, []item{{B, "a"}, {B, "b"}, {I, "a"}}, false, item{B, "c"}, -1,
			&FullError{Policy: PolicyReject, Queued: 2, Capacity: 2, PerPriority: true}},
		// Below capacity nobody is evicted.
		{"drop-lru with room", Config{Capacity: 4, Policy: PolicyDropLRU}, []item{{B, "a"}, {I, "a"}}, false, item{I, "a"}, -1, nil},
		// drop-lru, interactive newcomer: every queued task is of equal or
		// lower priority, so the oldest of all goes (a batch one here).
		{"drop-lru oldest overall", Config{Capacity: 3, Policy: PolicyDropLRU}, []item{{B, "a"}, {I, "b"}, {I, "c"}}, false, item{I, "a"}, 0, nil},
		// drop-lru, the oldest is interactive: it goes.
		{"drop-lru oldest interactive", Config{Capacity: 3, Policy: PolicyDropLRU}, []item{{I, "a"}, {B, "b"}, {I, "c"}}, false, item{I, "d"}, 0, nil},
		// drop-lru, batch newcomer: older interactive work is not droppable;
		// the oldest batch task goes.
		{"drop-lru batch newcomer", Config{Capacity: 3, Policy: PolicyDropLRU}, []item{{I, "a"}, {B, "b"}, {B, "c"}}, false, item{B, "d"}, 1, nil},
		// drop-lru looks at arrival across tenants, not at one tenant's turn.
		{"drop-lru across tenants", Config{Capacity: 4, Policy: PolicyDropLRU}, []item{{B, "x"}, {B, "y"}, {B, "x"}, {B, "y"}}, false, item{B, "y"}, 0, nil},
		// drop-lru, batch newcomer, only interactive queued: nothing droppable.
		{"drop-lru nothing droppable", Config{Capacity: 2, Policy: PolicyDropLRU}, []item{{I, "a"}, {I, "b"}}, false, item{B, "a"}, -1,
			&FullError{Policy: PolicyDropLRU, Queued: 2, Capacity: 2}},
		// drop-lru under a full batch cap evicts the oldest batch task even
		// with pool capacity to spare.
		{"drop-lru by cap", Config{Capacity: 9, PerPriority: [NumPriorities]int{0, 2}, Policy: PolicyDropLRU}, []item{{I, "a"}, {B, "b"}, {B, "c"}}, false, item{B, "a"}, 1, nil},
		// drop-lru under a full interactive cap evicts within interactive,
		// though a batch task is older.
		{"drop-lru by interactive cap", Config{Capacity: 9, PerPriority: [NumPriorities]int{2, 0}, Policy: PolicyDropLRU}, []item{{B, "a"}, {I, "b"}, {I, "c"}}, false, item{I, "a"}, 1, nil},
		// A task put back after a failed dispatch keeps its age: it is still
		// the oldest.
		{"drop-lru after PushFront", Config{Capacity: 3, Policy: PolicyDropLRU}, []item{{I, "a"}, {I, "b"}, {I, "c"}}, true, item{I, "d"}, 0, nil},
		// shed, interactive newcomer: the newest batch task is shed.
		{"shed newest batch", Config{Capacity: 4, Policy: PolicyShedLowPriority}, []item{{B, "a"}, {I, "a"}, {B, "b"}, {I, "b"}}, false, item{I, "c"}, 2, nil},
		// shed, batch newcomer: nothing is of strictly lower priority.
		{"shed batch newcomer", Config{Capacity: 2, Policy: PolicyShedLowPriority}, []item{{I, "a"}, {B, "a"}}, false, item{B, "b"}, -1,
			&FullError{Policy: PolicyShedLowPriority, Queued: 2, Capacity: 2}},
		// shed, interactive newcomer, only interactive queued: refused.
		{"shed nothing lower", Config{Capacity: 2, Policy: PolicyShedLowPriority}, []item{{I, "a"}, {I, "b"}}, false, item{I, "c"}, -1,
			&FullError{Policy: PolicyShedLowPriority, Queued: 2, Capacity: 2}},
		// shed cannot help a full interactive cap: shedding batch frees no
		// interactive place.
		{"shed by cap", Config{Capacity: 9, PerPriority: [NumPriorities]int{2, 0}, Policy: PolicyShedLowPriority}, []item{{B, "a"}, {I, "b"}, {I, "c"}}, false, item{I, "d"}, -1,
			&FullError{Policy: PolicyShedLowPriority, Queued: 2, Capacity: 2, PerPriority: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, tt.cfg)
			es := make([]*Entry[int], len(tt.queued))
			for i, it := range tt.queued {
				es[i] = push(t, q, at(it.p, it.tenant), i)
			}
			if tt.popPush {
				e, _ := q.Pop()
				q.PushFront(e)
			}
			before := q.Len()
			e, ahead, victim, err := q.Push(at(tt.in.p, tt.in.tenant), 100)
			if tt.err != nil {
				var fe *FullError
				if !errors.As(err, &fe) || *fe != *tt.err || !errors.Is(err, ErrFull) {
					t.Fatalf("err = %v, want %+v", err, *tt.err)
				}
				if e != nil || victim != nil || ahead != 0 || q.Len() != before {
					t.Fatalf("a refusal changed something: e=%v victim=%v ahead=%d Len=%d", e, victim, ahead, q.Len())
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			switch {
			case tt.victim < 0 && victim != nil:
				t.Fatalf("evicted %d, want nobody", victim.Value)
			case tt.victim >= 0 && victim != es[tt.victim]:
				t.Fatalf("victim = %v, want entry %d", victim, tt.victim)
			}
			wantLen := before + 1
			if victim != nil {
				wantLen--
				if q.Remove(victim) {
					t.Fatal("the victim was still queued")
				}
			}
			if q.Len() != wantLen {
				t.Fatalf("Len = %d, want %d", q.Len(), wantLen)
			}
			if err := checkInvariants(q); err != nil {
				t.Fatal(err)
			}
			got := drain(q)
			if !strings.Contains(fmt.Sprint(got), "100") {
				t.Fatalf("the newcomer was not dispatched: %v", got)
			}
		})
	}
}

// TestSetLimits: a live queue takes new bounds and a new full policy; what
// is queued stays queued and the next newcomer meets the new rules.
func TestSetLimits(t *testing.T) {
	I, B := Interactive, Batch
	type item struct {
		p      Priority
		tenant string
	}
	tests := []struct {
		name     string
		from     Config
		queued   []item
		capacity int
		policy   string
		caps     [NumPriorities]int
		in       item
		victim   int // index of the evicted entry, -1 for none
		err      *FullError
	}{
		{"grow a full reject queue", Config{Capacity: 2}, []item{{B, "a"}, {B, "b"}}, 3, PolicyReject, [NumPriorities]int{}, item{B, "c"}, -1, nil},
		{"shrink below what is queued: refused, nothing dropped", Config{Capacity: 4}, []item{{B, "a"}, {B, "b"}, {I, "c"}}, 2, PolicyReject, [NumPriorities]int{}, item{I, "d"}, -1,
			&FullError{Policy: PolicyReject, Queued: 3, Capacity: 2}},
		{"reject to drop-lru: the oldest goes", Config{Capacity: 3}, []item{{B, "a"}, {I, "b"}, {B, "c"}}, 3, PolicyDropLRU, [NumPriorities]int{}, item{I, "d"}, 0, nil},
		{"reject to shed: the newest batch goes", Config{Capacity: 3}, []item{{B, "a"}, {I, "b"}, {B, "c"}}, 3, PolicyShedLowPriority, [NumPriorities]int{}, item{I, "d"}, 2, nil},
		{"drop-lru to shed: the heap turns over", Config{Capacity: 4, Policy: PolicyDropLRU}, []item{{B, "a"}, {B, "b"}, {B, "c"}, {B, "a"}}, 4, PolicyShedLowPriority, [NumPriorities]int{}, item{I, "d"}, 3, nil},
		{"shed to drop-lru", Config{Capacity: 4, Policy: PolicyShedLowPriority}, []item{{B, "a"}, {B, "b"}, {B, "c"}, {B, "a"}}, 4, PolicyDropLRU, [NumPriorities]int{}, item{B, "d"}, 0, nil},
		{"drop-lru to reject", Config{Capacity: 2, Policy: PolicyDropLRU}, []item{{B, "a"}, {B, "b"}}, 2, "", [NumPriorities]int{}, item{I, "d"}, -1,
			&FullError{Policy: PolicyReject, Queued: 2, Capacity: 2}},
		{"a new batch cap", Config{Capacity: 9}, []item{{B, "a"}, {B, "b"}}, 9, PolicyReject, [NumPriorities]int{0, 2}, item{B, "c"}, -1,
			&FullError{Policy: PolicyReject, Queued: 2, Capacity: 2, PerPriority: true}},
		{"a cap lifted", Config{Capacity: 9, PerPriority: [NumPriorities]int{0, 1}}, []item{{B, "a"}}, 9, PolicyReject, [NumPriorities]int{}, item{B, "c"}, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, tt.from)
			es := make([]*Entry[int], len(tt.queued))
			for i, it := range tt.queued {
				es[i] = push(t, q, at(it.p, it.tenant), i)
			}
			if err := q.SetLimits(tt.capacity, tt.policy, tt.caps); err != nil {
				t.Fatal(err)
			}
			if err := checkInvariants(q); err != nil {
				t.Fatal(err)
			}
			want := tt.policy
			if want == "" {
				want = PolicyReject
			}
			if q.Capacity() != tt.capacity || q.Policy() != want || q.Len() != len(tt.queued) {
				t.Fatalf("after SetLimits: capacity %d policy %s len %d", q.Capacity(), q.Policy(), q.Len())
			}
			e, _, victim, err := q.Push(at(tt.in.p, tt.in.tenant), 100)
			if tt.err != nil {
				var fe *FullError
				if !errors.As(err, &fe) || *fe != *tt.err {
					t.Fatalf("err = %v, want %+v", err, *tt.err)
				}
				if q.Len() != len(tt.queued) {
					t.Fatalf("a refusal changed Len to %d", q.Len())
				}
			} else {
				if err != nil || e == nil {
					t.Fatalf("Push: %v", err)
				}
				switch {
				case tt.victim < 0 && victim != nil:
					t.Fatalf("evicted %d, want nobody", victim.Value)
				case tt.victim >= 0 && victim != es[tt.victim]:
					t.Fatalf("victim = %v, want entry %d", victim, tt.victim)
				}
			}
			if err := checkInvariants(q); err != nil {
				t.Fatal(err)
			}
			// Everything still queued dispatches.
			n := q.Len()
			if got := drain(q); len(got) != n {
				t.Fatalf("drained %d of %d", len(got), n)
			}
		})
	}
}

// TestSetLimitsInvalid: bad limits are refused and change nothing.
func TestSetLimitsInvalid(t *testing.T) {
	q := newQueue(t, Config{Capacity: 2, Policy: PolicyDropLRU})
	push(t, q, at(Batch, "a"), 1)
	for _, tc := range []struct {
		capacity int
		policy   string
		caps     [NumPriorities]int
	}{
		{0, PolicyReject, [NumPriorities]int{}},
		{-1, PolicyReject, [NumPriorities]int{}},
		{2, "fifo", [NumPriorities]int{}},
		{2, PolicyReject, [NumPriorities]int{-1, 0}},
	} {
		if err := q.SetLimits(tc.capacity, tc.policy, tc.caps); err == nil {
			t.Fatalf("SetLimits(%d, %q, %v) accepted", tc.capacity, tc.policy, tc.caps)
		}
		if q.Capacity() != 2 || q.Policy() != PolicyDropLRU || q.Len() != 1 {
			t.Fatalf("a refused SetLimits changed the queue: %d %s %d", q.Capacity(), q.Policy(), q.Len())
		}
		if err := checkInvariants(q); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFullErrorMessage(t *testing.T) {
	err := error(&FullError{Policy: PolicyReject, Queued: 3, Capacity: 3})
	if msg := err.Error(); msg != "queue full (3 queued, capacity 3, policy reject)" {
		t.Fatalf("Error() = %q", msg)
	}
	if !errors.Is(err, ErrFull) {
		t.Fatal("FullError does not unwrap to ErrFull")
	}
}

func TestCapacityAcrossPriorities(t *testing.T) {
	q := newQueue(t, Config{Capacity: 3})
	push(t, q, at(Interactive, "a"), 1)
	push(t, q, at(Batch, "b"), 2)
	push(t, q, at(Interactive, "c"), 3)
	if q.Len() != 3 || q.LenPriority(Interactive) != 2 || q.LenPriority(Batch) != 1 {
		t.Fatalf("Len=%d", q.Len())
	}
	// Running tasks do not count: a pop frees a place for any priority.
	if _, ok := q.Pop(); !ok {
		t.Fatal("Pop on a full queue failed")
	}
	push(t, q, at(Batch, "a"), 5)
	// A removed (canceled) task frees its place too.
	q2 := newQueue(t, Config{Capacity: 1})
	e := push(t, q2, at(Batch, "a"), 1)
	q2.Remove(e)
	push(t, q2, at(Interactive, "a"), 2)
}

// TestPushFrontBeyondCapacity: a put-back ignores the capacity, and a full
// queue under drop-lru then evicts one per newcomer: it never grows.
func TestPushFrontBeyondCapacity(t *testing.T) {
	q := newQueue(t, Config{Capacity: 2, Policy: PolicyDropLRU})
	push(t, q, at(Batch, "a"), 1)
	push(t, q, at(Batch, "a"), 2)
	e, _ := q.Pop()
	push(t, q, at(Batch, "a"), 3) // took the popped task's place
	q.PushFront(e)
	if q.Len() != 3 {
		t.Fatalf("Len = %d, want 3", q.Len())
	}
	_, _, victim, err := q.Push(at(Batch, "a"), 4)
	if err != nil || victim != e {
		t.Fatalf("victim %v, err %v; want the put-back (oldest) entry", victim, err)
	}
	if q.Len() != 3 {
		t.Fatalf("Len = %d after an eviction, want 3", q.Len())
	}
}

func TestFIFOWithinTenant(t *testing.T) {
	for _, p := range []Priority{Interactive, Batch} {
		q := newQueue(t, Config{Capacity: 100})
		var want []int
		for i := range 50 {
			push(t, q, at(p, "a"), i)
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

// TestEDFWithinTenant: one tenant's entries dispatch by earliest deadline,
// then those without a deadline, each group in arrival order.
func TestEDFWithinTenant(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	d := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	none := time.Time{}
	tests := []struct {
		name      string
		deadlines []time.Time // pushed in order; value = index
		want      []int
	}{
		// Deadlines reorder; no-deadline entries come last in arrival order.
		{"mixed", []time.Time{d(3), none, d(1), d(2), none}, []int{2, 3, 0, 1, 4}},
		// Equal deadlines keep arrival order.
		{"ties", []time.Time{d(5), d(5), d(1), d(5)}, []int{2, 0, 1, 3}},
		// No deadlines at all is FIFO.
		{"none", []time.Time{none, none, none}, []int{0, 1, 2}},
		// A late-arriving urgent entry overtakes everything of its tenant.
		{"urgent last", []time.Time{none, d(9), d(8), d(1)}, []int{3, 2, 1, 0}},
		// Deadlines beyond UnixNano's range still sort, after earlier ones.
		{"far future", []time.Time{time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), d(1), none}, []int{1, 0, 2}},
		// And before it: the year 1 sorts first.
		{"far past", []time.Time{d(1), time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC), none}, []int{1, 0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 100})
			for i, dl := range tt.deadlines {
				push(t, q, Meta{Prio: Batch, Tenant: "a", Deadline: dl}, i)
			}
			if got := drain(q); !equalInts(got, tt.want) {
				t.Fatalf("order %v, want %v", got, tt.want)
			}
		})
	}
}

// TestEDFIsWithinTenant: a deadline reorders its own tenant only; tenants
// still take fair turns (EDF within a WFQ tier, SPEC §4.4).
func TestEDFIsWithinTenant(t *testing.T) {
	q := newQueue(t, Config{Capacity: 100})
	soon := time.Now().Add(time.Second)
	push(t, q, at(Batch, "a"), 1)
	push(t, q, at(Batch, "a"), 2)
	push(t, q, Meta{Prio: Batch, Tenant: "b", Deadline: soon}, 10)
	push(t, q, Meta{Prio: Batch, Tenant: "b", Deadline: soon}, 11)
	push(t, q, Meta{Prio: Batch, Tenant: "b", Deadline: soon}, 12)
	if got, want := drain(q), []int{1, 10, 2, 11, 12}; !equalInts(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

// TestWFQShares keeps every tenant backlogged and counts dispatches.
func TestWFQShares(t *testing.T) {
	tests := []struct {
		name    string
		weights []float64 // tenant i weight
		pops    int
		want    []int // dispatches per tenant
		tol     int   // allowed deviation per tenant
	}{
		// 3:1 over 400 pops: 300:100 within ±2% (the issue asks ±15% end to end).
		{"3:1", []float64{3, 1}, 400, []int{300, 100}, 8},
		// Equal weights share equally.
		{"1:1:1", []float64{1, 1, 1}, 300, []int{100, 100, 100}, 0},
		// Unset weights count as 1.
		{"unset", []float64{0, math.NaN(), -1}, 300, []int{100, 100, 100}, 0},
		// Fractional weights keep their ratio.
		{"0.5:0.25", []float64{0.5, 0.25}, 300, []int{200, 100}, 1},
		// Many tenants with skewed weights.
		{"4:2:1:1", []float64{4, 2, 1, 1}, 800, []int{400, 200, 100, 100}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 10_000})
			for i := range tt.pops {
				for tn, w := range tt.weights {
					push(t, q, Meta{Prio: Interactive, Tenant: fmt.Sprint(tn), Weight: w}, tn*100_000+i)
				}
			}
			got := make([]int, len(tt.weights))
			for range tt.pops {
				e, _ := q.Pop()
				got[e.Value/100_000]++
			}
			for i := range got {
				if d := got[i] - tt.want[i]; d > tt.tol || -d > tt.tol {
					t.Fatalf("dispatches %v, want %v ±%d", got, tt.want, tt.tol)
				}
			}
		})
	}
}

// TestWFQRoundRobin: equal weights alternate strictly, whatever the arrival
// pattern (all of one tenant first here).
func TestWFQRoundRobin(t *testing.T) {
	q := newQueue(t, Config{Capacity: 100})
	for _, tn := range []string{"a", "b", "c"} {
		for i := range 4 {
			push(t, q, at(Batch, tn), int(tn[0]-'a')*10+i)
		}
	}
	want := []int{0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23}
	if got := drain(q); !equalInts(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

// TestWFQNoBankedCredit: a tenant idle while another was served gets no
// burst when it comes back; it shares from then on.
func TestWFQNoBankedCredit(t *testing.T) {
	tests := []struct {
		name   string
		before int // pops of tenant a alone before b arrives
	}{
		// b arrives after a had the priority to itself for a long time.
		{"late arrival", 100},
		// b arrives right after a started.
		{"early arrival", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 1000})
			for i := range 300 {
				push(t, q, at(Batch, "a"), i)
			}
			for range tt.before {
				q.Pop()
			}
			for i := range 100 {
				push(t, q, at(Batch, "b"), 1000+i)
			}
			// From now on they alternate: b never gets two in a row.
			run, gotB := 0, 0
			for range 100 {
				e, _ := q.Pop()
				if e.Value >= 1000 {
					gotB++
					run++
					if run > 1 {
						t.Fatal("b got two dispatches in a row: a burst from banked credit")
					}
				} else {
					run = 0
				}
			}
			if gotB != 50 {
				t.Fatalf("b got %d of 100, want 50", gotB)
			}
		})
	}
}

// TestWFQOneQueuedTenant: a tenant that keeps exactly one task queued (it
// resubmits as soon as one is dispatched) must not start every time at the
// virtual clock and cut in line: its finished tag is remembered while idle.
func TestWFQOneQueuedTenant(t *testing.T) {
	q := newQueue(t, Config{Capacity: 1000})
	for i := range 200 {
		push(t, q, at(Batch, "a"), i)
	}
	push(t, q, at(Batch, "b"), 1000)
	gotB := 0
	for range 100 {
		e, _ := q.Pop()
		if e.Value >= 1000 {
			gotB++
			push(t, q, at(Batch, "b"), 1000+gotB)
		}
	}
	if gotB != 50 {
		t.Fatalf("b got %d of 100, want 50 (equal weights)", gotB)
	}
}

// TestWFQWeightUpdate: the latest Push of a tenant sets its weight.
func TestWFQWeightUpdate(t *testing.T) {
	q := newQueue(t, Config{Capacity: 1000})
	for i := range 100 {
		push(t, q, Meta{Prio: Batch, Tenant: "a", Weight: 1}, i)
		push(t, q, Meta{Prio: Batch, Tenant: "b", Weight: 1}, 1000+i)
	}
	push(t, q, Meta{Prio: Batch, Tenant: "a", Weight: 3}, 100)
	a := 0
	for range 80 {
		if e, _ := q.Pop(); e.Value < 1000 {
			a++
		}
	}
	if a < 59 || a > 61 {
		t.Fatalf("a got %d of 80 at weight 3:1, want 60", a)
	}
}

func TestWeightNormalization(t *testing.T) {
	f := func(in, want float64) {
		t.Helper()
		q := newQueue(t, Config{Capacity: 1})
		e := push(t, q, Meta{Weight: in}, 0)
		if got := e.Meta().Weight; got != want {
			t.Fatalf("weight %v is used as %v, want %v", in, got, want)
		}
	}
	f(2.5, 2.5)          // kept
	f(0, 1)              // unset
	f(-3, 1)             // negative
	f(math.NaN(), 1)     // NaN
	f(math.Inf(1), 1024) // +Inf clamps to the maximum
	f(1e9, 1024)         // huge clamps too
	f(1e-300, 1.0/1024)  // tiny clamps up: tags stay precise
	f(math.Inf(-1), 1)   // -Inf is negative
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
			// Several tenants per priority: the split between priorities
			// does not depend on them.
			for i := range tt.queuedInt {
				push(t, q, at(Interactive, fmt.Sprint(i%3)), i)
			}
			for i := range tt.queuedBatch {
				push(t, q, at(Batch, fmt.Sprint(i%5)), i)
			}
			var n [NumPriorities]int
			gap, maxGap := 0, 0
			for range tt.pops {
				e, ok := q.Pop()
				if !ok {
					t.Fatal("queue ran dry")
				}
				n[e.Meta().Prio]++
				if e.Meta().Prio == Batch {
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
		push(t, q, at(Interactive, "i"), i)
		push(t, q, at(Batch, "b"), i)
	}
	batch := 0
	for i := range 900 {
		e, _ := q.Pop()
		if e.Meta().Prio == Interactive {
			push(t, q, at(Interactive, fmt.Sprint(i%7)), i)
		} else {
			batch++
			push(t, q, at(Batch, "b"), i)
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
		// A middle entry is removed; its neighbours stay in order.
		{"middle", []int{2}, []int{0, 1, 3, 4}},
		// The head.
		{"head", []int{0}, []int{1, 2, 3, 4}},
		// The tail, then a push must still come after the rest.
		{"tail", []int{4}, []int{0, 1, 2, 3}},
		// Adjacent entries.
		{"adjacent", []int{1, 2}, []int{0, 3, 4}},
		// Everything: the tenant is forgotten and the queue reusable.
		{"all", []int{3, 0, 4, 2, 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 10})
			var es []*Entry[int]
			for i := range 5 {
				es = append(es, push(t, q, at(Batch, "a"), i))
			}
			for _, i := range tt.remove {
				if !q.Remove(es[i]) {
					t.Fatalf("Remove(entry %d) = false", i)
				}
				if q.Remove(es[i]) {
					t.Fatalf("second Remove(entry %d) = true", i)
				}
				if err := checkInvariants(q); err != nil {
					t.Fatal(err)
				}
			}
			if q.Len() != 5-len(tt.remove) {
				t.Fatalf("Len = %d after %d removals", q.Len(), len(tt.remove))
			}
			push(t, q, at(Batch, "a"), 99)
			want := append(tt.want, 99)
			if got := drain(q); !equalInts(got, want) {
				t.Fatalf("order after Remove = %v, want %v", got, want)
			}
		})
	}
}

// TestRemoveDoesNotCharge: canceling a tenant's queued task does not cost
// it a turn.
func TestRemoveDoesNotCharge(t *testing.T) {
	q := newQueue(t, Config{Capacity: 100})
	a1 := push(t, q, at(Batch, "a"), 1)
	push(t, q, at(Batch, "a"), 2)
	push(t, q, at(Batch, "b"), 10)
	push(t, q, at(Batch, "b"), 11)
	q.Remove(a1)
	if got, want := drain(q), []int{2, 10, 11}; !equalInts(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestRemoveDispatched(t *testing.T) {
	q := newQueue(t, Config{Capacity: 10})
	a := push(t, q, at(Interactive, "a"), 1)
	b := push(t, q, at(Interactive, "a"), 2)
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

// TestRemoveIsLogTime removes the middle of a long queue many times; a
// linear scan would take ~N²/2 steps and time out, so this guards the
// O(log n) promise without a wall-clock assertion.
func TestRemoveIsLogTime(t *testing.T) {
	const n = 200_000
	q := newQueue(t, Config{Capacity: n, Policy: PolicyDropLRU})
	es := make([]*Entry[int], n)
	for i := range n {
		es[i] = push(t, q, at(Batch, "a"), i)
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

// TestTenantStateReclaimed: tenants that come and go leave no records
// behind, while the queue's bookkeeping stays bounded.
func TestTenantStateReclaimed(t *testing.T) {
	q := newQueue(t, Config{Capacity: 100})
	push(t, q, at(Batch, "steady"), 0)
	for i := range 10_000 {
		push(t, q, at(Batch, "steady"), i)
		push(t, q, at(Batch, fmt.Sprint("transient", i)), i)
		q.Pop()
		q.Pop()
	}
	q.mu.Lock()
	n := len(q.pq[Batch].tenants)
	q.mu.Unlock()
	if n > 4 {
		t.Fatalf("%d tenant records for 2 backlogged tenants at most", n)
	}
	drain(q)
	q.mu.Lock()
	n = len(q.pq[Batch].tenants) + len(q.pq[Interactive].tenants)
	q.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d tenant records left in an empty queue", n)
	}
}

// TestPushFront: a put-back entry dispatches next again, as if it had never
// been popped, and the whole later order is unchanged.
func TestPushFront(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		build func(q *Queue[int]) // deterministic content
	}{
		// One tenant per priority, 8:1.
		{"priorities", Config{Capacity: 100, Weights: [NumPriorities]float64{8, 1}}, func(q *Queue[int]) {
			for i := range 20 {
				q.Push(at(Priority(i%2), "a"), i)
			}
		}},
		// Three tenants of different weights in one priority.
		{"tenants", Config{Capacity: 100}, func(q *Queue[int]) {
			for i := range 30 {
				q.Push(Meta{Prio: Batch, Tenant: fmt.Sprint(i % 3), Weight: float64(1 + i%3)}, i)
			}
		}},
		// Deadlines within tenants, both priorities, non-dyadic weights.
		{"deadlines", Config{Capacity: 100, Weights: [NumPriorities]float64{0.7, 0.3}}, func(q *Queue[int]) {
			base := time.Unix(1e9, 0)
			for i := range 40 {
				m := Meta{Prio: Priority(i % 2), Tenant: fmt.Sprint(i % 4), Weight: 3}
				if i%3 == 0 {
					m.Deadline = base.Add(time.Duration(40-i) * time.Second)
				}
				q.Push(m, i)
			}
		}},
		// The only entry: its tenant and priority are forgotten at Pop.
		{"only entry", Config{Capacity: 1}, func(q *Queue[int]) {
			q.Push(at(Interactive, "a"), 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// At every point of the drain, a pop put back changes nothing.
			ref := newQueue(t, tt.cfg)
			tt.build(ref)
			want := drain(ref)
			for k := range want {
				q := newQueue(t, tt.cfg)
				tt.build(q)
				for range k {
					q.Pop()
				}
				e, _ := q.Pop()
				q.PushFront(e)
				if err := checkInvariants(q); err != nil {
					t.Fatal(err)
				}
				if got := drain(q); !equalInts(got, want[k:]) {
					t.Fatalf("after %d pops and a put-back: %v, want %v", k, got, want[k:])
				}
			}
		})
	}
}

// TestPushFrontAfterOthers: putting back an older pop gives back its
// tenant's turn (as far as the virtual clock allows).
func TestPushFrontAfterOthers(t *testing.T) {
	q := newQueue(t, Config{Capacity: 100})
	for i := range 3 {
		push(t, q, at(Batch, "a"), i)
		push(t, q, at(Batch, "b"), 10+i)
	}
	a0, _ := q.Pop() // a
	b0, _ := q.Pop() // b
	q.PushFront(a0)  // not the latest pop: the charge is subtracted
	q.PushFront(b0)
	if got, want := drain(q), []int{0, 10, 1, 11, 2, 12}; !equalInts(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestPushFrontQueuedPanics(t *testing.T) {
	q := newQueue(t, Config{Capacity: 4})
	e := push(t, q, at(Interactive, "a"), 1)
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

// TestPushAhead checks the `ahead` Push returns (queue_position at
// admission) on hand-computed cases.
func TestPushAhead(t *testing.T) {
	type item struct {
		p      Priority
		tenant string
		weight float64
		dl     int // seconds from a base; 0 = none
	}
	I, B := Interactive, Batch
	rep := func(n int, it item) []item {
		s := make([]item, n)
		for i := range s {
			s[i] = it
		}
		return s
	}
	cat := func(ss ...[]item) []item {
		var s []item
		for _, x := range ss {
			s = append(s, x...)
		}
		return s
	}
	w81 := [NumPriorities]float64{8, 1}
	tests := []struct {
		name    string
		weights [NumPriorities]float64
		queued  []item
		in      item
		want    int
	}{
		// Empty queue: dispatched next.
		{"empty", w81, nil, item{I, "a", 1, 0}, 0},
		// Only its own tenant queued: FIFO position.
		{"own only", w81, rep(5, item{I, "a", 1, 0}), item{I, "a", 1, 0}, 5},
		// Interactive newcomer ahead of a long batch queue: goes first.
		{"interactive before batch", w81, rep(50, item{B, "a", 1, 0}), item{I, "a", 1, 0}, 0},
		// 8:1 dispatches I I I I B I I I I: the fifth interactive waits for one batch.
		{"fifth interactive", w81, cat(rep(4, item{I, "a", 1, 0}), rep(50, item{B, "a", 1, 0})), item{I, "a", 1, 0}, 5},
		// The first batch task runs fifth in the round, not ninth.
		{"first batch", w81, rep(50, item{I, "a", 1, 0}), item{B, "a", 1, 0}, 4},
		// A new tenant joins the current round: after the two heads (ties
		// go to the older head), before everyone's second task.
		{"new tenant", w81, cat(rep(3, item{B, "a", 1, 0}), rep(3, item{B, "b", 1, 0})), item{B, "c", 1, 0}, 2},
		// A backlogged tenant's newcomer waits for its own 3 and the other's 3.
		{"backlogged tenant", w81, cat(rep(3, item{B, "a", 1, 0}), rep(3, item{B, "b", 1, 0})), item{B, "b", 1, 0}, 6},
		// Weight 4:1: a's 8 tasks take 2 virtual units, so b's 2 queued go
		// first, and b's third lands after everything.
		{"weighted heavy", w81, cat(rep(8, item{B, "a", 4, 0}), rep(2, item{B, "b", 1, 0})), item{B, "a", 4, 0}, 10},
		// The light tenant's newcomer at virtual 2 comes after a's 8 at 0..1.75.
		{"weighted light", w81, cat(rep(8, item{B, "a", 4, 0}), rep(2, item{B, "b", 1, 0})), item{B, "b", 1, 0}, 10},
		// A light tenant with nothing queued starts now: after the ties at 0.
		{"weighted new", w81, cat(rep(8, item{B, "a", 4, 0}), rep(2, item{B, "b", 1, 0})), item{B, "c", 1, 0}, 2},
		// A deadline earlier than its tenant's head jumps its own tenant.
		{"urgent deadline", w81, cat(rep(4, item{B, "a", 1, 9}), rep(4, item{B, "b", 1, 0})), item{B, "a", 1, 1}, 1},
		// A later deadline counts the tenant's deadline entries (exact here:
		// it is the latest): a's two at virtual 0 and 1, b's three at 0..2
		// (the tie at 2 goes to b's older head).
		{"later deadline", w81, cat(rep(2, item{B, "a", 1, 0}), rep(2, item{B, "a", 1, 5}), rep(4, item{B, "b", 1, 0})), item{B, "a", 1, 9}, 5},
		// Tenants and priorities together: batch tenant c is the third batch
		// dispatch (after a's and b's heads); 8:1 runs 4, 8 and 8 more
		// interactive before the first three batch turns, but only 20 are queued.
		{"both", w81, cat(rep(20, item{I, "x", 1, 0}), rep(2, item{B, "a", 1, 0}), rep(2, item{B, "b", 1, 0})), item{B, "c", 1, 0}, 2 + 20},
		// An extreme priority ratio must not overflow int.
		{"extreme ratio", [NumPriorities]float64{1e300, 1e-300}, cat(rep(3, item{I, "a", 1, 0}), rep(2, item{B, "a", 1, 0})), item{B, "a", 1, 0}, 5},
	}
	base := time.Unix(1e9, 0)
	meta := func(it item) Meta {
		m := Meta{Prio: it.p, Tenant: it.tenant, Weight: it.weight}
		if it.dl > 0 {
			m.Deadline = base.Add(time.Duration(it.dl) * time.Second)
		}
		return m
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(t, Config{Capacity: 1000, Weights: tt.weights})
			for _, it := range tt.queued {
				push(t, q, meta(it), 0)
			}
			_, ahead, _, err := q.Push(meta(tt.in), 1)
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

// TestPushAheadExact: after any history of pushes, pops, removals and
// put-backs, `ahead` is exactly how many tasks dispatch before the newcomer
// when nothing else changes — for weights exact in binary floating point
// and a newcomer whose place in its own tenant is known (no deadline, or a
// deadline later than all of its tenant's).
func TestPushAheadExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	tw := []float64{1, 2, 0.5, 4}
	base := time.Unix(1e9, 0)
	for _, w := range [][NumPriorities]float64{{8, 1}, {1, 1}, {3, 1}, {1, 8}, {2, 3}, {5, 2}, {0.5, 2.5}} {
		for range 1000 {
			q := newQueue(t, Config{Capacity: 1000, Weights: w})
			var live []*Entry[int]
			for k := rng.IntN(80); k > 0; k-- {
				switch r := rng.IntN(10); {
				case r < 6:
					tn := rng.IntN(len(tw))
					m := Meta{Prio: Priority(rng.IntN(2)), Tenant: fmt.Sprint(tn), Weight: tw[tn]}
					if rng.IntN(3) == 0 {
						m.Deadline = base.Add(time.Duration(rng.IntN(100)) * time.Second)
					}
					live = append(live, push(t, q, m, 0))
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
			tn := rng.IntN(len(tw))
			m := Meta{Prio: Priority(rng.IntN(2)), Tenant: fmt.Sprint(tn), Weight: tw[tn]}
			if rng.IntN(2) == 0 {
				m.Deadline = base.Add(time.Hour) // later than any queued
			}
			_, ahead, _, err := q.Push(m, 1)
			if err != nil {
				t.Fatal(err)
			}
			if pos := position(q, 1); pos != ahead {
				t.Fatalf("weights %v, newcomer %+v: ahead = %d, dispatched after %d", w, m, ahead, pos)
			}
		}
	}
}

// TestPushAheadEstimate: with arbitrary weights and deadlines `ahead` stays
// an estimate within bounds, and close to the truth on average.
func TestPushAheadEstimate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	base := time.Unix(1e9, 0)
	var sumErr, sumPos float64
	for range 3000 {
		q := newQueue(t, Config{Capacity: 1000, Weights: [NumPriorities]float64{8, 1}})
		for k := rng.IntN(100); k > 0; k-- {
			m := Meta{Prio: Priority(rng.IntN(2)), Tenant: fmt.Sprint(rng.IntN(5)), Weight: 0.3 + 3*rng.Float64()}
			if rng.IntN(2) == 0 {
				m.Deadline = base.Add(time.Duration(rng.IntN(100)) * time.Second)
			}
			push(t, q, m, 0)
			if rng.IntN(4) == 0 {
				q.Pop()
			}
		}
		n := q.Len()
		m := Meta{Prio: Priority(rng.IntN(2)), Tenant: fmt.Sprint(rng.IntN(6)), Weight: 0.3 + 3*rng.Float64()}
		if rng.IntN(2) == 0 {
			m.Deadline = base.Add(time.Duration(rng.IntN(100)) * time.Second)
		}
		_, ahead, _, _ := q.Push(m, 1)
		if ahead < 0 || ahead > n || n == 0 && ahead != 0 {
			t.Fatalf("ahead = %d with %d queued", ahead, n)
		}
		pos := position(q, 1)
		sumErr += math.Abs(float64(ahead - pos))
		sumPos += float64(pos)
	}
	// The deadline bound overestimates; it stays a good estimate overall.
	if rel := sumErr / sumPos; rel > 0.15 {
		t.Fatalf("mean |ahead - position| is %.0f%% of the mean position", 100*rel)
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
	// Both retry loops give up at the deadline, so a queue that stays full
	// or never hands out an entry fails the test instead of hanging it.
	deadline := time.Now().Add(30 * time.Second)
	tenants := []string{"a", "b", "c"}
	for p := range producers {
		prodWG.Go(func() {
			for i := 0; i < perProd; {
				if time.Now().After(deadline) {
					t.Errorf("producer %d: pushed %d of %d before the deadline (queue Len %d)", p, i, perProd, q.Len())
					return
				}
				v := p*perProd + i
				m := Meta{Prio: Priority(v % 2), Tenant: tenants[v%3], Weight: float64(1 + v%3)}
				e, _, _, err := q.Push(m, v)
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
				if time.Now().After(deadline) {
					t.Errorf("consumer: still running at the deadline (queue Len %d)", q.Len())
					return
				}
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
	if err := checkInvariants(q); err != nil {
		t.Fatal(err)
	}
}

// benchTenants are the tenant names the benchmarks spread load over.
var benchTenants = func() []string {
	s := make([]string, 256)
	for i := range s {
		s[i] = fmt.Sprintf("tenant-%03d", i)
	}
	return s
}()

// benchMeta is the i-th benchmark task: 256 tenants with weights 1..4, one
// task in nine batch (the 8:1 default keeps both priorities busy), a third
// with deadlines.
func benchMeta(i int) Meta {
	m := Meta{Tenant: benchTenants[i%len(benchTenants)], Weight: float64(1 + i%4)}
	if i%9 == 8 {
		m.Prio = Batch
	}
	if i%3 == 0 {
		m.Deadline = time.Unix(1e9+int64(i%1000), 0)
	}
	return m
}

// fill returns a queue holding n benchmark tasks.
func fill(b *testing.B, n int, policy string) *Queue[int] {
	q := newQueue(b, Config{Capacity: 2 * n, Policy: policy, Weights: [NumPriorities]float64{8, 1}})
	for i := range n {
		push(b, q, benchMeta(i), i)
	}
	return q
}

// benchPushPop admits one task and dispatches one, keeping n queued.
func benchPushPop(b *testing.B, n int, policy string) {
	q := fill(b, n, policy)
	b.ReportAllocs()
	i := n
	for b.Loop() {
		if _, _, _, err := q.Push(benchMeta(i), i); err != nil {
			b.Fatal(err)
		}
		if _, ok := q.Pop(); !ok {
			b.Fatal("empty")
		}
		i++
	}
	if q.Len() != n {
		b.Fatalf("Len = %d", q.Len())
	}
}

// BenchmarkPushPop measures one admission and one dispatch with 10k tasks
// queued across 256 tenants (issue 3 item 9: under 2 µs). The only
// allocation is the Entry the caller keeps for Remove. drop-lru also keeps
// the arrival heap the full policies need.
func BenchmarkPushPop(b *testing.B) {
	for _, policy := range []string{PolicyReject, PolicyDropLRU} {
		b.Run("policy="+policy, func(b *testing.B) { benchPushPop(b, 10_000, policy) })
	}
}

// BenchmarkPushPopScale shows the cost growing with log n, not n.
func BenchmarkPushPopScale(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) { benchPushPop(b, n, PolicyDropLRU) })
	}
}

// BenchmarkPushEvict is a full queue under drop-lru: every admission evicts
// the oldest task.
func BenchmarkPushEvict(b *testing.B) {
	q := newQueue(b, Config{Capacity: 10_000, Policy: PolicyDropLRU, Weights: [NumPriorities]float64{8, 1}})
	for i := range 10_000 {
		push(b, q, benchMeta(i), i)
	}
	b.ReportAllocs()
	i := 10_000
	for b.Loop() {
		m := benchMeta(i)
		m.Prio = Interactive
		if _, _, v, err := q.Push(m, i); err != nil || v == nil {
			b.Fatal(v, err)
		}
		i++
	}
}

// BenchmarkPushRemove is the cancel path: admit, then remove by entry.
func BenchmarkPushRemove(b *testing.B) {
	q := fill(b, 10_000, PolicyDropLRU)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e, _, _, _ := q.Push(benchMeta(i), 0)
		q.Remove(e)
		i++
	}
}

// TestRebase: a priority that never empties has its virtual clock shifted
// back now and then; shares and order are unaffected.
func TestRebase(t *testing.T) {
	q := newQueue(t, Config{Capacity: 10_000})
	q.rebaseAt = 16
	for i := range 4000 {
		push(t, q, Meta{Prio: Batch, Tenant: "a", Weight: 3}, i)
		push(t, q, Meta{Prio: Batch, Tenant: "b", Weight: 1}, 10_000+i)
	}
	a := 0
	for i := range 4000 {
		e, _ := q.Pop()
		if e.Value < 10_000 {
			a++
		}
		if i%97 == 0 {
			q.PushFront(e) // across rebases too
			q.Pop()
		}
	}
	if a < 2990 || a > 3010 {
		t.Fatalf("a got %d of 4000 at 3:1 across rebases, want 3000", a)
	}
	q.mu.Lock()
	epoch, vtime := q.pq[Batch].epoch, q.pq[Batch].vtime
	q.mu.Unlock()
	if epoch < 50 || vtime >= 16 { // vtime moves ~1/4 per pop: ~62 rebases
		t.Fatalf("epoch %d, vtime %v: the clock was not rebased", epoch, vtime)
	}
	if err := checkInvariants(q); err != nil {
		t.Fatal(err)
	}
}
