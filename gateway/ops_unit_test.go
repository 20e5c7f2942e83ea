package gateway

import (
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/gateway/config"
)

// TestEventHubDropsSlowSubscriber: publishing never blocks; a subscriber
// whose buffer is full is dropped (its channel closed), others keep going.
func TestEventHubDropsSlowSubscriber(t *testing.T) {
	h := newEventHub()
	slow, fast := h.subscribe(), h.subscribe()
	for i := 0; i < eventBuffer+1; i++ {
		h.publish(opsEvent{Type: "breaker"})
		if i < eventBuffer {
			<-fast // fast reads as it goes
		}
	}
	n := 0
	for range slow {
		n++
	}
	if n != eventBuffer {
		t.Fatalf("slow subscriber got %d events before being dropped, want %d", n, eventBuffer)
	}
	if h.subscribers() != 1 {
		t.Fatalf("%d subscribers left, want the fast one", h.subscribers())
	}
	ev := <-fast
	if ev.Seq != eventBuffer+1 || ev.At == "" {
		t.Fatalf("last event %+v", ev)
	}
	h.unsubscribe(fast)
	h.unsubscribe(fast) // twice is harmless
	if h.subscribers() != 0 {
		t.Fatal("unsubscribe left a subscriber")
	}
}

// TestUISessionsBounded: sessions expire, a forged or oversized token is
// refused, and more than maxUISession logins evict the oldest, never grow.
func TestUISessionsBounded(t *testing.T) {
	u := newUISessions()
	now := time.Now()
	p := Principal{Tenant: "t", control: true}
	tok, err := u.create(p, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := u.lookup([]byte(tok), now); !ok || got.Tenant != "t" {
		t.Fatal("fresh session not found")
	}
	if _, ok := u.lookup([]byte(tok+"x"), now); ok {
		t.Fatal("forged token accepted")
	}
	if _, ok := u.lookup(make([]byte, 200), now); ok {
		t.Fatal("oversized token accepted")
	}
	if _, ok := u.lookup([]byte(tok), now.Add(uiSessionTTL+time.Second)); ok {
		t.Fatal("expired session accepted")
	}
	first, _ := u.create(p, now)
	for i := 0; i < maxUISession+10; i++ {
		if _, err := u.create(p, now.Add(time.Duration(i+1)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if len(u.m) > maxUISession {
		t.Fatalf("%d sessions kept, budget %d", len(u.m), maxUISession)
	}
	if _, ok := u.lookup([]byte(first), now); ok {
		t.Fatal("the oldest session survived eviction")
	}
	u.revokeAll()
	if len(u.m) != 0 {
		t.Fatal("revokeAll kept sessions")
	}
}

// TestQuotasUpdateKeepsRunningCounts: an apply changes limits in place; a
// tenant's queued+running count survives, so its places are released right.
func TestQuotasUpdateKeepsRunningCounts(t *testing.T) {
	q := newQuotas([]config.Tenant{{ID: "a", Weight: 1, MaxConcurrent: 2}})
	for i := 0; i < 2; i++ {
		commit, _, ae := q.acquire("a")
		if ae != nil {
			t.Fatalf("acquire %d: %v", i, ae)
		}
		commit()
	}
	if _, _, ae := q.acquire("a"); ae == nil {
		t.Fatal("a third concurrent task was admitted at max_concurrent 2")
	}
	q.update([]config.Tenant{{ID: "a", Weight: 3, MaxConcurrent: 3}})
	if w := q.weight("a"); w != 3 {
		t.Fatalf("weight after update: %v", w)
	}
	commit, _, ae := q.acquire("a") // 2 running + 1 = 3: allowed now
	if ae != nil {
		t.Fatalf("acquire after raising the limit: %v", ae)
	}
	commit()
	if _, _, ae := q.acquire("a"); ae == nil {
		t.Fatal("running count lost in the update: a fourth task was admitted")
	}
	q.release("a")
	if _, _, ae := q.acquire("a"); ae != nil {
		t.Fatalf("acquire after a release: %v", ae)
	}
}
