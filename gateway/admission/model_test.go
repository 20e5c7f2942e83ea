package admission

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// checkInvariants verifies the queue's internal structure: counts, every
// heap's order and back-indexes, tenant records, and the virtual-clock rules
// (no idle tenant at or behind the clock; an empty priority holds nothing).
func checkInvariants[T any](q *Queue[T]) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	total := 0
	var sum float64
	for _, c := range q.credit {
		sum += c
	}
	if sum > 1e-9 || sum < -1e-9 {
		return fmt.Errorf("round-robin credits sum to %v, want 0", sum)
	}
	for p := range q.pq {
		pq := &q.pq[p]
		total += pq.n
		n := 0
		seen := 0
		for i, t := range pq.active.s {
			if t.hi != i {
				return fmt.Errorf("prio %d: active tenant %q index %d at %d", p, t.name, t.hi, i)
			}
			if i > 0 && pq.active.less(t, pq.active.s[(i-1)/2]) {
				return fmt.Errorf("prio %d: active heap out of order at %d", p, i)
			}
			if len(t.h) == 0 {
				return fmt.Errorf("prio %d: active tenant %q has no entries", p, t.name)
			}
			if pq.tenants[t.name] != t {
				return fmt.Errorf("prio %d: active tenant %q not in the map", p, t.name)
			}
			if t.hseq != t.h[0].seq {
				return fmt.Errorf("prio %d: tenant %q caches head seq %d, head is %d", p, t.name, t.hseq, t.h[0].seq)
			}
			if t.inc != 1/t.w {
				return fmt.Errorf("prio %d: tenant %q inc %v for weight %v", p, t.name, t.inc, t.w)
			}
			dl := 0
			for j, e := range t.h {
				if e.hi != j || e.ten != t || e.state != stateQueued || e.meta.Prio != Priority(p) || e.meta.Tenant != t.name {
					return fmt.Errorf("prio %d: tenant %q entry %d inconsistent", p, t.name, j)
				}
				if j > 0 && edfLess(e, t.h[(j-1)/2]) {
					return fmt.Errorf("prio %d: tenant %q EDF heap out of order at %d", p, t.name, j)
				}
				if e.dl != noDeadline {
					dl++
				}
			}
			if dl != t.nDl {
				return fmt.Errorf("prio %d: tenant %q nDl %d, counted %d", p, t.name, t.nDl, dl)
			}
			n += len(t.h)
			seen++
		}
		for i, t := range pq.idle.s {
			if t.hi != i || len(t.h) != 0 || pq.tenants[t.name] != t {
				return fmt.Errorf("prio %d: idle tenant %q inconsistent", p, t.name)
			}
			if i > 0 && pq.idle.less(t, pq.idle.s[(i-1)/2]) {
				return fmt.Errorf("prio %d: idle heap out of order at %d", p, i)
			}
			if t.tag <= pq.vtime {
				return fmt.Errorf("prio %d: idle tenant %q tag %v not ahead of vtime %v", p, t.name, t.tag, pq.vtime)
			}
			seen++
		}
		if seen != len(pq.tenants) {
			return fmt.Errorf("prio %d: %d tenant records, %d in heaps", p, len(pq.tenants), seen)
		}
		if n != pq.n {
			return fmt.Errorf("prio %d: n = %d, tenants hold %d", p, pq.n, n)
		}
		if pq.n == 0 && (pq.vtime != 0 || len(pq.tenants) != 0) {
			return fmt.Errorf("prio %d: empty but vtime %v, %d tenants", p, pq.vtime, len(pq.tenants))
		}
		if pq.bySeq.sign != 0 {
			if len(pq.bySeq.s) != pq.n {
				return fmt.Errorf("prio %d: seq heap holds %d of %d", p, len(pq.bySeq.s), pq.n)
			}
			for i, e := range pq.bySeq.s {
				if e.si != i || e.state != stateQueued || e.meta.Prio != Priority(p) {
					return fmt.Errorf("prio %d: seq heap entry %d inconsistent", p, i)
				}
				if i > 0 && pq.bySeq.less(e, pq.bySeq.s[(i-1)/2]) {
					return fmt.Errorf("prio %d: seq heap out of order at %d", p, i)
				}
			}
		}
	}
	if total != q.n {
		return fmt.Errorf("n = %d, priorities hold %d", q.n, total)
	}
	return nil
}

// refEntry is the reference model's view of one entry.
type refEntry struct {
	id    int
	m     Meta
	dl    int64
	seq   uint64
	state entryState
	mask  uint8
	epoch uint64
	start float64
	inc   float64
}

type refPrio struct {
	vtime float64
	epoch uint64
	tags  map[string]float64 // known tenants (backlogged or idle)
	w     map[string]float64
}

// refQueue is a brute-force reference: every decision scans all queued
// entries. It states the documented rules directly (SWRR between
// priorities; start-time fair queuing between tenants with idle tags kept
// only while ahead of the virtual clock; EDF within a tenant; the full
// policies by arrival order) so the real queue's heaps, indexes and
// bookkeeping are checked against it.
type refQueue struct {
	cfg        Config
	credit     [NumPriorities]float64
	lastPop    *refEntry
	lastCredit [NumPriorities]float64
	seq        uint64
	prios      [NumPriorities]refPrio
	queued     []*refEntry
	byID       map[int]*refEntry
	rebaseAt   float64
}

func newRefQueue(cfg Config) *refQueue {
	if cfg.Policy == "" {
		cfg.Policy = PolicyReject
	}
	for i, w := range cfg.Weights {
		if w <= 0 {
			cfg.Weights[i] = 1
		}
	}
	r := &refQueue{cfg: cfg, byID: make(map[int]*refEntry), rebaseAt: defaultRebaseAt}
	for i := range r.prios {
		r.prios[i].tags = make(map[string]float64)
		r.prios[i].w = make(map[string]float64)
	}
	return r
}

func (r *refQueue) count(p Priority) int {
	n := 0
	for _, e := range r.queued {
		if e.m.Prio == p {
			n++
		}
	}
	return n
}

func (r *refQueue) backlogged(p Priority, tenant string) bool {
	for _, e := range r.queued {
		if e.m.Prio == p && e.m.Tenant == tenant {
			return true
		}
	}
	return false
}

func (r *refQueue) unqueue(e *refEntry, st entryState) {
	for i, x := range r.queued {
		if x == e {
			r.queued = append(r.queued[:i], r.queued[i+1:]...)
			break
		}
	}
	e.state = st
}

// forget applies the idle rules after an entry left priority p.
func (r *refQueue) forget(p Priority) {
	rp := &r.prios[p]
	if r.count(p) == 0 {
		clear(rp.tags)
		clear(rp.w)
		rp.vtime = 0
		rp.epoch++
		return
	}
	for t, tag := range rp.tags {
		if tag <= rp.vtime && !r.backlogged(p, t) {
			delete(rp.tags, t)
			delete(rp.w, t)
		}
	}
}

// push returns the victim's id (or -1) and the error.
func (r *refQueue) push(m Meta, id int) (int, error) {
	m.Weight = normWeight(m.Weight)
	p := m.Prio
	var victim *refEntry
	np := r.count(p)
	if c := r.cfg.PerPriority[p]; c > 0 && np >= c {
		if r.cfg.Policy != PolicyDropLRU {
			return -1, &FullError{Policy: r.cfg.Policy, Queued: np, Capacity: c, PerPriority: true}
		}
		for _, e := range r.queued {
			if e.m.Prio == p && (victim == nil || e.seq < victim.seq) {
				victim = e
			}
		}
	} else if len(r.queued) >= r.cfg.Capacity {
		for _, e := range r.queued {
			switch r.cfg.Policy {
			case PolicyDropLRU:
				if e.m.Prio >= p && (victim == nil || e.seq < victim.seq) {
					victim = e
				}
			case PolicyShedLowPriority:
				if e.m.Prio > p && (victim == nil || e.seq > victim.seq) {
					victim = e
				}
			}
		}
		if victim == nil {
			return -1, &FullError{Policy: r.cfg.Policy, Queued: len(r.queued), Capacity: r.cfg.Capacity}
		}
	}
	vid := -1
	if victim != nil {
		vid = victim.id
		r.remove(victim.id)
	}
	rp := &r.prios[p]
	tag, known := rp.tags[m.Tenant]
	switch {
	case !known:
		tag = rp.vtime
	case !r.backlogged(p, m.Tenant):
		tag = max(tag, rp.vtime)
	}
	rp.tags[m.Tenant], rp.w[m.Tenant] = tag, m.Weight
	r.seq++
	e := &refEntry{id: id, m: m, dl: deadlineKey(m.Deadline), seq: r.seq, state: stateQueued}
	r.byID[id] = e
	r.queued = append(r.queued, e)
	return vid, nil
}

func (r *refQueue) pop() (int, bool) {
	saved := r.credit
	best := NumPriorities
	var sum float64
	var mask uint8
	for p := Priority(0); p < NumPriorities; p++ {
		if r.count(p) == 0 {
			continue
		}
		r.credit[p] += r.cfg.Weights[p]
		sum += r.cfg.Weights[p]
		mask |= 1 << p
		if best == NumPriorities || r.credit[p] > r.credit[best] {
			best = p
		}
	}
	if best == NumPriorities {
		r.credit = [NumPriorities]float64{}
		r.lastPop = nil
		return -1, false
	}
	r.credit[best] -= sum
	rp := &r.prios[best]
	// Each backlogged tenant's head is its EDF minimum; the tenant served is
	// the one with the smallest (tag, head seq).
	heads := map[string]*refEntry{}
	for _, e := range r.queued {
		if e.m.Prio != best {
			continue
		}
		if h := heads[e.m.Tenant]; h == nil || e.dl < h.dl || e.dl == h.dl && e.seq < h.seq {
			heads[e.m.Tenant] = e
		}
	}
	var pick *refEntry
	for t, h := range heads {
		if pick == nil {
			pick = h
			continue
		}
		pt := rp.tags[pick.m.Tenant]
		if tt := rp.tags[t]; tt < pt || tt == pt && h.seq < pick.seq {
			pick = h
		}
	}
	t := pick.m.Tenant
	pick.mask, pick.epoch, pick.start, pick.inc = mask, rp.epoch, rp.tags[t], 1/rp.w[t]
	rp.vtime = max(rp.vtime, rp.tags[t])
	rp.tags[t] += 1 / rp.w[t]
	r.unqueue(pick, statePopped)
	r.forget(best)
	if r.count(best) > 0 && rp.vtime >= r.rebaseAt {
		for t := range rp.tags {
			rp.tags[t] -= rp.vtime
		}
		rp.vtime = 0
		rp.epoch++
	}
	r.lastPop, r.lastCredit = pick, saved
	return pick.id, true
}

func (r *refQueue) remove(id int) bool {
	e := r.byID[id]
	if e == nil || e.state != stateQueued {
		return false
	}
	r.unqueue(e, stateOut)
	r.forget(e.m.Prio)
	return true
}

func (r *refQueue) pushFront(id int) {
	e := r.byID[id]
	p := e.m.Prio
	if e.state == statePopped {
		if r.lastPop == e {
			r.credit = r.lastCredit
		} else {
			var sum float64
			for o := Priority(0); o < NumPriorities; o++ {
				if e.mask&(1<<o) != 0 {
					r.credit[o] -= r.cfg.Weights[o]
					sum += r.cfg.Weights[o]
				}
			}
			r.credit[p] += sum
		}
	}
	r.lastPop = nil
	rp := &r.prios[p]
	tag, known := rp.tags[e.m.Tenant]
	w := e.m.Weight
	if known {
		w = rp.w[e.m.Tenant]
		if !r.backlogged(p, e.m.Tenant) {
			tag = max(tag, rp.vtime)
		}
	} else {
		tag = rp.vtime
	}
	if e.state == statePopped && e.epoch == rp.epoch && known {
		if rp.tags[e.m.Tenant] == e.start+e.inc {
			tag = e.start
		} else {
			tag = max(rp.tags[e.m.Tenant]-e.inc, rp.vtime)
		}
	}
	rp.tags[e.m.Tenant], rp.w[e.m.Tenant] = tag, w
	e.state = stateQueued
	r.queued = append(r.queued, e)
}

// TestModel runs long random sequences of push, pop, remove, put-back and
// (rarely) new limits against the reference: every pop, victim, error, removal and length must
// agree, and the real queue's invariants must hold after every step.
func TestModel(t *testing.T) {
	type setup struct {
		name   string
		cfg    Config
		rebase float64 // virtual clock bound; 0 = the default
	}
	setups := []setup{
		// Reject with round weights: the common configuration.
		{"reject 8:1", Config{Capacity: 12, Weights: [NumPriorities]float64{8, 1}}, 0},
		// drop-lru with a batch cap: evictions by cap and by capacity.
		{"drop-lru capped", Config{Capacity: 12, PerPriority: [NumPriorities]int{0, 5}, Policy: PolicyDropLRU, Weights: [NumPriorities]float64{3, 1}}, 0},
		// shed-low-priority with an interactive cap.
		{"shed capped", Config{Capacity: 10, PerPriority: [NumPriorities]int{6, 0}, Policy: PolicyShedLowPriority, Weights: [NumPriorities]float64{2, 1}}, 0},
		// Non-dyadic weights: the same float operations must give the same order.
		{"drop-lru 0.7:0.3", Config{Capacity: 16, Policy: PolicyDropLRU, Weights: [NumPriorities]float64{0.7, 0.3}}, 0},
		// A large queue rarely full: long tenant backlogs, deep heaps.
		{"reject roomy", Config{Capacity: 200, Weights: [NumPriorities]float64{1, 1}}, 0},
		// A tiny clock bound: rebases all the time, also between a Pop and
		// its PushFront.
		{"rebasing", Config{Capacity: 40, Policy: PolicyDropLRU, Weights: [NumPriorities]float64{2, 1}}, 3},
	}
	tenants := []string{"a", "b", "c", "d", "e", ""}
	weights := map[string]float64{"a": 1, "b": 3, "c": 0.5, "d": 2, "e": 1, "": 0} // "" → 1
	base := time.Unix(1_700_000_000, 0)
	for seed := range uint64(8) {
		for _, s := range setups {
			t.Run(fmt.Sprintf("%s/seed%d", s.name, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 99))
				q := newQueue(t, s.cfg)
				ref := newRefQueue(s.cfg)
				if s.rebase > 0 {
					q.rebaseAt, ref.rebaseAt = s.rebase, s.rebase
				}
				entries := map[int]*Entry[int]{}
				var popped []int // out of the queue after Pop, may come back
				var ids []int
				next := 0
				for step := range 3000 {
					var what string
					switch r := rng.IntN(100); {
					case r < 45:
						tn := tenants[rng.IntN(len(tenants))]
						m := Meta{Prio: Priority(rng.IntN(2)), Tenant: tn, Weight: weights[tn]}
						if rng.IntN(3) == 0 {
							m.Deadline = base.Add(time.Duration(rng.IntN(20)) * time.Second)
						}
						id := next
						next++
						what = fmt.Sprintf("Push(%+v, %d)", m, id)
						wantVictim, wantErr := ref.push(m, id)
						e, ahead, victim, err := q.Push(m, id)
						if (err == nil) != (wantErr == nil) {
							t.Fatalf("step %d %s: err %v, reference %v", step, what, err, wantErr)
						}
						if err != nil {
							var fe *FullError
							if !errors.As(err, &fe) || *fe != *wantErr.(*FullError) || !errors.Is(err, ErrFull) {
								t.Fatalf("step %d %s: err %v, reference %v", step, what, err, wantErr)
							}
							if e != nil || victim != nil || ahead != 0 {
								t.Fatalf("step %d %s: a refusal returned an entry or victim", step, what)
							}
							break
						}
						gotVictim := -1
						if victim != nil {
							gotVictim = victim.Value
							if victim.state != stateOut || q.Remove(victim) {
								t.Fatalf("step %d %s: victim %d still queued", step, what, gotVictim)
							}
						}
						if gotVictim != wantVictim {
							t.Fatalf("step %d %s: victim %d, reference %d", step, what, gotVictim, wantVictim)
						}
						if ahead < 0 || ahead >= q.Len() {
							t.Fatalf("step %d %s: ahead %d with Len %d after the push", step, what, ahead, q.Len())
						}
						if e.Meta().Weight != normWeight(m.Weight) || e.Meta().Tenant != tn {
							t.Fatalf("step %d %s: Meta() = %+v", step, what, e.Meta())
						}
						entries[id] = e
						ids = append(ids, id)
					case r < 75:
						what = "Pop()"
						wantID, wantOK := ref.pop()
						e, ok := q.Pop()
						if ok != wantOK || ok && e.Value != wantID {
							got := -1
							if ok {
								got = e.Value
							}
							t.Fatalf("step %d Pop: %d (%v), reference %d (%v)", step, got, ok, wantID, wantOK)
						}
						if ok {
							popped = append(popped, e.Value)
						}
					case r < 90:
						if len(ids) == 0 {
							continue
						}
						id := ids[rng.IntN(len(ids))]
						what = fmt.Sprintf("Remove(%d)", id)
						if got, want := q.Remove(entries[id]), ref.remove(id); got != want {
							t.Fatalf("step %d %s = %v, reference %v", step, what, got, want)
						}
					case r < 91:
						// A config apply: new bounds and policy, same weights.
						policies := []string{PolicyReject, PolicyDropLRU, PolicyShedLowPriority}
						capacity, policy := 1+rng.IntN(14), policies[rng.IntN(len(policies))]
						caps := [NumPriorities]int{rng.IntN(7), rng.IntN(7)}
						what = fmt.Sprintf("SetLimits(%d, %s, %v)", capacity, policy, caps)
						if err := q.SetLimits(capacity, policy, caps); err != nil {
							t.Fatalf("step %d %s: %v", step, what, err)
						}
						ref.cfg.Capacity, ref.cfg.Policy, ref.cfg.PerPriority = capacity, policy, caps
					default:
						if len(popped) == 0 {
							continue
						}
						// Mostly the latest pop (dispatch lost its replica
						// at once), sometimes an older one.
						i := len(popped) - 1
						if rng.IntN(3) == 0 {
							i = rng.IntN(len(popped))
						}
						id := popped[i]
						popped = append(popped[:i], popped[i+1:]...)
						what = fmt.Sprintf("PushFront(%d)", id)
						ref.pushFront(id)
						q.PushFront(entries[id])
					}
					if q.Len() != len(ref.queued) {
						t.Fatalf("step %d %s: Len %d, reference %d", step, what, q.Len(), len(ref.queued))
					}
					for p := Priority(0); p < NumPriorities; p++ {
						if q.LenPriority(p) != ref.count(p) {
							t.Fatalf("step %d %s: LenPriority(%v) %d, reference %d", step, what, p, q.LenPriority(p), ref.count(p))
						}
					}
					if err := checkInvariants(q); err != nil {
						t.Fatalf("step %d %s: %v", step, what, err)
					}
				}
				// Drain both: the rest of the order agrees too.
				for {
					wantID, wantOK := ref.pop()
					e, ok := q.Pop()
					if ok != wantOK || ok && e.Value != wantID {
						t.Fatalf("drain: Pop %v/%v, reference %d/%v", e, ok, wantID, wantOK)
					}
					if !ok {
						break
					}
				}
				if err := checkInvariants(q); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
