package features

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cucumber/godog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	faketgi "github.com/llama-orch/llama-orch/engines/fake/tgi"
	faketriton "github.com/llama-orch/llama-orch/engines/fake/triton"
	fakevllm "github.com/llama-orch/llama-orch/engines/fake/vllm"
	"github.com/llama-orch/llama-orch/gateway"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// Steps that run the scenario's pool on any engine with a fake and an
// adapter (SPEC §6, issue 5), or several engines behind one gateway.
//
// The world's own start runs llama.cpp fakes only. The step
// `the gateway serves the pool on engine "E"` starts E's fakes and the
// gateway in its place — every earlier configuration step (pool, faults per
// replica, breakers, timeouts, policies, …) still applies — after which the
// world's stream, metrics, control-plane and replica steps work unchanged.
// Only what names the engine needs its own step: submitting a task (the body
// names its engine) and asking a replica's fake what it received.
//
// Adding an engine to the suite: one entry in engineKinds, and one row in
// each Examples table of engines.feature.

// engineFake is what the steps use of any engine's fake replica.
type engineFake interface {
	Start(addr string) error
	Addr() string
	URL() string
	InFlight() int
	Requests() int64
	Close() error
}

// engineKind is one engine the suite can run a pool on.
type engineKind struct {
	newFake func(fake.Options) (engineFake, error)
	// engineModel is the pool's engine_model when the adapter needs one
	// (Triton's request path names the model).
	engineModel string
}

// asFake keeps a failed constructor's typed nil out of the interface.
func asFake[F engineFake](f F, err error) (engineFake, error) {
	if err != nil {
		return nil, err
	}
	return f, nil
}

var engineKinds = map[string]engineKind{
	engines.LlamaCpp: {newFake: func(o fake.Options) (engineFake, error) { return asFake(fake.New(o)) }},
	engines.TGI:      {newFake: func(o fake.Options) (engineFake, error) { return asFake(faketgi.New(o)) }},
	engines.Triton: {newFake: func(o fake.Options) (engineFake, error) { return asFake(faketriton.New(o)) },
		engineModel: faketriton.DefaultModel},
	engines.VLLM: {newFake: func(o fake.Options) (engineFake, error) { return asFake(fakevllm.New(o)) }},
}

func engineNames() string {
	var names []string
	for n := range engineKinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// engineWorld extends one scenario's world with engines other than
// llama.cpp, and with the ops state of ops_steps_test.go.
type engineWorld struct {
	*world
	engine  string // the scenario pool's engine ("" = the world's llama.cpp)
	poolCtx int    // the pool's ctx (0 = the world's 4096)
	// engineSlots is what each fake accepts at once (0 = the pool's slots):
	// TGI's --max-concurrent-requests, the others' parallel slots.
	engineSlots int
	efakes      []engineFake // the pool's replicas when not llama.cpp (else world.fakes)
	others      []engineFake // fakes of extra pools and of replicas an apply adds
	extra       strings.Builder
	// poolEngines lists the engines of a multi-engine scenario, in order.
	poolEngines []string

	// Ops state (ops_steps_test.go).
	cookie        string                // ops page session token
	candidate     string                // the config to POST /v1/config
	runningBefore string                // GET /v1/config when the candidate was made
	newReplicas   map[string]engineFake // engines started for an apply, by replica id
	oaiText       string                // text of the last OpenAI event stream
}

// initEngineSteps registers the engine steps and the ops steps
// (ops_steps_test.go), which share engineWorld.
func initEngineSteps(sc *godog.ScenarioContext, w *world) {
	e := &engineWorld{world: w}
	sc.Before(func(ctx context.Context, _ *godog.Scenario) (context.Context, error) {
		*e = engineWorld{world: w}
		return ctx, nil
	})
	// Registered after the world's After, so the gateway is down first.
	sc.After(func(ctx context.Context, _ *godog.Scenario, _ error) (context.Context, error) {
		return ctx, e.closeFakes()
	})

	// Configuration and start.
	sc.Step(`^the engine ends its text after (\d+) tokens$`, e.givenTokenCap)
	sc.Step(`^the pool's ctx is (\d+)$`, e.givenPoolCtx)
	sc.Step(`^each engine accepts (\d+) requests at once$`, e.givenEngineSlots)
	sc.Step(`^the gateway serves the pool on engine "(\w+)"$`, e.startOn)
	sc.Step(`^the gateway serves the pool's model on each of these engines:$`, e.startOnEach)

	// Tasks naming the pool's engine.
	sc.Step(`^task "(\w+)" was submitted to the pool's engine for (\d+) tokens$`, e.submittedTo)
	sc.Step(`^task "(\w+)" in session "(\w+)" was submitted to the pool's engine for (\d+) tokens$`, e.submittedInSessionTo)
	sc.Step(`^task "(\w+)" in session "(\w+)" was submitted to the pool's engine for (\d+) tokens with seed (-?\d+)$`, e.submittedSeedTo)
	sc.Step(`^I submit task "(\w+)" to the pool's engine for (\d+) tokens$`, e.submitTo)
	sc.Step(`^I submit task "(\w+)" to the pool's engine for (\d+) tokens with a prompt of (\d+) words of (\d+) letters?$`, e.submitWordsTo)
	sc.Step(`^reader "(\w+)" submits task "(\w+)" to the pool's engine for (\d+) tokens accepting an event stream$`, e.submitStreamingTo)
	sc.Step(`^the same task with prompt "([^"]*)" and seed (-?\d+) for (\d+) tokens is streamed once on each of those engines$`, e.streamOnEach)

	// Streams.
	sc.Step(`^the token texts of reader "(\w+)" are the fake model's words for seed (-?\d+) and prompt "([^"]*)"$`, e.tokensAreFakeText)
	sc.Step(`^each of those engines streamed "started", (\d+) tokens numbered 0 to (\d+), "metrics" and "end" with tokens_out (\d+)$`, e.eachStreamed)
	sc.Step(`^each of those engines streamed the fake model's words for seed (-?\d+) and prompt "([^"]*)"$`, e.eachSameText)

	// The engines' own view.
	sc.Step(`^the (\w+) engine of replica "(\w+)" received (\d+) completion requests?$`, e.replicaReceived)
	sc.Step(`^the (\w+) engines of the pool received (\d+) completion requests? in all$`, e.poolReceived)
	sc.Step(`^the (\w+) engines of the pool (?:have|get back to) (\d+) requests? in flight$`, e.poolInFlight)

	initOpsSteps(sc, e)
}

// ---- configuration and start ----

func (e *engineWorld) givenTokenCap(n int) error {
	e.fake.Tokens = n
	return e.configurable()
}

func (e *engineWorld) givenPoolCtx(n int) error {
	e.poolCtx = n
	return e.configurable()
}

func (e *engineWorld) givenEngineSlots(n int) error {
	e.engineSlots = n
	return e.configurable()
}

// fakeSlots is the Slots option of the scenario's fakes.
func (e *engineWorld) fakeSlots() int {
	if e.engineSlots > 0 {
		return e.engineSlots
	}
	return e.pool.slots
}

// engineName is the engine tasks name: the pool's.
func (e *engineWorld) engineName() string {
	if e.engine == "" {
		return engines.LlamaCpp
	}
	return e.engine
}

// startOn starts the pool's replicas on engine's fake, then the gateway.
func (e *engineWorld) startOn(engine string) error {
	if err := e.startPoolFakes(engine); err != nil {
		return err
	}
	y, err := e.configYAML()
	if err != nil {
		return err
	}
	return e.startGateway(y)
}

// startOnEach runs the pool on the table's first engine and one more pool
// per other engine ("p-<engine>", one replica, same model and slots), all
// serving the pool's model: tasks pick a pool by naming its engine.
func (e *engineWorld) startOnEach(table *godog.Table) error {
	var list []string
	for i, row := range table.Rows {
		if i == 0 {
			if len(row.Cells) != 1 || row.Cells[0].Value != "engine" {
				return errors.New(`the table needs one column headed "engine"`)
			}
			continue
		}
		list = append(list, strings.TrimSpace(row.Cells[0].Value))
	}
	if len(list) == 0 {
		return errors.New("the table names no engine")
	}
	if err := e.startPoolFakes(list[0]); err != nil {
		return err
	}
	seen := map[string]bool{list[0]: true}
	for _, eng := range list[1:] {
		if seen[eng] {
			return fmt.Errorf("engine %q is listed twice", eng)
		}
		seen[eng] = true
		k, ok := engineKinds[eng]
		if !ok {
			return fmt.Errorf("no fake for engine %q (the suite has %s)", eng, engineNames())
		}
		o := e.fake
		o.Slots = e.fakeSlots()
		f, err := k.newFake(o)
		if err != nil {
			return fmt.Errorf("%s fake: %w", eng, err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			return fmt.Errorf("%s fake: %w", eng, err)
		}
		e.others = append(e.others, f)
		fmt.Fprintf(&e.extra, "  - id: %s-%s\n    engine: %s\n    model: %s\n", e.pool.id, eng, eng, e.pool.model)
		if k.engineModel != "" {
			fmt.Fprintf(&e.extra, "    engine_model: %s\n", k.engineModel)
		}
		fmt.Fprintf(&e.extra, "    replicas:\n      - { id: r0, url: %q, slots: %d }\n", f.URL(), e.pool.slots)
	}
	e.poolEngines = list
	y, err := e.configYAML()
	if err != nil {
		return err
	}
	return e.startGateway(y)
}

// startPoolFakes starts one fake of engine per replica of the pool, with
// the scenario's options and each replica's own changes.
func (e *engineWorld) startPoolFakes(engine string) error {
	if err := e.configurable(); err != nil {
		return err
	}
	k, ok := engineKinds[engine]
	if !ok {
		return fmt.Errorf("no fake for engine %q (the suite has %s)", engine, engineNames())
	}
	if len(e.fakes)+len(e.efakes) > 0 {
		return errors.New("the pool's engines are already running")
	}
	e.engine = engine
	for i := 0; i < e.pool.replicas; i++ {
		o := e.fake
		o.Slots = e.fakeSlots()
		for _, mod := range e.replicaMods[i] {
			mod(&o)
		}
		f, err := k.newFake(o)
		if err != nil {
			return fmt.Errorf("%s fake of replica r%d: %w", engine, i, err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			return fmt.Errorf("%s fake of replica r%d: %w", engine, i, err)
		}
		if lf, ok := f.(*fake.Server); ok {
			e.fakes = append(e.fakes, lf) // the world's steps and close use them
		} else {
			e.efakes = append(e.efakes, f)
		}
	}
	return nil
}

// configYAML is the world's config with the pool on e.engine, its
// replicas, its ctx, and any extra pools.
func (e *engineWorld) configYAML() (string, error) {
	y := e.world.yaml()
	const llamaLine, ctxLine = "    engine: llamacpp\n", "    ctx: 4096\n"
	if !strings.Contains(y, llamaLine) || !strings.Contains(y, ctxLine) || !strings.HasSuffix(y, "\n") {
		return "", fmt.Errorf("the world's config no longer has the shape these steps edit:\n%s", y)
	}
	for i, f := range e.efakes {
		y += fmt.Sprintf("      - { id: r%d, url: %q, slots: %d }\n", i, f.URL(), e.pool.slots)
	}
	pool := "    engine: " + e.engineName() + "\n"
	if m := engineKinds[e.engineName()].engineModel; m != "" {
		pool += "    engine_model: " + m + "\n"
	}
	y = strings.Replace(y, llamaLine, pool, 1)
	if e.poolCtx > 0 {
		y = strings.Replace(y, ctxLine, "    ctx: "+strconv.Itoa(e.poolCtx)+"\n", 1)
	}
	return y + e.extra.String(), nil
}

// startGateway does what world.start does after the fakes: the gateway on
// 127.0.0.1:0 with config y, then a bounded wait until every pool is ready
// (unless the scenario expects an unready pool).
func (e *engineWorld) startGateway(y string) error {
	w := e.world
	cfg, problems, err := config.Check([]byte(y), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		return fmt.Errorf("config: %v %v\n%s", err, problems, y)
	}
	w.logs = &syncBuffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(w.logs), zap.WarnLevel))
	srv, err := gateway.New(cfg, gateway.Options{NewAdapter: newAdapter, Logger: log, KeepAliveInterval: w.keepAlive})
	if err != nil {
		return fmt.Errorf("gateway.New: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		return err
	}
	w.srv, w.url, w.done = srv, "http://"+ln.Addr().String(), make(chan error, 1)
	go func() { w.done <- srv.Serve(ln) }()
	w.hc = &http.Client{Timeout: httpTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	if !w.expectReady {
		return nil
	}
	return eventually(func() error {
		res, err := w.hc.Get(w.url + "/readyz")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		r := &response{status: res.StatusCode, body: b}
		m, err := r.json()
		if err != nil {
			return err
		}
		pools, _ := m["pools"].([]any)
		if len(pools) != len(cfg.Pools) {
			return fmt.Errorf("GET /readyz lists %d pools, want %d: %s", len(pools), len(cfg.Pools), b)
		}
		for _, p := range pools {
			if pm, _ := p.(map[string]any); pm["ready"] != true {
				return fmt.Errorf("a pool is not ready: %s", b)
			}
		}
		return nil
	})
}

// closeFakes closes the fakes the world does not own (it closes world.fakes).
func (e *engineWorld) closeFakes() error {
	var errs []error
	for _, f := range append(append([]engineFake(nil), e.efakes...), e.others...) {
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("fake Close: %w", err))
		}
	}
	e.efakes, e.others = nil, nil
	return errors.Join(errs...)
}

// ---- tasks naming the pool's engine ----

// body is a task body naming the pool's engine.
func (e *engineWorld) body(task, session string, tokens int, extra ...any) string {
	return e.taskBody(task, session, tokens, append([]any{"engine", e.engineName()}, extra...)...)
}

func (e *engineWorld) submitTo(task string, tokens int) error {
	return e.post(e.body(task, "", tokens), keyData)
}

func (e *engineWorld) submittedTo(task string, tokens int) error {
	return e.submittedInSessionTo(task, "", tokens)
}

func (e *engineWorld) submittedInSessionTo(task, session string, tokens int) error {
	if err := e.post(e.body(task, session, tokens), keyData); err != nil {
		return err
	}
	return e.admittedOK(task)
}

func (e *engineWorld) submittedSeedTo(task, session string, tokens int, seed int64) error {
	if err := e.post(e.body(task, session, tokens, "seed", seed), keyData); err != nil {
		return err
	}
	return e.admittedOK(task)
}

// submitWordsTo submits a prompt of n words of size letters each: the
// fakes count one token per word (plus BOS), while admission estimates
// chars_per_token 4 — so short words get past admission's estimate and
// reach the engine's own context check, and long words do not.
func (e *engineWorld) submitWordsTo(task string, tokens, n, size int) error {
	words := make([]string, n)
	for i := range words {
		words[i] = strings.Repeat(string(rune('a'+i%26)), size)
	}
	return e.post(e.body(task, "", tokens, "prompt", strings.Join(words, " ")), keyData)
}

func (e *engineWorld) submitStreamingTo(name, task string, tokens int) error {
	return e.streamBody(name, task, e.body(task, "", tokens))
}

// streamBody is the one-round-trip form: POST with Accept: text/event-stream
// read to the end by reader name.
func (e *engineWorld) streamBody(name, task, body string) error {
	r := &reader{path: e.streamRequest(task, keyData).path}
	e.readers[name] = r
	if err := e.openStream(r, request{method: "POST", path: "/v1/tasks", body: body, key: keyData,
		header: []string{"Accept", "text/event-stream"}}); err != nil {
		return err
	}
	return r.readAll()
}

// streamOnEach runs one task per engine of a multi-engine scenario, each
// read by a reader named after its engine.
func (e *engineWorld) streamOnEach(prompt string, seed int64, tokens int) error {
	if len(e.poolEngines) == 0 {
		return errors.New("no multi-engine gateway: use `the gateway serves the pool's model on each of these engines`")
	}
	for _, eng := range e.poolEngines {
		task := "on-" + eng
		body := e.taskBody(task, "", tokens, "engine", eng, "prompt", prompt, "seed", seed)
		if err := e.streamBody(eng, task, body); err != nil {
			return fmt.Errorf("engine %s: %w", eng, err)
		}
	}
	return nil
}

// ---- streams ----

func (e *engineWorld) tokensAreFakeText(name string, seed int64, prompt string) error {
	r, err := e.reader(name)
	if err != nil {
		return err
	}
	toks := r.tokens()
	if len(toks) == 0 {
		return fmt.Errorf("reader %q got no token; events:%s", name, r.dump())
	}
	for i, ev := range toks {
		if want := fake.Text(seed, prompt, i); ev.data["t"] != want {
			return fmt.Errorf("reader %q token %d is %q, the fake model's word is %q; events:%s", name, i, ev.data["t"], want, r.dump())
		}
	}
	return nil
}

func (e *engineWorld) eachStreamed(n, last, tokensOut int) error {
	for _, eng := range e.poolEngines {
		if err := e.firstEventIs(eng, "started"); err != nil {
			return fmt.Errorf("engine %s: %w", eng, err)
		}
		if err := e.eventFieldIs("started", eng, "engine", strconv.Quote(eng)); err != nil {
			return fmt.Errorf("engine %s: %w", eng, err)
		}
		if err := e.gotTokens(eng, n, last); err != nil {
			return fmt.Errorf("engine %s: %w", eng, err)
		}
		if err := e.gotMetricsBeforeEnd(eng); err != nil {
			return fmt.Errorf("engine %s: %w", eng, err)
		}
		if err := e.lastIsEnd(eng, tokensOut); err != nil {
			return fmt.Errorf("engine %s: %w", eng, err)
		}
	}
	return nil
}

// eachSameText compares every engine's token texts with the first engine's
// and with the fake model's words (SPEC §13: a function of seed, prompt and
// position only).
func (e *engineWorld) eachSameText(seed int64, prompt string) error {
	if len(e.poolEngines) == 0 {
		return errors.New("no multi-engine gateway in this scenario")
	}
	first, err := e.reader(e.poolEngines[0])
	if err != nil {
		return err
	}
	for _, eng := range e.poolEngines {
		if err := e.tokensAreFakeText(eng, seed, prompt); err != nil {
			return fmt.Errorf("engine %s: %w", eng, err)
		}
		if err := e.sameTokens(e.poolEngines[0], eng); err != nil {
			return fmt.Errorf("engines %s and %s: %w; %s:%s", e.poolEngines[0], eng, err, e.poolEngines[0], first.dump())
		}
	}
	return nil
}

// ---- the engines' own view ----

// replicaFakes are the pool's replicas r0…, whatever the engine.
func (e *engineWorld) replicaFakes(engine string) ([]engineFake, error) {
	if err := e.start(); err != nil {
		return nil, err
	}
	if engine != e.engineName() {
		return nil, fmt.Errorf("the pool runs on %s, not %s", e.engineName(), engine)
	}
	if len(e.efakes) > 0 {
		return e.efakes, nil
	}
	out := make([]engineFake, len(e.fakes))
	for i, f := range e.fakes {
		out[i] = f
	}
	return out, nil
}

func (e *engineWorld) replicaReceived(engine, id string, n int) error {
	fs, err := e.replicaFakes(engine)
	if err != nil {
		return err
	}
	i, err := e.replicaIndex(id)
	if err != nil {
		return err
	}
	if got := fs[i].Requests(); got != int64(n) {
		return fmt.Errorf("the %s engine of replica %s received %d completion requests, want %d", engine, id, got, n)
	}
	return nil
}

func (e *engineWorld) poolReceived(engine string, n int) error {
	fs, err := e.replicaFakes(engine)
	if err != nil {
		return err
	}
	var got int64
	for _, f := range fs {
		got += f.Requests()
	}
	if got != int64(n) {
		return fmt.Errorf("the %s engines of the pool received %d completion requests, want %d", engine, got, n)
	}
	return nil
}

func (e *engineWorld) poolInFlight(engine string, n int) error {
	fs, err := e.replicaFakes(engine)
	if err != nil {
		return err
	}
	return eventually(func() error {
		got := 0
		for _, f := range fs {
			got += f.InFlight()
		}
		if got != n {
			return fmt.Errorf("the %s engines of the pool have %d requests in flight, want %d", engine, got, n)
		}
		return nil
	})
}
