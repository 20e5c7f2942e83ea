// Package admission holds a pool's bounded task queues (SPEC §4.1/4.2): one
// FIFO per priority under a pool-wide capacity, the full policy applied when
// it is reached, and the dispatch order between priorities.
//
// v0 implements the `reject` policy and smooth weighted round-robin between
// priorities; the Queue's Push/Pop/Remove shape is the seam for the other full
// policies, WFQ across tenants and EDF (issue 3).
package admission

import (
	"errors"
	"fmt"
	"math"
	"sync"
)

// Priority is a task's scheduling class.
type Priority uint8

// Priorities, highest first.
const (
	Interactive Priority = iota
	Batch
	NumPriorities
)

var priorityNames = [...]string{"interactive", "batch"}

func (p Priority) String() string {
	if p < NumPriorities {
		return priorityNames[p]
	}
	return "unknown"
}

// ParsePriority maps a request's priority name; "" means interactive.
func ParsePriority(s string) (Priority, bool) {
	switch s {
	case "", "interactive":
		return Interactive, true
	case "batch":
		return Batch, true
	}
	return 0, false
}

// Policy labels (SPEC §4.1 policy_label values).
const (
	PolicyReject          = "reject"
	PolicyDropLRU         = "drop-lru"
	PolicyShedLowPriority = "shed-low-priority"
)

// ErrFull is wrapped by *FullError.
var ErrFull = errors.New("admission: queue full")

// FullError says the queue is full and which policy decided so.
type FullError struct {
	Policy   string
	Queued   int
	Capacity int
}

func (e *FullError) Error() string {
	return fmt.Sprintf("queue full (%d queued, capacity %d, policy %s)", e.Queued, e.Capacity, e.Policy)
}

func (e *FullError) Unwrap() error { return ErrFull }

// Entry is one queued value; keep it to Remove the value in O(1).
type Entry[T any] struct {
	Value      T
	prio       Priority
	prev, next *Entry[T]
	queued     bool
}

type fifo[T any] struct {
	head, tail *Entry[T]
	n          int
}

func (f *fifo[T]) push(e *Entry[T]) {
	e.prev, e.next = f.tail, nil
	if f.tail != nil {
		f.tail.next = e
	} else {
		f.head = e
	}
	f.tail = e
	f.n++
}

func (f *fifo[T]) remove(e *Entry[T]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		f.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		f.tail = e.prev
	}
	e.prev, e.next = nil, nil
	f.n--
}

// Config bounds and orders a Queue.
type Config struct {
	// Capacity bounds queued tasks across priorities (running ones excluded).
	Capacity int
	// PerPriority optionally caps one priority (0 = only Capacity).
	PerPriority [NumPriorities]int
	// Policy is the full policy; v0 supports PolicyReject.
	Policy string
	// Weights orders dispatch between priorities (smooth weighted
	// round-robin); zero weights count as 1.
	Weights [NumPriorities]float64
}

// Queue is a pool's set of priority FIFOs. It is safe for concurrent use.
type Queue[T any] struct {
	mu     sync.Mutex
	cfg    Config
	q      [NumPriorities]fifo[T]
	credit [NumPriorities]float64
}

// NewQueue returns an empty queue.
func NewQueue[T any](cfg Config) (*Queue[T], error) {
	if cfg.Capacity <= 0 {
		return nil, fmt.Errorf("admission: capacity must be > 0, got %d", cfg.Capacity)
	}
	switch cfg.Policy {
	case "", PolicyReject:
		cfg.Policy = PolicyReject
	default:
		return nil, fmt.Errorf("admission: full policy %q is not supported by this build (supported: %s)", cfg.Policy, PolicyReject)
	}
	for i, w := range cfg.Weights {
		if math.IsNaN(w) || math.IsInf(w, 0) {
			// NaN credits compare false and would starve the other priorities.
			return nil, fmt.Errorf("admission: weight of %s must be finite, got %v", Priority(i), w)
		}
		if w <= 0 {
			cfg.Weights[i] = 1
		}
	}
	return &Queue[T]{cfg: cfg}, nil
}

// Policy returns the queue's full policy label.
func (q *Queue[T]) Policy() string { return q.cfg.Policy }

// Capacity returns the pool-wide queue bound.
func (q *Queue[T]) Capacity() int { return q.cfg.Capacity }

// Push enqueues v. It returns the entry and the number of tasks queued ahead
// of it, or a *FullError when the full policy rejects it.
func (q *Queue[T]) Push(p Priority, v T) (*Entry[T], int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	total := q.lenLocked()
	if total >= q.cfg.Capacity {
		return nil, 0, &FullError{Policy: q.cfg.Policy, Queued: total, Capacity: q.cfg.Capacity}
	}
	if c := q.cfg.PerPriority[p]; c > 0 && q.q[p].n >= c {
		return nil, 0, &FullError{Policy: q.cfg.Policy, Queued: q.q[p].n, Capacity: c}
	}
	e := &Entry[T]{Value: v, prio: p, queued: true}
	ahead := q.aheadLocked(p)
	q.q[p].push(e)
	return e, ahead, nil
}

// aheadLocked returns how many queued tasks dispatch before a newcomer of
// priority p if nothing else arrives or leaves: everything of its own
// priority, plus the turns the other priorities take meanwhile.
//
// Smooth weighted round-robin keeps two busy priorities' credits within half
// a round of each other, so those turns follow from p's credit in O(1): with
// r = weight(o)/weight(p), o takes floor((own+1/2)·r + 1/2 - credit(p)/weight(p))
// turns before p's (own+1)-th (one less when that is an integer and p wins
// the tie). It is exact for two priorities; computed in float and capped by
// o's length so extreme weight ratios cannot overflow.
func (q *Queue[T]) aheadLocked(p Priority) int {
	own := q.q[p].n
	ahead := own
	wp := q.cfg.Weights[p]
	for o := Priority(0); o < NumPriorities; o++ {
		n := q.q[o].n
		if o == p || n == 0 {
			continue
		}
		// a·weight(p), kept undivided so integer weights compare exactly.
		aw := (float64(own)+0.5)*q.cfg.Weights[o] + 0.5*wp - q.credit[p]
		turns := math.Floor(aw / wp)
		if p < o && turns*wp == aw {
			turns-- // Pop keeps the lower priority on equal credit
		}
		if turns < float64(n) {
			ahead += int(max(turns, 0))
		} else {
			ahead += n
		}
	}
	return ahead
}

// Pop removes and returns the next entry to dispatch.
func (q *Queue[T]) Pop() (*Entry[T], bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	// Smooth weighted round-robin over the non-empty priorities.
	best := NumPriorities
	var sum float64
	for p := Priority(0); p < NumPriorities; p++ {
		if q.q[p].n == 0 {
			continue
		}
		q.credit[p] += q.cfg.Weights[p]
		sum += q.cfg.Weights[p]
		if best == NumPriorities || q.credit[p] > q.credit[best] {
			best = p
		}
	}
	if best == NumPriorities {
		q.credit = [NumPriorities]float64{}
		return nil, false
	}
	q.credit[best] -= sum
	e := q.q[best].head
	q.q[best].remove(e)
	e.queued = false
	return e, true
}

// PushFront puts a popped entry back at the head of its priority, ignoring the
// capacity (it held a place a moment ago): used when dispatch lost the replica
// it had counted on.
func (q *Queue[T]) PushFront(e *Entry[T]) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e.queued {
		panic("BUG: admission: PushFront of a queued entry")
	}
	f := &q.q[e.prio]
	e.prev, e.next = nil, f.head
	if f.head != nil {
		f.head.prev = e
	} else {
		f.tail = e
	}
	f.head = e
	f.n++
	e.queued = true
}

// Remove takes e out of the queue (a canceled task). It returns false if e
// was already dispatched or removed.
func (q *Queue[T]) Remove(e *Entry[T]) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e == nil || !e.queued {
		return false
	}
	q.q[e.prio].remove(e)
	e.queued = false
	return true
}

// Len returns the number of queued tasks.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lenLocked()
}

// LenPriority returns the number of queued tasks of one priority.
func (q *Queue[T]) LenPriority(p Priority) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.q[p].n
}

func (q *Queue[T]) lenLocked() int {
	n := 0
	for i := range q.q {
		n += q.q[i].n
	}
	return n
}
