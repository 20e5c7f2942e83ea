package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llama-orch/llama-orch/sse"
)

// Config is one `orch-bench run`.
type Config struct {
	Scenario    string        // label for the reports (default: derived from the flags)
	GatewayURL  string        // the gateway's base URL (loopback only)
	DirectURL   string        // the engine's base URL (loopback only); "" skips the direct phase
	Params                    // what every request asks for
	C           int           // concurrent closed-loop clients
	Duration    time.Duration // each phase starts new requests for this long
	Paced       time.Duration // the engine's per-token pacing; recorded only
	GatewayPIDs []int         // the gateway's processes, sampled for CPU and peak RSS
	EnginePIDs  []int         // the engine's processes, sampled for CPU (optional)
	TwoStep     bool          // POST then GET instead of one round trip
	// GatewayAPI is "orchqueue" (default) or "engine": the gateway URL is a
	// plain reverse proxy speaking the engine's own API (nginx as a reference).
	GatewayAPI string
	// Timeout bounds one request from send to terminal event; 0 picks
	// 60 s + 2 × tokens × paced.
	Timeout time.Duration
	// Ramp spreads client starts evenly over this long (0: all at once).
	Ramp time.Duration
	// Progress receives a progress line (with \r) every ProgressEvery; nil: none.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// Check validates c and fills defaults.
func (c *Config) Check() error {
	var errs []error
	if c.GatewayURL == "" {
		errs = append(errs, errors.New("--gateway is required"))
	} else if _, err := ParseTarget(c.GatewayURL); err != nil {
		errs = append(errs, fmt.Errorf("--gateway: %w", err))
	}
	if c.DirectURL != "" {
		if _, err := ParseTarget(c.DirectURL); err != nil {
			errs = append(errs, fmt.Errorf("--direct: %w", err))
		}
	}
	if c.C < 1 {
		errs = append(errs, fmt.Errorf("-c must be at least 1, got %d", c.C))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("-d must be positive, got %v", c.Duration))
	}
	if c.Tokens < 1 {
		errs = append(errs, fmt.Errorf("--tokens must be at least 1, got %d", c.Tokens))
	}
	if c.Model == "" {
		errs = append(errs, errors.New("--model is required"))
	}
	if c.Engine == "" {
		errs = append(errs, errors.New("--engine is required"))
	} else if _, ok := directProtocols[c.Engine]; !ok && (c.DirectURL != "" || c.GatewayAPI == "engine") {
		_, err := NewDirect(c.Engine, Target{}, c.Params)
		errs = append(errs, err)
	}
	switch c.GatewayAPI {
	case "":
		c.GatewayAPI = "orchqueue"
	case "orchqueue", "engine":
	default:
		errs = append(errs, fmt.Errorf("--gateway-api must be orchqueue or engine, got %q", c.GatewayAPI))
	}
	if c.GatewayAPI == "engine" && c.TwoStep {
		errs = append(errs, errors.New("--two-step needs --gateway-api orchqueue"))
	}
	if c.Paced < 0 || c.Timeout < 0 || c.Ramp < 0 {
		errs = append(errs, errors.New("--paced, --timeout and --ramp must not be negative"))
	}
	if c.Ramp >= c.Duration && c.Duration > 0 {
		errs = append(errs, fmt.Errorf("--ramp (%v) must be shorter than -d (%v)", c.Ramp, c.Duration))
	}
	if c.Timeout == 0 {
		c.Timeout = 60*time.Second + 2*time.Duration(c.Tokens)*c.Paced
	}
	if c.Prompt == "" {
		c.Prompt = "Tell me a story about a lighthouse keeper."
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 250 * time.Millisecond
	}
	if c.Scenario == "" {
		c.Scenario = fmt.Sprintf("c%d-t%d-paced%v", c.C, c.Tokens, c.Paced)
	}
	return errors.Join(errs...)
}

// Run drives the direct phase (when DirectURL is set) and then the gateway
// phase, each for c.Duration, and returns the report. Canceling ctx stops
// both phases early (in-flight requests are aborted and not counted); the
// report then says interrupted.
func Run(ctx context.Context, c Config) (*Report, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	rep := newReport(&c)
	if c.DirectURL != "" {
		t, _ := ParseTarget(c.DirectURL)
		proto, err := NewDirect(c.Engine, t, c.Params)
		if err != nil {
			return nil, err
		}
		ph, err := runPhase(ctx, &c, "direct", t, proto, nil, procSet(c.EnginePIDs))
		if err != nil {
			return nil, err
		}
		rep.Direct = ph
	}
	t, _ := ParseTarget(c.GatewayURL)
	var proto Protocol
	if c.GatewayAPI == "engine" {
		p, err := NewDirect(c.Engine, t, c.Params)
		if err != nil {
			return nil, err
		}
		proto = p
	} else {
		proto = NewGateway(t, c.Params, c.TwoStep)
	}
	ph, err := runPhase(ctx, &c, "gateway", t, proto, procSet(c.GatewayPIDs), procSet(c.EnginePIDs))
	if err != nil {
		return nil, err
	}
	rep.Gateway = ph
	rep.Interrupted = ctx.Err() != nil
	rep.finish()
	return rep, nil
}

// phase is one run of c closed-loop clients against one target.
type phase struct {
	cfg      *Config
	name     string
	proto    Protocol
	hc       *fasthttp.HostClient
	rec      *recorder
	deadline time.Time // no request starts after it
	// live counters for the progress line
	requests, tokens, errs, inflight atomic.Int64
}

func runPhase(ctx context.Context, c *Config, name string, t Target, proto Protocol, procs, engine procSet) (*Phase, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: loopbackControl}
	hc := &fasthttp.HostClient{
		Addr:                      t.Addr,
		Name:                      "orch-bench",
		MaxConns:                  c.C + 16,
		MaxConnWaitTimeout:        c.Timeout,
		MaxIdleConnDuration:       2 * time.Second, // under llama.cpp's 5 s keep-alive
		MaxIdemponentCallAttempts: 1,               // never retry: a retry would hide an error
		DialDualStack:             t.IPv6,
		Dial: func(addr string) (net.Conn, error) {
			return dialer.Dial("tcp", addr)
		},
	}
	defer hc.CloseIdleConnections()
	ph := &phase{cfg: c, name: name, proto: proto, hc: hc, rec: newRecorder(4 * runtime.GOMAXPROCS(0))}

	var cpu0 time.Duration
	if len(procs) > 0 {
		v, err := procs.cpu()
		if err != nil {
			return nil, err
		}
		cpu0 = v
	}
	var eng0 time.Duration
	if len(engine) > 0 {
		v, err := engine.cpu()
		if err != nil {
			return nil, err
		}
		eng0 = v
	}
	busy0, busyErr := MachineBusy()
	self0 := selfCPU()
	start := time.Now()
	ph.deadline = start.Add(c.Duration)

	stopProgress := ph.progress(start)
	var wg sync.WaitGroup
	for i := 0; i < c.C; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ph.client(ctx, i, start.Add(time.Duration(i)*c.Ramp/time.Duration(c.C)))
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	stopProgress()

	m := ph.rec.merge()
	out := &Phase{
		Requests:   m.requests,
		Tokens:     m.tokens,
		Errors:     m.errors,
		TTFT:       percentiles(m.ttft),
		ITL:        percentiles(m.itl),
		Total:      percentiles(m.total),
		WallS:      round3(wall.Seconds()),
		ClientCPUS: round3((selfCPU() - self0).Seconds()),
	}
	if busy1, err := MachineBusy(); err == nil && busyErr == nil {
		out.MachineBusyCPUS = round3((busy1 - busy0).Seconds())
	}
	if len(engine) > 0 {
		v, err := engine.cpu()
		if err != nil {
			return nil, err
		}
		e := round3((v - eng0).Seconds())
		out.EngineCPUS = &e
	}
	var nerr int64
	for _, v := range m.errors {
		nerr += v
	}
	out.OK = m.requests - nerr
	if s := wall.Seconds(); s > 0 {
		out.RPS = round3(float64(m.requests) / s)
		out.TokensPerS = round3(float64(m.tokens) / s)
	}
	if len(procs) > 0 {
		cpu1, err := procs.cpu()
		if err != nil {
			return nil, err
		}
		rss, err := procs.peakRSS()
		if err != nil {
			return nil, err
		}
		cpuS := (cpu1 - cpu0).Seconds()
		out.CPUS = &cpuS
		if m.tokens > 0 {
			v := cpuS / (float64(m.tokens) / 1000)
			v = math6(v)
			out.CPUSPer1000Tokens = &v
			us := math6(cpuS / float64(m.tokens) * 1e6)
			out.CPUUsPerToken = &us
		}
		out.PeakRSSBytes = &rss
	}
	return out, nil
}

func math6(v float64) float64 { return float64(int64(v*1e6+0.5)) / 1e6 }

// selfCPU is this process's CPU time (user + system): the load generator's
// own cost, reported so a saturated client is visible.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// client is one closed-loop client: its own request, responses and reader,
// reused across requests.
type client struct {
	ctx     context.Context
	ph      *phase
	id      int
	hc      *fasthttp.HostClient
	req     *fasthttp.Request
	resp    *fasthttp.Response // the streamed response
	resp0   *fasthttp.Response // a buffered response (two-step POST)
	rd      *sse.Reader
	body    []byte
	path    []byte
	rng     *rand.Rand
	timeout time.Duration
	sent    time.Time
	s       sample

	mu     sync.Mutex
	stream fasthttp.ReadCloserWithError // the open body stream, for abort
}

func (ph *phase) client(ctx context.Context, id int, startAt time.Time) {
	c := &client{
		ctx: ctx, ph: ph, id: id, hc: ph.hc,
		req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse(), resp0: fasthttp.AcquireResponse(),
		rd:      sse.NewReader(eofReader{}, 0),
		rng:     rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano()))),
		timeout: ph.cfg.Timeout,
	}
	defer func() {
		fasthttp.ReleaseRequest(c.req)
		fasthttp.ReleaseResponse(c.resp)
		fasthttp.ReleaseResponse(c.resp0)
	}()
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	if d := time.Until(startAt); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	for ctx.Err() == nil && time.Now().Before(ph.deadline) {
		ph.inflight.Add(1)
		c.one()
		ph.inflight.Add(-1)
		if ctx.Err() != nil {
			return // aborted mid-request: not a measurement
		}
		ph.rec.record(id, &c.s)
		ph.requests.Add(1)
		ph.tokens.Add(int64(c.s.tokens))
		if c.s.kind != "" {
			ph.errs.Add(1)
		}
	}
}

func (c *client) since() time.Duration { return time.Since(c.sent) }

// do sends c.req and checks the status; on success c.resp's body stream is
// open (and registered for abort).
func (c *client) do(want int) string {
	c.resp.StreamBody = true
	if err := c.hc.Do(c.req, c.resp); err != nil {
		return errKind(err)
	}
	if code := c.resp.StatusCode(); code != want {
		_ = c.resp.CloseBodyStream() // an unread body: the connection is dropped
		return "http_" + fmt.Sprint(code)
	}
	return ""
}

// one runs one request to its end and leaves the measurement in c.s.
func (c *client) one() {
	s := &c.s
	s.ttft, s.total, s.tokens, s.kind = 0, 0, 0, ""
	s.itl = s.itl[:0]
	c.sent = time.Now()
	if kind := c.ph.proto.Start(c); kind != "" {
		s.kind = kind
		return
	}
	bs := c.resp.BodyStream()
	if bs == nil {
		s.kind = KindNoTerminal
		return
	}
	body, _ := bs.(fasthttp.ReadCloserWithError)
	c.mu.Lock()
	c.stream = body
	c.mu.Unlock()
	if c.ctx.Err() != nil {
		c.abort() // canceled before the stream was registered
	}
	defer func() {
		c.mu.Lock()
		c.stream = nil
		c.mu.Unlock()
		_ = c.resp.CloseBodyStream()
	}()
	c.rd.Reset(bs)
	var f sse.Frame
	last := c.sent
	want := c.ph.cfg.Tokens
	for {
		err := c.rd.Next(&f)
		now := time.Now()
		if err != nil {
			if isTimeout(err) {
				s.kind = KindTimeout
			} else {
				s.kind = KindNoTerminal
			}
			return
		}
		st, kind := c.ph.proto.Frame(&f)
		if st&stepToken != 0 {
			if s.tokens == 0 {
				s.ttft = now.Sub(c.sent)
			} else {
				s.itl = append(s.itl, now.Sub(last))
			}
			last = now
			s.tokens++
		}
		if st&stepFail != 0 {
			s.kind = kind
			return
		}
		if st&stepEnd != 0 {
			s.total = now.Sub(c.sent)
			break
		}
	}
	if s.tokens != want {
		s.kind = KindTokenCount
	}
	// Read to the end of the body (the last chunk follows the terminal event
	// at once) so the connection goes back to the pool instead of closing.
	for c.rd.Next(&f) == nil {
	}
}

// abort interrupts an in-flight stream when the run is canceled.
func (c *client) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream != nil {
		_ = c.stream.CloseWithError(context.Canceled)
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// progress prints a progress line every ProgressEvery until the returned
// stop is called; it prints nothing when Progress is nil.
func (ph *phase) progress(start time.Time) (stop func()) {
	w := ph.cfg.Progress
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	line := func() {
		el := time.Since(start).Truncate(100 * time.Millisecond)
		state := ""
		if time.Now().After(ph.deadline) {
			state = " (finishing)"
		}
		fmt.Fprintf(w, "\r\033[K%-7s %5.1fs/%v%s  requests %d  tokens %d  errors %d  in flight %d",
			ph.name, el.Seconds(), ph.cfg.Duration, state, ph.requests.Load(), ph.tokens.Load(), ph.errs.Load(), ph.inflight.Load())
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(ph.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				line()
			case <-done:
				line()
				fmt.Fprintln(w)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}
