package balancer

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is a circuit breaker's state.
type State int32

// The values are those of the breaker_state gauge (SPEC §14).
const (
	Closed   State = iota // requests flow; outcomes are counted
	HalfOpen              // one trial request (or probe) decides
	Open                  // out of selection until BreakerConfig.Open passes
)

// String returns "closed", "half-open" or "open" (the `to` label of
// breaker_transitions_total and the ops views).
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return "unknown"
}

// Gauge is the breaker_state metric value: 0 closed, 1 half-open, 2 open.
func (s State) Gauge() float64 { return float64(s) }

func stateOf(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}

// BreakerConfig configures a replica's circuit breaker (SPEC §13 `breaker`).
// A zero field takes the default named on it.
type BreakerConfig struct {
	// ConsecutiveFailures trips the breaker on this many failures in a row
	// within the Window (default 5).
	ConsecutiveFailures uint32
	// FailureRatio trips the breaker when failures / outcomes reaches it
	// over at least MinRequests outcomes within the Window (defaults 0.5
	// and 20). Outcomes are finished requests: streams still running are
	// not in the denominator.
	FailureRatio float64
	MinRequests  uint32
	// Window is the rolling counting window (default 10 s), kept in ten
	// buckets, so outcomes age out a tenth of a window at a time.
	Window time.Duration
	// Open is how long an open breaker keeps the replica out of selection
	// before it goes half-open (default 5 s, `breaker.open_ms`).
	Open time.Duration
	// OnTransition, if set, is called for every state change, in order, to
	// log, count and publish it. It runs outside the breaker's lock, on the
	// goroutine that caused the change or another one using the breaker at
	// the time (a Pick among them), so it may call any Replica method but
	// should be quick.
	OnTransition func(r *Replica, from, to State)
}

// Defaults of BreakerConfig (SPEC §13).
const (
	DefaultConsecutiveFailures = 5
	DefaultFailureRatio        = 0.5
	DefaultMinRequests         = 20
	DefaultWindow              = 10 * time.Second
	DefaultOpen                = 5 * time.Second
)

// windowBuckets is how many gobreaker buckets a Window is split into.
const windowBuckets = 10

// errFailed is what a failed outcome reports to gobreaker (which wants an
// error; only nil versus non-nil matters).
var errFailed = errors.New("balancer: request failed")

// breaker wraps a gobreaker TwoStepCircuitBreaker, whose own state sits
// behind a mutex, with an atomic mirror of it so Available stays lock-free.
// The mirror is written by gobreaker's state-change hook, under gobreaker's
// lock, so it follows gobreaker's transitions in order.
type breaker struct {
	r      *Replica
	cb     *gobreaker.TwoStepCircuitBreaker[struct{}]
	window time.Duration
	open   time.Duration
	// base is the breaker's clock origin: openUntil is time.Since(base) in
	// nanoseconds, which keeps the monotonic clock.
	base time.Time

	state     atomic.Int32  // mirror of gobreaker's state
	openUntil atomic.Int64  // while state is Open: when gobreaker goes half-open
	trial     atomic.Bool   // a half-open trial is in flight (a hint: Allow decides)
	epoch     atomic.Uint64 // counts transitions, so a late outcome knows whether its window was reset

	onTransition func(r *Replica, from, to State)
	mu           sync.Mutex // guards pending
	pending      []transition
	npending     atomic.Int32
	draining     sync.Mutex // held by the one goroutine calling onTransition
}

type transition struct{ from, to State }

// SetBreaker gives the replica a fresh, closed circuit breaker, replacing any
// earlier one (outcomes of requests admitted by the old one are then
// ignored). Without a breaker a replica behaves as if it were always closed.
func (r *Replica) SetBreaker(cfg BreakerConfig) {
	if cfg.ConsecutiveFailures == 0 {
		cfg.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if !(cfg.FailureRatio > 0) { // also NaN
		cfg.FailureRatio = DefaultFailureRatio
	}
	if cfg.MinRequests == 0 {
		cfg.MinRequests = DefaultMinRequests
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Open <= 0 {
		cfg.Open = DefaultOpen
	}
	b := &breaker{r: r, window: cfg.Window, open: cfg.Open, base: time.Now(), onTransition: cfg.OnTransition}
	bucket := cfg.Window / windowBuckets
	if bucket <= 0 { // a window under 10 ns: one fixed bucket
		bucket = cfg.Window
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         r.ID,
		MaxRequests:  1, // one trial while half-open
		Interval:     cfg.Window,
		BucketPeriod: bucket,
		Timeout:      cfg.Open,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			done := c.TotalSuccesses + c.TotalFailures
			return c.ConsecutiveFailures >= cfg.ConsecutiveFailures ||
				done >= cfg.MinRequests && float64(c.TotalFailures) >= cfg.FailureRatio*float64(done)
		},
		OnStateChange: b.changed,
	})
	r.br.Store(b)
}

// changed is gobreaker's OnStateChange hook; it runs under gobreaker's lock,
// so it only records the change for flush.
func (b *breaker) changed(_ string, from, to gobreaker.State) {
	f, t := stateOf(from), stateOf(to)
	if t == Open {
		b.openUntil.Store(int64(time.Since(b.base) + b.open))
	}
	b.epoch.Add(1)
	b.state.Store(int32(t))
	if b.onTransition == nil {
		return
	}
	b.mu.Lock()
	b.pending = append(b.pending, transition{f, t})
	b.mu.Unlock()
	b.npending.Add(1)
}

// flush calls onTransition for recorded changes, outside gobreaker's lock.
// One goroutine drains at a time, which keeps the order; one that finds
// another draining leaves its changes to it (the drainer looks again after
// letting go, so none is stranded), and a callback that reenters the breaker
// does not deadlock.
func (b *breaker) flush() {
	for b.npending.Load() != 0 {
		if !b.draining.TryLock() {
			return
		}
		b.drain()
	}
}

func (b *breaker) drain() {
	defer b.draining.Unlock()
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.mu.Unlock()
			return
		}
		t := b.pending[0]
		b.pending = append(b.pending[:0], b.pending[1:]...)
		b.npending.Add(-1)
		b.mu.Unlock()
		b.onTransition(b.r, t.from, t.to)
	}
}

// current asks gobreaker for its state, which moves an open breaker whose
// time is up to half-open; it counts no request.
func (b *breaker) current() State {
	s := stateOf(b.cb.State())
	b.flush()
	return s
}

// allows is the breaker's part of Available, from the atomic mirror.
func (b *breaker) allows() bool {
	switch State(b.state.Load()) {
	case Closed:
		return true
	case HalfOpen:
		return !b.trial.Load()
	}
	if time.Since(b.base) <= time.Duration(b.openUntil.Load()) {
		return false
	}
	// Open time is over: let gobreaker go half-open (once per open period).
	switch b.current() {
	case Closed:
		return true
	case HalfOpen:
		return !b.trial.Load()
	}
	return false
}

func (r *Replica) breakerAllows() bool {
	b := r.br.Load()
	return b == nil || b.allows()
}

// closed reports, from the mirror, that the replica has no breaker or a
// closed one: the common case, decided without a call.
func (r *Replica) closed() bool {
	b := r.br.Load()
	return b == nil || b.state.Load() == int32(Closed)
}

// BreakerState returns the breaker's state (Closed without a breaker). An
// open breaker whose Open time has passed reports (and becomes) HalfOpen.
func (r *Replica) BreakerState() State {
	b := r.br.Load()
	if b == nil {
		return Closed
	}
	return b.current()
}

func noopDone(bool) {}

// Allow asks the breaker whether a request may go to the replica. ok is false
// while the breaker is open, or half-open with its trial in flight (then done
// is nil). Otherwise done must be called exactly once, when the request's
// outcome is known — for a stream, when it ends: success false for a connect
// error, 5xx/429 at start, a stall, a stream cut before its terminal frame or
// a missed time-to-first-token SLO; true otherwise (a client's cancel is not
// the replica's fault). In half-open the admitted request is the trial: its
// success closes the breaker, its failure reopens it. A replica without a
// breaker always allows.
//
// gobreaker ignores outcomes of requests admitted before the rolling Window;
// a stream that ran longer than the Window while the breaker stayed closed
// has its outcome recorded anew, so long streams still count.
func (r *Replica) Allow() (done func(success bool), ok bool) {
	b := r.br.Load()
	if b == nil {
		return noopDone, true
	}
	epoch := b.epoch.Load()
	start := time.Now()
	d, err := b.cb.Allow()
	b.flush() // Allow may have moved open → half-open
	if err != nil {
		return nil, false
	}
	trial := State(b.state.Load()) == HalfOpen
	if trial {
		b.trial.Store(true)
	}
	return func(success bool) {
		var err error
		if !success {
			err = errFailed
		}
		d(err)
		if trial {
			b.trial.Store(false)
		} else if time.Since(start) >= b.window && b.epoch.Load() == epoch {
			// Admitted a whole window ago and no transition since: gobreaker
			// dropped the outcome, so record it as a fresh request.
			if d2, err2 := b.cb.Allow(); err2 == nil {
				d2(err)
			}
		}
		b.flush()
	}, true
}

// ProbeResult feeds an active health probe's outcome to the breaker: when it
// is half-open and no trial is in flight, the probe is the trial (success
// closes the breaker, failure reopens it), so an idle replica that recovered
// closes within Open plus one health interval. In any other state a probe
// changes nothing: probes are not requests and do not count toward tripping.
func (r *Replica) ProbeResult(success bool) {
	b := r.br.Load()
	if b == nil || b.current() != HalfOpen {
		return
	}
	d, err := b.cb.Allow()
	b.flush()
	if err != nil {
		return // a trial is in flight; it decides
	}
	if State(b.state.Load()) != HalfOpen {
		// Closed by a trial between the two calls: the probe was admitted
		// as an ordinary request; leave it unreported (only finished
		// requests count toward the failure ratio).
		return
	}
	var e error
	if !success {
		e = errFailed
	}
	d(e)
	b.flush()
}
