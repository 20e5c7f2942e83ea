package admission

// Indexed binary heaps, written out per element type: each element keeps its
// index so Remove is O(log n), and the comparisons inline (container/heap
// would box every element and call through an interface).

// edfLess orders a tenant's entries: earliest deadline first (no deadline
// sorts last), then arrival.
func edfLess[T any](a, b *Entry[T]) bool {
	return a.dl < b.dl || a.dl == b.dl && a.seq < b.seq
}

// pushEntry adds e to the tenant's EDF heap.
func (t *tenant[T]) pushEntry(e *Entry[T]) {
	if e.dl != noDeadline {
		t.nDl++
	}
	e.hi = len(t.h)
	t.h = append(t.h, e)
	t.up(e.hi)
	t.hseq = t.h[0].seq
}

// removeEntry removes the entry at index i of the tenant's EDF heap.
func (t *tenant[T]) removeEntry(i int) {
	e := t.h[i]
	if e.dl != noDeadline {
		t.nDl--
	}
	last := len(t.h) - 1
	if i != last {
		t.h[i] = t.h[last]
		t.h[i].hi = i
	}
	t.h[last] = nil
	t.h = t.h[:last]
	if i != last {
		if !t.down(i) {
			t.up(i)
		}
	}
	if last > 0 {
		t.hseq = t.h[0].seq
	}
}

func (t *tenant[T]) up(i int) {
	h := t.h
	e := h[i]
	for i > 0 {
		p := (i - 1) / 2
		if !edfLess(e, h[p]) {
			break
		}
		h[i] = h[p]
		h[i].hi = i
		i = p
	}
	h[i] = e
	e.hi = i
}

func (t *tenant[T]) down(i0 int) bool {
	h := t.h
	n := len(h)
	i := i0
	e := h[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && edfLess(h[r], h[c]) {
			c = r
		}
		if !edfLess(h[c], e) {
			break
		}
		h[i] = h[c]
		h[i].hi = i
		i = c
	}
	h[i] = e
	e.hi = i
	return i > i0
}

// seqHeap holds a priority's entries by arrival: oldest on top for drop-lru
// (sign 1), newest on top for shed-low-priority (sign -1). With sign 0 (the
// reject policy) it is not maintained at all.
type seqHeap[T any] struct {
	s    []*Entry[T]
	sign int
}

func (h *seqHeap[T]) less(a, b *Entry[T]) bool {
	if h.sign > 0 {
		return a.seq < b.seq
	}
	return a.seq > b.seq
}

func (h *seqHeap[T]) push(e *Entry[T]) {
	if h.sign == 0 {
		return
	}
	e.si = len(h.s)
	h.s = append(h.s, e)
	h.up(e.si)
}

func (h *seqHeap[T]) remove(i int) {
	if h.sign == 0 {
		return
	}
	last := len(h.s) - 1
	if i != last {
		h.s[i] = h.s[last]
		h.s[i].si = i
	}
	h.s[last] = nil
	h.s = h.s[:last]
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h *seqHeap[T]) up(i int) {
	s := h.s
	e := s[i]
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(e, s[p]) {
			break
		}
		s[i] = s[p]
		s[i].si = i
		i = p
	}
	s[i] = e
	e.si = i
}

func (h *seqHeap[T]) down(i0 int) bool {
	s := h.s
	n := len(s)
	i := i0
	e := s[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h.less(s[r], s[c]) {
			c = r
		}
		if !h.less(s[c], e) {
			break
		}
		s[i] = s[c]
		s[i].si = i
		i = c
	}
	s[i] = e
	e.si = i
	return i > i0
}

// tenantHeap holds a priority's tenants: backlogged ones by (tag, seq of
// their next entry), idle ones by tag alone. A tenant is in at most one of
// the two, so they share its index field.
type tenantHeap[T any] struct {
	s    []*tenant[T]
	idle bool
}

func (h *tenantHeap[T]) less(a, b *tenant[T]) bool {
	if a.tag != b.tag || h.idle {
		return a.tag < b.tag
	}
	return a.hseq < b.hseq
}

func (h *tenantHeap[T]) push(t *tenant[T]) {
	t.hi = len(h.s)
	h.s = append(h.s, t)
	h.up(t.hi)
}

func (h *tenantHeap[T]) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

// init restores the heap order of the whole slice.
func (h *tenantHeap[T]) init() {
	for i := len(h.s)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *tenantHeap[T]) remove(i int) {
	last := len(h.s) - 1
	if i != last {
		h.s[i] = h.s[last]
		h.s[i].hi = i
	}
	h.s[last] = nil
	h.s = h.s[:last]
	if i != last {
		h.fix(i)
	}
}

func (h *tenantHeap[T]) up(i int) {
	s := h.s
	t := s[i]
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(t, s[p]) {
			break
		}
		s[i] = s[p]
		s[i].hi = i
		i = p
	}
	s[i] = t
	t.hi = i
}

func (h *tenantHeap[T]) down(i0 int) bool {
	s := h.s
	n := len(s)
	i := i0
	t := s[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h.less(s[r], s[c]) {
			c = r
		}
		if !h.less(s[c], t) {
			break
		}
		s[i] = s[c]
		s[i].hi = i
		i = c
	}
	s[i] = t
	t.hi = i
	return i > i0
}
