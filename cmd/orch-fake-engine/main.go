// Command orch-fake-engine serves one canned inference engine replica that
// speaks a real engine's wire format (SPEC §6, §13), for tests, demos and
// benchmarks without a GPU.
//
//	orch-fake-engine --engine llamacpp --listen 127.0.0.1:18081 [--slots N] [--ctx N]
//	    [--tokens N] [--ttft-ms N] [--itl-ms N] [--load-ms N] [--fail MODE]
//	    [--engine-version S] [--model NAME]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	faketgi "github.com/llama-orch/llama-orch/engines/fake/tgi"
	faketriton "github.com/llama-orch/llama-orch/engines/fake/triton"
	fakevllm "github.com/llama-orch/llama-orch/engines/fake/vllm"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, sig))
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// run parses args, serves until stop delivers a value and returns the exit
// code. Tests call it directly.
func run(args []string, stdout, stderr io.Writer, stop <-chan os.Signal) int {
	fs := flag.NewFlagSet("orch-fake-engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		engine    = fs.String("engine", "", "engine wire format: llamacpp|vllm|tgi|triton (required)")
		listen    = fs.String("listen", "", "address to listen on, e.g. 127.0.0.1:18081 (required)")
		slots     = fs.Int("slots", fake.DefaultSlots, "requests generated at once (llama.cpp --parallel); more wait in FIFO order")
		ctx       = fs.Int("ctx", fake.DefaultCtx, "context size per slot the fake reports and enforces")
		tokens    = fs.Int("tokens", 0, "cap on generated tokens, as if the model emitted end-of-sequence there (0 = no cap)")
		ttftMs    = fs.Int("ttft-ms", 0, "delay before the first token, in ms")
		itlMs     = fs.Int("itl-ms", 0, "delay between tokens, in ms")
		loadMs    = fs.Int("load-ms", 0, "answer the engine's loading 503 this long after start, in ms")
		fail      = fs.String("fail", fake.FailNone, "inject a fault: "+strings.Join(fake.FailModes(), "|"))
		engineVer = fs.String("engine-version", fake.DefaultEngineVersion, "engine build the fake reports")
		model     = fs.String("model", fake.DefaultModel, "model name the fake reports")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: orch-fake-engine --engine llamacpp|vllm|tgi|triton --listen 127.0.0.1:PORT [flags]

Serves one fake engine replica speaking the engine's real wire format. Its text
is a pure function of (seed, prompt, position), so the same request gets the
same tokens from every engine's fake. Serves until SIGINT or SIGTERM.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "orch-fake-engine: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	}
	newFake, ok := fakes[*engine]
	switch {
	case ok:
	case *engine == "":
		fmt.Fprintln(stderr, "orch-fake-engine: --engine is required (llamacpp|vllm|tgi|triton)")
		return exitUsage
	default:
		fmt.Fprintf(stderr, "orch-fake-engine: unknown engine %q: want llamacpp|vllm|tgi|triton\n", *engine)
		return exitUsage
	}
	if *listen == "" {
		fmt.Fprintln(stderr, "orch-fake-engine: --listen is required, e.g. --listen 127.0.0.1:18081")
		return exitUsage
	}
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	logger := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(stderr), zapcore.InfoLevel))
	defer func() { _ = logger.Sync() }()
	o := fake.Options{
		Engine: *engine, Slots: *slots, Ctx: *ctx, Tokens: *tokens,
		TTFT: ms(*ttftMs), ITL: ms(*itlMs), Load: ms(*loadMs),
		Fail: *fail, EngineVersion: *engineVer, Model: *model, Logger: logger,
	}
	// Each engine's fake has its own default version and model: only
	// flags given explicitly override them.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["engine-version"] && *engine != engines.LlamaCpp {
		o.EngineVersion = ""
	}
	if !set["model"] && *engine != engines.LlamaCpp {
		o.Model = ""
	}
	srv, err := newFake(o)
	if err != nil {
		fmt.Fprintf(stderr, "orch-fake-engine: %v\n", err)
		return exitUsage
	}
	if err := srv.Start(*listen); err != nil {
		fmt.Fprintf(stderr, "orch-fake-engine: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "orch-fake-engine: %s listening on %s\n", *engine, srv.URL())
	s := <-stop
	logger.Info("shutting down", zap.String("signal", fmt.Sprint(s)))
	if err := srv.Close(); err != nil {
		fmt.Fprintf(stderr, "orch-fake-engine: cannot close: %v\n", err)
		return exitError
	}
	return exitOK
}

// replica is what every engine's fake offers.
type replica interface {
	Start(addr string) error
	URL() string
	Close() error
}

// fakes makes each engine's fake.
var fakes = map[string]func(fake.Options) (replica, error){
	engines.LlamaCpp: func(o fake.Options) (replica, error) { return fake.New(o) },
	engines.VLLM:     func(o fake.Options) (replica, error) { return fakevllm.New(o) },
	engines.TGI:      func(o fake.Options) (replica, error) { return faketgi.New(o) },
	engines.Triton:   func(o fake.Options) (replica, error) { return faketriton.New(o) },
}
