// Package slots is the fakes' admission: requests wait in FIFO order for a
// slot (a llama.cpp slot, a place in a vLLM or TGI batch), and every wait —
// for a slot, between tokens, in a stall — ends early when the client
// leaves or the server closes.
//
// Queue and Pool hold no lock: the fake guards them with its own mutex
// (with the rest of its scheduler state) and waits without it.
package slots

import (
	"container/list"
	"sync"
	"time"
)

// Queue is a FIFO of requests waiting for a slot. The zero value is empty
// and ready to use.
type Queue struct{ l list.List }

// Waiter is one queued request.
type Waiter struct {
	want    int // the slot it waits for, -1: any
	ch      chan int
	granted bool
	e       *list.Element
}

// Len returns the number of requests waiting.
func (q *Queue) Len() int { return q.l.Len() }

// Push queues a request for slot want (-1: any slot).
func (q *Queue) Push(want int) *Waiter {
	w := &Waiter{want: want, ch: make(chan int, 1)}
	w.e = q.l.PushBack(w)
	return w
}

// Grant hands slot id to the first waiter that takes it (one waiting for
// any slot or for this one) and reports whether there was one. The
// waiter's Ready channel then delivers id.
func (q *Queue) Grant(id int) bool {
	for e := q.l.Front(); e != nil; e = e.Next() {
		w := e.Value.(*Waiter)
		if w.want < 0 || w.want == id {
			q.l.Remove(e)
			w.granted = true
			w.ch <- id
			return true
		}
	}
	return false
}

// Leave takes w out of the queue once it gave up waiting. If w was granted
// a slot meanwhile, Leave returns that slot's id and true: the caller must
// free it.
func (q *Queue) Leave(w *Waiter) (int, bool) {
	if w.granted {
		return <-w.ch, true
	}
	q.l.Remove(w.e)
	return -1, false
}

// Ready delivers the id of the slot granted to w.
func (w *Waiter) Ready() <-chan int { return w.ch }

// Wait blocks until w is granted a slot (its id, true) or until gone or
// done is closed (false: the caller must Leave, under its lock). A nil
// gone never closes.
func (w *Waiter) Wait(gone, done <-chan struct{}) (int, bool) {
	select {
	case id := <-w.ch:
		return id, true
	case <-gone:
	case <-done:
	}
	return -1, false
}

// Pool is n interchangeable slots handed out in FIFO order: a request takes
// a free slot only when nobody waits before it. The zero value has no
// slots; see SetSize.
type Pool struct {
	n, busy int
	q       Queue
}

// SetSize sets the number of slots.
func (p *Pool) SetSize(n int) { p.n = n }

// Size returns the number of slots.
func (p *Pool) Size() int { return p.n }

// Busy returns the number of slots taken.
func (p *Pool) Busy() int { return p.busy }

// Waiting returns the number of requests queued for a slot.
func (p *Pool) Waiting() int { return p.q.Len() }

// TryTake takes a slot if one is free and nobody is queued.
func (p *Pool) TryTake() bool {
	if p.busy < p.n && p.q.Len() == 0 {
		p.busy++
		return true
	}
	return false
}

// Push queues a request for the next free slot.
func (p *Pool) Push() *Waiter { return p.q.Push(-1) }

// Release frees a slot: the first queued request gets it, else it becomes
// free.
func (p *Pool) Release() {
	if !p.q.Grant(0) {
		p.busy--
	}
}

// Leave takes w out of the queue once it gave up waiting, releasing the
// slot it was granted meanwhile, if any.
func (p *Pool) Leave(w *Waiter) {
	if _, granted := p.q.Leave(w); granted {
		p.Release()
	}
}

// Acquire takes a slot, waiting in FIFO order with mu unlocked, and
// reports false when gone or done closed first. mu guards p; it must not
// be held by the caller.
func (p *Pool) Acquire(mu sync.Locker, gone, done <-chan struct{}) bool {
	mu.Lock()
	if p.TryTake() {
		mu.Unlock()
		return true
	}
	w := p.Push()
	mu.Unlock()
	if _, ok := w.Wait(gone, done); ok {
		return true
	}
	mu.Lock()
	p.Leave(w)
	mu.Unlock()
	return false
}

// Pause paces a generation: one timer, reused for every token.
type Pause struct{ timer *time.Timer }

// Sleep waits d and reports true, or reports false as soon as gone or done
// is closed. With d <= 0 it only checks them.
func (p *Pause) Sleep(d time.Duration, gone, done <-chan struct{}) bool {
	if d <= 0 {
		select {
		case <-gone:
			return false
		case <-done:
			return false
		default:
			return true
		}
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
		return true
	case <-gone:
	case <-done:
	}
	p.timer.Stop()
	return false
}

// Hold blocks until gone or done is closed: a stalled request keeps its
// slot until its client leaves or the server closes.
func Hold(gone, done <-chan struct{}) {
	select {
	case <-gone:
	case <-done:
	}
}
