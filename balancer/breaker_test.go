package balancer

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Breaker timing runs in synctest bubbles: time.Sleep advances a fake clock
// at once, and gobreaker reads that clock too, so no test waits for real.

// recorder collects OnTransition calls.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (rc *recorder) on(r *Replica, from, to State) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got = append(rc.got, r.ID+":"+from.String()+"→"+to.String())
}

func (rc *recorder) take() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	got := rc.got
	rc.got = nil
	return got
}

// guarded returns a ready replica (8 slots) with a breaker whose
// transitions go to a new recorder; zero cfg fields take the defaults.
func guarded(t *testing.T, cfg BreakerConfig) (*Replica, *recorder) {
	t.Helper()
	rc := &recorder{}
	r := replica(t, 0, 8, 0, true)
	cfg.OnTransition = rc.on
	r.SetBreaker(cfg)
	return r, rc
}

// outcomes runs one request per letter through the breaker: 'S' succeeds,
// 'F' fails, '.' waits step. Each request must be allowed.
func outcomes(t *testing.T, r *Replica, seq string, step time.Duration) {
	t.Helper()
	for i, c := range seq {
		if c == '.' {
			time.Sleep(step)
			continue
		}
		done, ok := r.Allow()
		if !ok {
			t.Fatalf("request %d of %q refused (state %v)", i, seq, r.BreakerState())
		}
		done(c == 'S')
	}
}

func wantTransitions(t *testing.T, rc *recorder, want ...string) {
	t.Helper()
	if got := rc.take(); !slices.Equal(got, want) {
		t.Fatalf("transitions %q, want %q", got, want)
	}
}

func TestStateNames(t *testing.T) {
	f := func(s State, name string, gauge float64) {
		t.Helper()
		if s.String() != name || s.Gauge() != gauge {
			t.Fatalf("State %d: String %q Gauge %v, want %q %v", int(s), s.String(), s.Gauge(), name, gauge)
		}
	}
	f(Closed, "closed", 0)      // breaker_state 0
	f(HalfOpen, "half-open", 1) // breaker_state 1
	f(Open, "open", 2)          // breaker_state 2
	f(State(7), "unknown", 7)   // never produced; still printable
}

// TestNoBreaker: a replica without SetBreaker behaves as before breakers.
func TestNoBreaker(t *testing.T) {
	r := replica(t, 0, 1, 0, true)
	for range 10 {
		done, ok := r.Allow()
		if !ok || done == nil {
			t.Fatal("Allow without a breaker refused")
		}
		done(false)
	}
	r.ProbeResult(false)
	if !r.Available() || r.BreakerState() != Closed {
		t.Fatalf("without a breaker after failures: Available=%v state=%v", r.Available(), r.BreakerState())
	}
}

func TestBreakerTrips(t *testing.T) {
	tests := []struct {
		name string
		cfg  BreakerConfig
		seq  string // see outcomes; the step is 1 s
		open bool   // breaker open after seq
	}{
		// Defaults: the fifth failure in a row trips.
		{"5 consecutive", BreakerConfig{}, "FFFFF", true},
		// Four in a row is not enough.
		{"4 consecutive", BreakerConfig{}, "FFFF", false},
		// A success resets the run: 8 failures, never 5 in a row, 9 outcomes.
		{"run broken", BreakerConfig{}, "FFFFSFFFF", false},
		// A configured threshold replaces the default.
		{"3 consecutive configured", BreakerConfig{ConsecutiveFailures: 3}, "FFF", true},
		// Ratio: 10 failures in 20 outcomes is 0.5 ≥ 0.5 over ≥ 20.
		{"ratio 10/20", BreakerConfig{}, "SFSFSFSFSFSFSFSFSFSF", true},
		// Same ratio with the halves 9 s apart, inside the 10 s window: trips.
		{"ratio 10/20 within window", BreakerConfig{}, "SFSFSFSFSF.........SFSFSFSFSF", true},
		// 10 of 19 is above 0.5 but below min_requests.
		{"ratio 10/19 too few", BreakerConfig{}, "FSFSFSFSFSFSFSFSFSF", false},
		// 9 of 20 is below 0.5.
		{"ratio 9/20 below", BreakerConfig{}, "SSFSFSFSFSFSFSFSFSFS", false},
		// 10 of 20, but the first 10 left the window before the rest came.
		{"ratio 10/20 across windows", BreakerConfig{}, "SFSFSFSFSF..........SFSFSFSFSF", false},
		// Failures older than the window no longer count toward the run.
		{"run across windows", BreakerConfig{}, "FFFF..........F", false},
		// A configured ratio and minimum replace the defaults: 3 of 4.
		{"ratio configured", BreakerConfig{FailureRatio: 0.75, MinRequests: 4}, "SFFF", true},
		// A configured window: halves 5 s apart, a 5 s window has dropped
		// the first (the default 10 s one would trip).
		{"window configured", BreakerConfig{Window: 5 * time.Second}, "SFSFSFSFSF.....SFSFSFSFSF", false},
		// The same halves 5 s apart under the default window.
		{"window default", BreakerConfig{}, "SFSFSFSFSF.....SFSFSFSFSF", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, rc := guarded(t, tt.cfg)
				outcomes(t, r, tt.seq, time.Second)
				if got := r.BreakerState() == Open; got != tt.open {
					t.Fatalf("after %q: state %v, want open=%v", tt.seq, r.BreakerState(), tt.open)
				}
				if tt.open {
					wantTransitions(t, rc, "r0:closed→open")
				} else {
					wantTransitions(t, rc)
				}
			})
		})
	}
}

// TestBreakerOpen: an open breaker takes the replica out of selection and
// refuses requests until Open passes, then lets exactly one trial through.
func TestBreakerOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, rc := guarded(t, BreakerConfig{})
		other := replica(t, 1, 8, 0, true)
		outcomes(t, r, "FFFFF", 0)
		wantTransitions(t, rc, "r0:closed→open")
		if r.Available() {
			t.Fatal("open breaker: replica Available")
		}
		if got := (LeastLoaded{}).Pick([]*Replica{r, other}, r); got != other {
			t.Fatalf("open breaker: Pick = %v, want the other replica", got)
		}
		if done, ok := r.Allow(); ok || done != nil {
			t.Fatal("open breaker allowed a request")
		}
		time.Sleep(DefaultOpen - time.Millisecond)
		if r.Available() || r.BreakerState() != Open {
			t.Fatalf("just before Open passed: Available=%v state=%v", r.Available(), r.BreakerState())
		}
		wantTransitions(t, rc)
		time.Sleep(2 * time.Millisecond)
		// Available alone notices the open time is over (no BreakerState
		// call first), and OnTransition hears of it.
		if !r.Available() {
			t.Fatal("after Open: half-open replica not Available for its trial")
		}
		wantTransitions(t, rc, "r0:open→half-open")
		if r.BreakerState() != HalfOpen {
			t.Fatalf("after Open: state %v, want half-open", r.BreakerState())
		}
		done, ok := r.Allow()
		if !ok {
			t.Fatal("half-open breaker refused its trial")
		}
		// While the trial runs: out of selection, no second request.
		if r.Available() {
			t.Fatal("half-open with its trial in flight: Available")
		}
		if _, ok := r.Allow(); ok {
			t.Fatal("half-open breaker allowed a second request beside its trial")
		}
		done(true)
		if r.BreakerState() != Closed || !r.Available() {
			t.Fatalf("trial succeeded: state %v Available=%v, want closed and available", r.BreakerState(), r.Available())
		}
		wantTransitions(t, rc, "r0:half-open→closed")
		// Closed afresh: the old failures are forgotten.
		outcomes(t, r, "FFFF", 0)
		if r.BreakerState() != Closed {
			t.Fatal("closed breaker remembered failures from before it opened")
		}
	})
}

// TestBreakerTrialFails: a failed trial reopens for another full Open period.
func TestBreakerTrialFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		open := 2 * time.Second
		r, rc := guarded(t, BreakerConfig{Open: open})
		outcomes(t, r, "FFFFF", 0)
		time.Sleep(open + time.Millisecond)
		done, ok := r.Allow()
		if !ok {
			t.Fatal("half-open breaker refused its trial")
		}
		time.Sleep(time.Second) // the trial runs a while; Open counts from its end
		done(false)
		if r.BreakerState() != Open || r.Available() {
			t.Fatalf("trial failed: state %v Available=%v, want open", r.BreakerState(), r.Available())
		}
		time.Sleep(open - time.Millisecond)
		if r.Available() {
			t.Fatal("reopened breaker available before Open passed again")
		}
		time.Sleep(2 * time.Millisecond)
		if r.BreakerState() != HalfOpen {
			t.Fatalf("after the second Open: state %v, want half-open", r.BreakerState())
		}
		wantTransitions(t, rc, "r0:closed→open", "r0:open→half-open", "r0:half-open→open", "r0:open→half-open")
	})
}

func TestBreakerProbeResult(t *testing.T) {
	tests := []struct {
		name  string
		setup string   // outcomes (step Open/2) before the probe; '.' waits
		trial bool     // a real request holds the half-open trial during the probe
		probe bool     // probe result
		want  State    // state after the probe
		trans []string // transitions, in order
	}{
		// Half-open and idle: a passing probe is the trial and closes.
		{"half-open probe ok", "FFFFF...", false, true, Closed,
			[]string{"closed→open", "open→half-open", "half-open→closed"}},
		// Half-open and idle: a failing probe reopens.
		{"half-open probe fails", "FFFFF...", false, false, Open,
			[]string{"closed→open", "open→half-open", "half-open→open"}},
		// A real trial is in flight: the probe is ignored, the trial decides.
		{"trial in flight", "FFFFF...", true, true, HalfOpen,
			[]string{"closed→open", "open→half-open"}},
		// Open, time not up: a probe cannot shorten the open period.
		{"open", "FFFFF.", false, true, Open, []string{"closed→open"}},
		// Closed: failing probes are not requests and never trip.
		{"closed probe fails", "", false, false, Closed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, rc := guarded(t, BreakerConfig{})
				outcomes(t, r, tt.setup, DefaultOpen/2)
				var done func(bool)
				if tt.trial {
					var ok bool
					if done, ok = r.Allow(); !ok {
						t.Fatal("no trial allowed")
					}
				}
				for range 10 { // repeated probes act once at most
					r.ProbeResult(tt.probe)
					if tt.probe {
						break
					}
					if tt.want == Open && r.BreakerState() == Open {
						break
					}
				}
				if got := r.BreakerState(); got != tt.want {
					t.Fatalf("after the probe: state %v, want %v", got, tt.want)
				}
				var want []string
				for _, s := range tt.trans {
					want = append(want, "r0:"+s)
				}
				wantTransitions(t, rc, want...)
				if done != nil {
					done(true) // the real trial still closes
					if r.BreakerState() != Closed {
						t.Fatalf("trial succeeded after an ignored probe: state %v", r.BreakerState())
					}
				}
			})
		})
	}
}

// TestBreakerLongStreamCounts: gobreaker drops outcomes of requests admitted
// before its window; a stream's outcome is known only when it ends, so
// streams longer than the window must still count.
func TestBreakerLongStreamCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, rc := guarded(t, BreakerConfig{})
		var dones []func(bool)
		for range 5 {
			done, ok := r.Allow()
			if !ok {
				t.Fatal("refused")
			}
			dones = append(dones, done)
		}
		time.Sleep(3 * DefaultWindow / 2) // the streams run 15 s, then all are cut
		for _, done := range dones {
			done(false)
		}
		if r.BreakerState() != Open {
			t.Fatalf("5 long streams failed: state %v, want open", r.BreakerState())
		}
		wantTransitions(t, rc, "r0:closed→open")
	})
}

// TestBreakerOutcomeAfterReopen: a stream admitted before the breaker opened
// and closed again does not count against the recovered replica.
func TestBreakerOutcomeAfterReopen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := guarded(t, BreakerConfig{ConsecutiveFailures: 1})
		old, _ := r.Allow()
		outcomes(t, r, "F", 0)
		time.Sleep(DefaultOpen + time.Millisecond)
		r.ProbeResult(true)
		time.Sleep(DefaultWindow)
		old(false) // admitted two states ago
		if r.BreakerState() != Closed {
			t.Fatalf("an outcome from before the reopen tripped the recovered breaker: %v", r.BreakerState())
		}
	})
}

// TestOnTransitionReentrant: the callback may use the replica, including the
// breaker, without deadlock (it runs outside gobreaker's lock).
func TestOnTransitionReentrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := replica(t, 0, 4, 0, true)
		var got []string
		r.SetBreaker(BreakerConfig{ConsecutiveFailures: 1, OnTransition: func(r *Replica, from, to State) {
			got = append(got, from.String()+"→"+to.String()+"="+r.BreakerState().String())
			_ = r.Available()
		}})
		outcomes(t, r, "F", 0)
		time.Sleep(DefaultOpen + time.Millisecond)
		r.ProbeResult(true)
		want := []string{"closed→open=open", "open→half-open=half-open", "half-open→closed=closed"}
		if !slices.Equal(got, want) {
			t.Fatalf("transitions %q, want %q", got, want)
		}
	})
}

// TestBreakerConcurrent hammers one breaker from many goroutines; run it with
// -race. Transitions must arrive as a chain (each from = previous to).
func TestBreakerConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := replica(t, 0, 1000, 0, true)
		var mu sync.Mutex
		var chain []State
		r.SetBreaker(BreakerConfig{ConsecutiveFailures: 3, Open: 10 * time.Millisecond, OnTransition: func(_ *Replica, from, to State) {
			mu.Lock()
			defer mu.Unlock()
			if n := len(chain); n > 0 && chain[n-1] != from {
				t.Errorf("transition %v→%v after one to %v", from, to, chain[n-1])
			}
			chain = append(chain, to)
		}})
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := range 300 {
					switch i % 7 {
					case 0:
						r.ProbeResult(g%2 == 0)
					case 1:
						_ = r.Available()
						_ = r.BreakerState()
					default:
						if done, ok := r.Allow(); ok {
							time.Sleep(time.Millisecond)
							done((i+g)%3 != 0)
						} else {
							time.Sleep(time.Millisecond)
						}
					}
				}
			})
		}
		wg.Wait()
		if len(chain) == 0 {
			t.Fatal("no transition under a third of requests failing")
		}
	})
}
