// Package admission is a pool's scheduler queue (SPEC §4): it bounds the
// queued tasks, applies the full policy of §4.2 when the bound is reached, and
// decides the dispatch order of §4.3/§4.4:
//
//   - between priorities, smooth weighted round-robin by the configured
//     weights (exact for two classes, and batch is never starved);
//   - between the tenants of one priority, weighted fair queuing by tenant
//     weight (start-time fair queuing, see prioQueue);
//   - within one tenant, earliest deadline first, then the tasks without a
//     deadline, each in arrival order.
//
// Push, Pop, PushFront and Remove are O(log n) in the queue's length and its
// tenants; Push's queue-position estimate is O(tenants backlogged in the
// newcomer's priority).
package admission

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
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

// FullError says the queue (or one priority's cap) is full and the policy
// found nothing to evict.
type FullError struct {
	Policy   string
	Queued   int // entries counted against the bound that was hit
	Capacity int // that bound: the pool's capacity or the priority's cap
	// PerPriority: the bound hit was the priority's cap, not the pool's.
	PerPriority bool
}

func (e *FullError) Error() string {
	return fmt.Sprintf("queue full (%d queued, capacity %d, policy %s)", e.Queued, e.Capacity, e.Policy)
}

func (e *FullError) Unwrap() error { return ErrFull }

// Tenant weights are clamped into [minWeight, maxWeight] so virtual tags
// keep their precision: a weight of 1e-300 would make one dispatch jump the
// virtual clock past every later increment. Powers of two keep 1/w exact.
const (
	minWeight = 1.0 / 1024
	maxWeight = 1024.0
)

// normWeight maps a tenant weight to the one the scheduler uses: <= 0 or NaN
// count as 1, the rest is clamped into [minWeight, maxWeight] (+Inf too).
func normWeight(w float64) float64 {
	switch {
	case !(w > 0):
		return 1
	case w < minWeight:
		return minWeight
	case w > maxWeight:
		return maxWeight
	}
	return w
}

// Meta is what the scheduler knows of a queued value.
type Meta struct {
	Prio   Priority
	Tenant string
	// Weight is the tenant's share within its priority relative to the
	// other backlogged tenants of that priority. The latest Push of a
	// tenant sets it. <= 0 or NaN count as 1; see minWeight/maxWeight.
	Weight float64
	// Deadline orders the tenant's own entries (earliest first); zero means
	// none, and those dispatch after the tenant's entries with a deadline.
	Deadline time.Time
}

// noDeadline sorts after every real deadline.
const noDeadline = math.MaxInt64

// deadlineKey maps a deadline to a comparable key, clamping the years
// UnixNano cannot represent.
func deadlineKey(d time.Time) int64 {
	if d.IsZero() {
		return noDeadline
	}
	const maxSec = math.MaxInt64 / int64(time.Second)
	switch s := d.Unix(); {
	case s >= maxSec:
		return noDeadline - 1
	case s <= -maxSec:
		return math.MinInt64
	}
	return d.UnixNano()
}

type entryState uint8

const (
	stateOut    entryState = iota // removed, evicted, or never queued
	stateQueued                   // in the queue
	statePopped                   // handed out by Pop; PushFront may return it
)

// Entry is one queued value; keep it to Remove the value in O(log n).
type Entry[T any] struct {
	Value T

	meta  Meta  // immutable after Push, weight normalized
	dl    int64 // deadlineKey(meta.Deadline)
	seq   uint64
	ten   *tenant[T] // while queued
	hi    int        // index in ten.h
	si    int        // index in the priority's bySeq heap
	state entryState

	// Set by Pop so PushFront can give back what it charged.
	mask  uint8   // priorities that were backlogged (round-robin credits)
	epoch uint64  // the priority's epoch
	start float64 // the tenant's virtual tag when this entry was served
	inc   float64 // what serving it added to that tag
}

// Meta returns what the entry was pushed with (Weight as the scheduler used it).
func (e *Entry[T]) Meta() Meta { return e.meta }

// Config bounds and orders a Queue.
type Config struct {
	// Capacity bounds queued tasks across priorities (running ones excluded).
	Capacity int
	// PerPriority optionally caps one priority (0 = only Capacity).
	PerPriority [NumPriorities]int
	// Policy is the full policy: PolicyReject ("" too), PolicyDropLRU or
	// PolicyShedLowPriority.
	Policy string
	// Weights orders dispatch between priorities (smooth weighted
	// round-robin); weights <= 0 count as 1, NaN and Inf are refused.
	Weights [NumPriorities]float64
}

// tenant is one tenant's backlog within one priority: its entries in EDF
// order and its virtual start tag (the tag its next served entry gets).
type tenant[T any] struct {
	name string
	w    float64 // weight (latest Push)
	inc  float64 // 1/w: what one dispatch adds to tag
	tag  float64
	h    []*Entry[T] // EDF heap
	hseq uint64      // h[0].seq, kept here for the tenant heap's comparisons
	nDl  int         // entries in h with a deadline
	hi   int         // index in the priority's active or idle heap
}

// prioQueue is one priority's backlog, shared fairly between its tenants by
// start-time fair queuing (Goyal et al., SIGCOMM '96) with unit-cost tasks:
//
//   - each backlogged tenant has a virtual start tag; Pop serves the tenant
//     with the smallest (tag, seq of its next entry), sets the virtual clock
//     vtime to that tag, and advances the tenant's tag by 1/weight;
//   - a tenant that becomes backlogged starts at max(its last tag, vtime), so
//     an idle tenant banks no credit and a tenant that keeps one task queued
//     cannot cut in line every time.
//
// A tenant whose queue empties is kept (in idle, by tag) only while its tag
// is ahead of vtime, since afterwards max(tag, vtime) = vtime forgets it
// anyway; Pop prunes the idle heap as vtime advances. When the whole priority
// empties, vtime and every tag go back to zero (a new epoch): with nothing
// backlogged there is no history to be fair about. A priority that never
// empties has its tags shifted back by vtime once vtime passes rebaseAt
// (also a new epoch), so small increments keep their precision.
type prioQueue[T any] struct {
	n       int
	vtime   float64
	epoch   uint64
	tenants map[string]*tenant[T] // backlogged and idle
	active  tenantHeap[T]         // backlogged, by (tag, head seq)
	idle    tenantHeap[T]         // idle with tag > vtime, by tag
	bySeq   seqHeap[T]            // every entry, for the full policies
}

// Queue is a pool's scheduler queue. It is safe for concurrent use.
type Queue[T any] struct {
	mu  sync.Mutex
	cfg Config
	n   int
	seq uint64
	pq  [NumPriorities]prioQueue[T]
	// credit holds the smooth weighted round-robin state between
	// priorities; it always sums to zero.
	credit [NumPriorities]float64
	// lastPop and lastCredit let PushFront undo the latest Pop exactly.
	lastPop    *Entry[T]
	lastCredit [NumPriorities]float64
	free       []*tenant[T] // recycled tenant records
	rebaseAt   float64      // defaultRebaseAt; tests lower it
}

// defaultRebaseAt bounds the virtual clock: below 2^30 a float64 tag has an
// ulp under 2.4e-7, so the smallest increment (1/maxWeight) is kept to
// 0.03%. Reaching it takes at least 2^20 dispatches without the priority
// ever emptying; the rebase costs O(tenants).
const defaultRebaseAt = 1 << 30

// Recycled tenant records keep an EDF slice of at most maxFreeCap, and at
// most maxFree records are kept.
const (
	maxFree    = 1024
	maxFreeCap = 64
)

// NewQueue returns an empty queue.
func NewQueue[T any](cfg Config) (*Queue[T], error) {
	sign, err := checkLimits(&cfg)
	if err != nil {
		return nil, err
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
	q := &Queue[T]{cfg: cfg, rebaseAt: defaultRebaseAt}
	for i := range q.pq {
		q.pq[i].tenants = make(map[string]*tenant[T])
		q.pq[i].active.idle = false
		q.pq[i].idle.idle = true
		q.pq[i].bySeq.sign = sign
	}
	return q, nil
}

// checkLimits validates cfg's capacity, caps and policy, normalizes an
// empty policy to PolicyReject and returns the policy's seqHeap sign.
func checkLimits(cfg *Config) (sign int, err error) {
	if cfg.Capacity <= 0 {
		return 0, fmt.Errorf("admission: capacity must be > 0, got %d", cfg.Capacity)
	}
	switch cfg.Policy {
	case "", PolicyReject:
		cfg.Policy = PolicyReject
	case PolicyDropLRU:
		sign = 1 // oldest on top
	case PolicyShedLowPriority:
		sign = -1 // newest on top
	default:
		return 0, fmt.Errorf("admission: full policy %q is not supported (supported: %s, %s, %s)",
			cfg.Policy, PolicyReject, PolicyDropLRU, PolicyShedLowPriority)
	}
	for i, c := range cfg.PerPriority {
		if c < 0 {
			return 0, fmt.Errorf("admission: cap of %s must be >= 0, got %d", Priority(i), c)
		}
	}
	return sign, nil
}

// SetLimits changes the bounds and the full policy of a live queue (a
// config apply); the weights stay. Nothing queued is dropped: when the new
// bounds are below what is queued, the queue stays over them and admits a
// newcomer only as its policy allows (reject: none until enough have been
// dispatched; drop-lru and shed-low-priority: by evicting one entry per
// newcomer, as for any full queue). Invalid limits return an error and
// change nothing.
func (q *Queue[T]) SetLimits(capacity int, policy string, perPriority [NumPriorities]int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	next := q.cfg
	next.Capacity, next.Policy, next.PerPriority = capacity, policy, perPriority
	sign, err := checkLimits(&next)
	if err != nil {
		return err
	}
	q.cfg = next
	for i := range q.pq {
		pq := &q.pq[i]
		if pq.bySeq.sign == sign {
			continue
		}
		// The arrival heap is ordered (or kept at all) by the policy:
		// rebuild it from the tenants' entries.
		pq.bySeq.sign = sign
		clear(pq.bySeq.s)
		pq.bySeq.s = pq.bySeq.s[:0]
		if sign == 0 {
			continue
		}
		for _, t := range pq.tenants {
			for _, e := range t.h {
				e.si = len(pq.bySeq.s)
				pq.bySeq.s = append(pq.bySeq.s, e)
			}
		}
		for j := len(pq.bySeq.s)/2 - 1; j >= 0; j-- {
			pq.bySeq.down(j)
		}
	}
	return nil
}

// Policy returns the queue's full policy label.
func (q *Queue[T]) Policy() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cfg.Policy
}

// Capacity returns the pool-wide queue bound.
func (q *Queue[T]) Capacity() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cfg.Capacity
}

// Push admits v or applies the full policy.
//
// On success it returns the entry, an estimate of how many queued entries
// dispatch before it (see aheadLocked), and victim != nil when the policy
// evicted a queued entry to make room (drop-lru: the oldest of equal or lower
// priority; shed-low-priority: the newest of strictly lower priority). The
// victim is already out of the queue: the caller must end its task. When
// nothing may be evicted Push returns a *FullError and changes nothing.
//
// A full queue never grows: Push evicts at most one entry, so a queue that
// PushFront took past its capacity stays that long.
func (q *Queue[T]) Push(m Meta, v T) (e *Entry[T], ahead int, victim *Entry[T], err error) {
	if m.Prio >= NumPriorities {
		panic(fmt.Sprintf("BUG: admission: Push with priority %d", m.Prio))
	}
	m.Weight = normWeight(m.Weight)
	e = &Entry[T]{Value: v, meta: m, dl: deadlineKey(m.Deadline)}

	q.mu.Lock()
	defer q.mu.Unlock()
	victim, err = q.makeRoomLocked(m.Prio)
	if err != nil {
		return nil, 0, nil, err
	}
	pq := &q.pq[m.Prio]
	t := pq.tenants[m.Tenant]
	tag := pq.vtime // a tenant unknown to the priority starts now
	if t != nil {
		tag = t.tag
		if len(t.h) == 0 {
			// The rule for an idle tenant; an idle record's tag is
			// ahead of vtime already (see prioQueue).
			tag = max(tag, pq.vtime)
		}
	}
	ahead = q.aheadLocked(e, t, tag)
	q.enqueueLocked(e, t, tag, m.Weight)
	return e, ahead, victim, nil
}

// makeRoomLocked applies the full policy for a newcomer of priority p and
// returns the evicted entry, if any.
func (q *Queue[T]) makeRoomLocked(p Priority) (*Entry[T], error) {
	if c := q.cfg.PerPriority[p]; c > 0 && q.pq[p].n >= c {
		// Only drop-lru helps here: shed-low-priority would free a place
		// of another priority, not of this one.
		if q.cfg.Policy == PolicyDropLRU {
			v := q.pq[p].bySeq.s[0]
			q.removeLocked(v)
			return v, nil
		}
		return nil, &FullError{Policy: q.cfg.Policy, Queued: q.pq[p].n, Capacity: c, PerPriority: true}
	}
	if q.n < q.cfg.Capacity {
		return nil, nil
	}
	var v *Entry[T]
	switch q.cfg.Policy {
	case PolicyDropLRU:
		for o := p; o < NumPriorities; o++ { // oldest of equal or lower priority
			if s := q.pq[o].bySeq.s; len(s) > 0 && (v == nil || s[0].seq < v.seq) {
				v = s[0]
			}
		}
	case PolicyShedLowPriority:
		for o := p + 1; o < NumPriorities; o++ { // newest of strictly lower priority
			if s := q.pq[o].bySeq.s; len(s) > 0 && (v == nil || s[0].seq > v.seq) {
				v = s[0]
			}
		}
	}
	if v == nil {
		return nil, &FullError{Policy: q.cfg.Policy, Queued: q.n, Capacity: q.cfg.Capacity}
	}
	q.removeLocked(v)
	return v, nil
}

// aheadLocked estimates how many queued entries dispatch before e, a
// newcomer of tenant t (nil if unknown to its priority) starting at virtual
// tag tag, if nothing else arrives or leaves:
//
//  1. Within its tenant, k entries go first: all of them when e has no
//     deadline; none when its deadline is earlier than the tenant's head;
//     otherwise every entry of the tenant with a deadline (an upper bound:
//     an EDF heap cannot count the earlier ones in less than O(n)).
//  2. e is then served at virtual tag F = tag + k/w. Another backlogged
//     tenant u (tag T_u, weight w_u, n_u entries) serves its entries at
//     T_u, T_u + 1/w_u, ...; those at tags <= F go first (ties go to the
//     older head, which is never e): min(n_u, floor((F-T_u)·w_u)+1).
//  3. The sum is e's position within its priority. The other priorities
//     take their round-robin turns meanwhile; for two priorities their
//     count follows in O(1) from the credits (see turnsBefore).
//
// Exact when step 1 is (e has no deadline, or one no earlier than its
// tenant's) and the tenant weights are powers of two (the tags are then exact
// in floating point); otherwise off by the deadline bound or by a tie. Never
// negative, 0 on an empty queue, never more than Len. Cost: O(tenants
// backlogged in e's priority).
func (q *Queue[T]) aheadLocked(e *Entry[T], t *tenant[T], tag float64) int {
	p := e.meta.Prio
	pq := &q.pq[p]
	k := 0
	if t != nil && len(t.h) > 0 {
		switch {
		case e.dl == noDeadline:
			k = len(t.h)
		case e.dl < t.h[0].dl:
			k = 0
		default:
			k = t.nDl
		}
	}
	f := tag + float64(k)/e.meta.Weight
	own := k
	for _, u := range pq.active.s {
		if u == t || f < u.tag {
			continue
		}
		n := len(u.h)
		if c := (f - u.tag) * u.w; c >= float64(n-1) {
			own += n
		} else {
			own += int(c) + 1
		}
	}
	return own + q.turnsBefore(p, own)
}

// turnsBefore returns how many entries the other priorities dispatch before
// p's (own+1)-th dispatch, if nothing else arrives or leaves.
//
// Smooth weighted round-robin between two priorities is a Bresenham line:
// with credits summing to zero and r = weight(o)/weight(p), o takes
// floor((own+1/2)·r + 1/2 - credit(p)/weight(p)) turns before p's (own+1)-th
// (one less when that is an integer and p wins the tie). It is exact for two
// priorities; computed in float and capped by o's length so extreme weight
// ratios cannot overflow.
func (q *Queue[T]) turnsBefore(p Priority, own int) int {
	ahead := 0
	wp := q.cfg.Weights[p]
	for o := Priority(0); o < NumPriorities; o++ {
		n := q.pq[o].n
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

// enqueueLocked queues e for tenant t (nil: a new tenant record) whose next
// virtual start tag becomes tag; w is the tenant weight to use.
func (q *Queue[T]) enqueueLocked(e *Entry[T], t *tenant[T], tag, w float64) {
	pq := &q.pq[e.meta.Prio]
	if t == nil {
		t = q.newTenant()
		t.name = e.meta.Tenant
		pq.tenants[t.name] = t
	} else if len(t.h) == 0 {
		pq.idle.remove(t.hi)
	}
	if e.seq == 0 { // a newcomer; PushFront keeps its arrival
		q.seq++
		e.seq = q.seq
	}
	t.w, t.inc, t.tag = w, 1/w, tag
	wasIdle := len(t.h) == 0
	t.pushEntry(e)
	if wasIdle {
		pq.active.push(t)
	} else {
		pq.active.fix(t.hi) // the tag or the head may have changed
	}
	pq.bySeq.push(e)
	pq.n++
	q.n++
	e.ten = t
	e.state = stateQueued
}

// removeLocked takes a queued e out without dispatching it: its tenant is
// not charged.
func (q *Queue[T]) removeLocked(e *Entry[T]) {
	pq := &q.pq[e.meta.Prio]
	t := e.ten
	wasHead := e.hi == 0
	t.removeEntry(e.hi)
	pq.bySeq.remove(e.si)
	e.ten, e.state = nil, stateOut
	pq.n--
	q.n--
	switch {
	case len(t.h) == 0:
		pq.active.remove(t.hi)
		q.retire(pq, t)
	case wasHead:
		pq.active.fix(t.hi)
	}
	if pq.n == 0 {
		q.reset(pq)
	}
}

// retire files a tenant whose queue just emptied: idle while its tag is
// ahead of the virtual clock, forgotten otherwise.
func (q *Queue[T]) retire(pq *prioQueue[T], t *tenant[T]) {
	if t.tag > pq.vtime {
		pq.idle.push(t)
		return
	}
	delete(pq.tenants, t.name)
	q.recycle(t)
}

// reset starts a new epoch for a priority that just emptied.
func (q *Queue[T]) reset(pq *prioQueue[T]) {
	for i, t := range pq.idle.s {
		delete(pq.tenants, t.name)
		q.recycle(t)
		pq.idle.s[i] = nil
	}
	pq.idle.s = pq.idle.s[:0]
	if len(pq.tenants) != 0 || len(pq.active.s) != 0 || len(pq.bySeq.s) != 0 {
		panic("BUG: admission: an empty priority still holds tenants")
	}
	pq.vtime = 0
	pq.epoch++
}

// rebase shifts the priority's virtual clock and tags back to vtime = 0.
// Rounding may turn two tags equal, so both heaps are rebuilt. Popped
// entries' tags belong to the old frame: a new epoch makes PushFront treat
// them as plain re-entries.
func (pq *prioQueue[T]) rebase() {
	v := pq.vtime
	for _, t := range pq.active.s {
		t.tag -= v
	}
	for _, t := range pq.idle.s {
		t.tag -= v // > 0 still: a > b implies a-b > 0 in IEEE arithmetic
	}
	pq.active.init()
	pq.idle.init()
	pq.vtime = 0
	pq.epoch++
}

func (q *Queue[T]) newTenant() *tenant[T] {
	if n := len(q.free); n > 0 {
		t := q.free[n-1]
		q.free[n-1] = nil
		q.free = q.free[:n-1]
		return t
	}
	return &tenant[T]{}
}

func (q *Queue[T]) recycle(t *tenant[T]) {
	if len(q.free) >= maxFree {
		return
	}
	h := t.h[:0]
	if cap(h) > maxFreeCap {
		h = nil
	}
	*t = tenant[T]{h: h}
	q.free = append(q.free, t)
}

// Pop removes and returns the next entry to dispatch.
func (q *Queue[T]) Pop() (*Entry[T], bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	// Smooth weighted round-robin over the backlogged priorities.
	saved := q.credit
	best := NumPriorities
	var sum float64
	var mask uint8
	for p := Priority(0); p < NumPriorities; p++ {
		if q.pq[p].n == 0 {
			continue
		}
		q.credit[p] += q.cfg.Weights[p]
		sum += q.cfg.Weights[p]
		mask |= 1 << p
		if best == NumPriorities || q.credit[p] > q.credit[best] {
			best = p
		}
	}
	if best == NumPriorities {
		q.credit = [NumPriorities]float64{}
		q.lastPop = nil
		return nil, false
	}
	q.credit[best] -= sum

	// Weighted fair queuing between the priority's tenants.
	pq := &q.pq[best]
	t := pq.active.s[0]
	e := t.h[0]
	t.removeEntry(0)
	e.mask, e.epoch, e.start, e.inc = mask, pq.epoch, t.tag, t.inc
	pq.vtime = max(pq.vtime, t.tag)
	t.tag += t.inc
	if len(t.h) == 0 {
		pq.active.remove(0)
		q.retire(pq, t)
	} else {
		pq.active.fix(0)
	}
	pq.bySeq.remove(e.si)
	e.ten, e.state = nil, statePopped
	pq.n--
	q.n--
	if pq.n == 0 {
		q.reset(pq)
	} else {
		for len(pq.idle.s) > 0 && pq.idle.s[0].tag <= pq.vtime {
			it := pq.idle.s[0]
			pq.idle.remove(0)
			delete(pq.tenants, it.name)
			q.recycle(it)
		}
		if pq.vtime >= q.rebaseAt {
			pq.rebase()
		}
	}
	q.lastPop, q.lastCredit = e, saved
	return e, true
}

// PushFront puts a popped entry back (dispatch lost the replica it had
// counted on), ignoring the capacity since it held a place a moment ago.
//
// The entry keeps its arrival, so it goes back to its EDF place in its
// tenant (the head, unless something more urgent arrived meanwhile) and to
// its place in the full policies' age order. The round-robin credit and the
// tenant's virtual tag that Pop charged are given back: exactly when nothing
// was popped since (then the next Pop returns e again), otherwise by
// subtracting the charge (the tenant's tag no lower than the virtual clock).
// A tenant forgotten meanwhile (its priority emptied, or the virtual clock
// passed its tag) starts afresh at the virtual clock.
func (q *Queue[T]) PushFront(e *Entry[T]) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e.state == stateQueued {
		panic("BUG: admission: PushFront of a queued entry")
	}
	p := e.meta.Prio
	pq := &q.pq[p]
	if e.state == statePopped {
		if q.lastPop == e {
			q.credit = q.lastCredit
		} else {
			var sum float64
			for o := Priority(0); o < NumPriorities; o++ {
				if e.mask&(1<<o) != 0 {
					q.credit[o] -= q.cfg.Weights[o]
					sum += q.cfg.Weights[o]
				}
			}
			q.credit[p] += sum
		}
	}
	q.lastPop = nil

	t := pq.tenants[e.meta.Tenant]
	w := e.meta.Weight
	tag := pq.vtime
	if t != nil {
		w, tag = t.w, t.tag
		if len(t.h) == 0 {
			tag = max(tag, pq.vtime)
		}
	}
	if e.state == statePopped && e.epoch == pq.epoch {
		if t != nil && t.tag == e.start+e.inc {
			tag = e.start // nothing of this tenant dispatched since: exact
		} else if t != nil {
			tag = max(t.tag-e.inc, pq.vtime)
		}
	}
	q.enqueueLocked(e, t, tag, w)
}

// Remove takes e out of the queue (a canceled task). It returns false if e
// was already dispatched, removed or evicted.
func (q *Queue[T]) Remove(e *Entry[T]) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e == nil || e.state != stateQueued {
		return false
	}
	q.removeLocked(e)
	return true
}

// Len returns the number of queued tasks.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// LenPriority returns the number of queued tasks of one priority.
func (q *Queue[T]) LenPriority(p Priority) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pq[p].n
}
