package slots

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQueueGrant: slots go to waiters in FIFO order, each to the first
// waiter that takes that slot.
func TestQueueGrant(t *testing.T) {
	var q Queue
	any1 := q.Push(-1)
	only1 := q.Push(1)
	any2 := q.Push(-1)
	f := func(id int, w *Waiter) {
		t.Helper()
		if !q.Grant(id) {
			t.Fatalf("Grant(%d): nobody took it", id)
		}
		// A grant is delivered at once: nothing here blocks.
		select {
		case got := <-w.Ready():
			if got != id {
				t.Fatalf("Grant(%d) delivered %d", id, got)
			}
		default:
			t.Fatalf("Grant(%d) reached another waiter", id)
		}
	}
	f(0, any1) // the first waiter takes any slot
	f(0, any2) // slot 0 skips the waiter for slot 1
	f(1, only1)
	if q.Grant(0) || q.Len() != 0 {
		t.Fatalf("Grant on an empty queue: len %d", q.Len())
	}
}

// TestQueueLeave: a waiter that gives up leaves the queue; one granted
// meanwhile hands its slot back to the caller.
func TestQueueLeave(t *testing.T) {
	var q Queue
	a, b := q.Push(-1), q.Push(-1)
	if id, granted := q.Leave(a); granted || id != -1 || q.Len() != 1 {
		t.Fatalf("Leave before a grant = %d, %v (len %d)", id, granted, q.Len())
	}
	q.Grant(3)
	if id, granted := q.Leave(b); !granted || id != 3 {
		t.Fatalf("Leave after a grant = %d, %v, want 3, true", id, granted)
	}
}

// TestWaiterWait: Wait ends with the grant, or with gone or done.
func TestWaiterWait(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	var q Queue
	w := q.Push(-1)
	if _, ok := w.Wait(closed, nil); ok {
		t.Fatal("Wait succeeded after the client left")
	}
	if _, ok := w.Wait(nil, closed); ok {
		t.Fatal("Wait succeeded after the server closed")
	}
	q.Grant(7)
	if id, ok := w.Wait(nil, nil); !ok || id != 7 {
		t.Fatalf("Wait = %d, %v, want 7, true", id, ok)
	}
}

// TestPool: a free slot is taken only when nobody waits before; a released
// slot goes to the first waiter; a waiter leaving after its grant passes
// the slot on.
func TestPool(t *testing.T) {
	var p Pool
	p.SetSize(1)
	if !p.TryTake() || p.TryTake() || p.Busy() != 1 {
		t.Fatalf("TryTake on a pool of 1: busy %d", p.Busy())
	}
	first, second := p.Push(), p.Push()
	p.Release() // to first
	if p.Busy() != 1 || p.Waiting() != 1 {
		t.Fatalf("after Release: busy %d, waiting %d", p.Busy(), p.Waiting())
	}
	p.Leave(first) // granted: passes the slot on to second
	if _, ok := second.Wait(nil, nil); !ok || p.Busy() != 1 || p.Waiting() != 0 {
		t.Fatalf("after Leave: busy %d, waiting %d", p.Busy(), p.Waiting())
	}
	p.Release()
	if p.Busy() != 0 || !p.TryTake() {
		t.Fatalf("after the last Release: busy %d", p.Busy())
	}
}

// TestPoolAcquire: concurrent requests never hold more slots than there
// are, they get them in FIFO order, and one whose client leaves while it
// waits takes nothing.
func TestPoolAcquire(t *testing.T) {
	var (
		mu      sync.Mutex
		p       Pool
		holding int
		order   []int
	)
	// One slot, so that the order in which requests run is the order in
	// which they were granted it.
	p.SetSize(1)
	done := make(chan struct{})
	defer close(done) // should the test fail, waiters still queued leave
	if !p.Acquire(&mu, nil, done) {
		t.Fatal("Acquire on a free slot failed")
	}
	queued := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second) // a guard against hangs
		for {
			mu.Lock()
			w := p.Waiting()
			mu.Unlock()
			if w == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d requests queued, want %d", w, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	const n = 6
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !p.Acquire(&mu, nil, done) {
				t.Error("Acquire failed")
				return
			}
			mu.Lock()
			holding++
			if holding > 1 {
				t.Errorf("%d requests hold 1 slot", holding)
			}
			order = append(order, i)
			holding--
			p.Release()
			mu.Unlock()
		}()
		queued(i + 1) // one by one, so that their order is known
	}
	gone := make(chan struct{})
	left := make(chan bool, 1)
	go func() { left <- p.Acquire(&mu, gone, done) }()
	queued(n + 1)
	close(gone)
	select {
	case ok := <-left:
		if ok {
			t.Fatal("Acquire succeeded after its client left")
		}
	case <-time.After(10 * time.Second): // a guard against hangs
		t.Fatal("Acquire did not return after its client left")
	}
	mu.Lock()
	p.Release() // the holder's slot starts the chain
	mu.Unlock()
	granted := make(chan struct{})
	go func() {
		wg.Wait()
		close(granted)
	}()
	select {
	case <-granted:
	case <-time.After(10 * time.Second): // a guard against hangs
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("not every queued request got the slot; granted in order %v", order)
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("slots granted in order %v, want FIFO", order)
		}
	}
	if p.Busy() != 0 || p.Waiting() != 0 {
		t.Fatalf("at the end: busy %d, waiting %d", p.Busy(), p.Waiting())
	}
}

// TestPause: Sleep waits its time unless the client leaves or the server
// closes; with no time it only looks.
func TestPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p Pause
		gone, done := make(chan struct{}), make(chan struct{})
		start := time.Now()
		if !p.Sleep(time.Second, gone, done) || time.Since(start) != time.Second {
			t.Fatalf("Sleep(1s) returned after %v", time.Since(start))
		}
		if !p.Sleep(0, gone, done) {
			t.Fatal("Sleep(0) with nobody gone = false")
		}
		go func() {
			time.Sleep(100 * time.Millisecond)
			close(gone)
		}()
		start = time.Now()
		if p.Sleep(time.Hour, gone, done) || time.Since(start) != 100*time.Millisecond {
			t.Fatalf("Sleep ended %v after start by the client leaving", time.Since(start))
		}
		if p.Sleep(0, gone, done) || p.Sleep(time.Second, nil, closedChan()) {
			t.Fatal("Sleep after the client left or the server closed = true")
		}
	})
}

// TestHold: a stall ends when the client leaves or the server closes.
func TestHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, which := range []string{"gone", "done"} {
			gone, done := make(chan struct{}), make(chan struct{})
			held := make(chan struct{})
			go func() { Hold(gone, done); close(held) }()
			synctest.Wait()
			select {
			case <-held:
				t.Fatal("Hold returned with the client there")
			default:
			}
			if which == "gone" {
				close(gone)
			} else {
				close(done)
			}
			<-held
		}
	})
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
