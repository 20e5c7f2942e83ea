// Command orchd is the llama-orch gateway (SPEC §13).
//
//	orchd                          embedded demo: two in-process llama.cpp fakes, key sk-demo
//	orchd --config FILE            a real deployment
//	orchd --listen ADDR            override the listen address (with or without --config)
//	orchd validate --config FILE   list every problem of a config file; exit 1 if any
//	orchd schema                   print the config's JSON Schema
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with --pprof
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/adapters"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway"
	"github.com/llama-orch/llama-orch/gateway/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  orchd [--config FILE] [--listen ADDR]   run the gateway (no --config: embedded demo)
  orchd validate --config FILE            check a config file, listing every problem
  orchd schema                            print the config JSON Schema
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "validate":
			return runValidate(args[1:], stdout, stderr)
		case "schema":
			return runSchema(args[1:], stdout, stderr)
		case "help", "-h", "--help", "-help":
			usage(stdout)
			return 0
		}
	}
	fs := flag.NewFlagSet("orchd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	configPath := fs.String("config", "", "config file (YAML); default: the embedded demo")
	listen := fs.String("listen", "", "listen address host:port (overrides the config)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060) for profiling; off by default")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "orchd: unexpected argument %q\n", fs.Arg(0))
		usage(stderr)
		return 2
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintf(stderr, "orchd: --pprof %s: %v\n", *pprofAddr, err)
			return 2
		}
		go http.Serve(ln, nil) //nolint:errcheck // profiling aid; ends with the process
	}
	return serve(*configPath, *listen, stdout, stderr)
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("orchd validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file to check (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" && fs.NArg() == 1 {
		*path = fs.Arg(0)
	}
	if *path == "" {
		fmt.Fprintln(stderr, "orchd validate: --config FILE is required")
		return 2
	}
	_, problems, err := config.CheckFile(*path, config.ValidateOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "orchd validate: %s: %v\n", *path, err)
		return 1
	}
	for _, p := range problems {
		fmt.Fprintf(stderr, "%s: %s\n", *path, p)
	}
	if config.HasErrors(problems) {
		n := 0
		for _, p := range problems {
			if !p.Warning {
				n++
			}
		}
		fmt.Fprintf(stderr, "%s: %d problem(s)\n", *path, n)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

func runSchema(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "orchd schema: takes no arguments\n")
		return 2
	}
	b, err := config.Schema()
	if err != nil {
		fmt.Fprintf(stderr, "orchd schema: %v\n", err)
		return 1
	}
	stdout.Write(b)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		fmt.Fprintln(stdout)
	}
	return 0
}

// newAdapter maps an engine name to its adapter.
// newAdapter makes one replica's adapter. A keep-alive pool as large as a
// replica's busiest concurrency lets streams reuse engine connections
// instead of dialing (idle ones expire after the engine's keep-alive).
func newAdapter(pc config.Pool, rc config.Replica) (engines.Adapter, error) {
	model := pc.EngineModel
	if model == "" {
		model = pc.Model
	}
	return adapters.New(pc.Engine, rc.URL, adapters.Options{MaxIdleConns: 1024, Model: model})
}

func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core), nil
}

func serve(configPath, listen string, stdout, stderr io.Writer) int {
	demo := configPath == ""
	var (
		cfg      *config.Config
		problems []config.Problem
		err      error
	)
	if demo {
		cfg, problems, err = config.Check(config.DemoYAML(), config.ValidateOptions{AllowFakeURLs: true})
	} else {
		cfg, problems, err = config.CheckFile(configPath, config.ValidateOptions{})
	}
	if err != nil {
		fmt.Fprintf(stderr, "orchd: %v\n", err)
		return 1
	}
	for _, p := range problems {
		fmt.Fprintf(stderr, "orchd: config: %s\n", p)
	}
	if config.HasErrors(problems) {
		fmt.Fprintln(stderr, "orchd: the config has errors; `orchd validate --config FILE` lists them")
		return 1
	}
	fileListen := "" // the file's listen when --listen overrides it
	if listen != "" {
		if _, _, err := net.SplitHostPort(listen); err != nil {
			fmt.Fprintf(stderr, "orchd: --listen %q: want host:port\n", listen)
			return 2
		}
		fileListen, cfg.Listen = cfg.Listen, listen
	}
	log, err := newLogger(cfg.Log.Level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "orchd: %v\n", err)
		return 1
	}
	defer log.Sync() //nolint:errcheck

	var fakes []*fake.Server
	defer func() {
		for _, f := range fakes {
			_ = f.Close()
		}
	}()
	if demo {
		fakes, err = startDemoFakes(cfg, log)
		if err != nil {
			fmt.Fprintf(stderr, "orchd: cannot start the demo engines: %v\n", err)
			return 1
		}
	}

	srv, err := gateway.New(cfg, gateway.Options{NewAdapter: newAdapter, Logger: log, DemoKeysLoopbackOnly: demo, FileListen: fileListen})
	if err != nil {
		fmt.Fprintf(stderr, "orchd: %v\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "orchd: cannot listen on %s: %v\n", cfg.Listen, err)
		_ = srv.Shutdown(context.Background())
		return 1
	}
	addr := ln.Addr().String()
	log.Info("orchd listening", zap.String("addr", addr), zap.Bool("demo", demo), zap.Int("pools", len(cfg.Pools)))
	if demo {
		printDemo(stdout, addr, cfg)
	} else {
		fmt.Fprintf(stdout, "orchd: listening on http://%s\n", addr)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	// SIGHUP re-reads --config and applies it (hot reload, SPEC §9); an
	// invalid file or a change that needs a restart changes nothing.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// An apply may wait for new replicas to pass health (up to 30 s): it runs
	// beside the signal loop, one at a time, so SIGTERM is never delayed.
	reloading := make(chan struct{}, 1)
wait:
	for {
		select {
		case err := <-serveErr:
			if err != nil {
				log.Error("server stopped", zap.Error(err))
				_ = srv.Shutdown(context.Background())
				return 1
			}
			return 0
		case <-hup:
			if configPath == "" {
				log.Warn("SIGHUP ignored: the embedded demo has no config file (POST /v1/config applies one)")
				continue
			}
			select {
			case reloading <- struct{}{}:
			default:
				log.Warn("SIGHUP ignored: a reload is still running")
				continue
			}
			go func() {
				defer func() { <-reloading }()
				data, err := os.ReadFile(configPath)
				if err != nil {
					log.Error("SIGHUP: cannot read the config; nothing changed", zap.String("path", configPath), zap.Error(err))
					return
				}
				res, err := srv.Apply(data, false)
				if err != nil {
					log.Error("SIGHUP: config not applied; nothing changed", zap.String("path", configPath), zap.Error(err))
					return
				}
				log.Info("SIGHUP: config reloaded", zap.String("path", configPath), zap.Strings("changes", res.Changes))
			}()
		case sig := <-sigs:
			log.Info("shutting down", zap.String("signal", sig.String()), zap.Int("grace_ms", cfg.ShutdownGraceMs))
			break wait
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownGraceMs)*time.Millisecond+10*time.Second)
	defer cancel()
	go func() {
		// A second signal skips the grace period.
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Warn("shutdown incomplete", zap.Error(err))
	}
	<-serveErr
	log.Info("orchd stopped")
	return 0
}

// startDemoFakes replaces every fake://NAME replica URL with an in-process
// fake engine on a free loopback port.
func startDemoFakes(cfg *config.Config, log *zap.Logger) ([]*fake.Server, error) {
	var fakes []*fake.Server
	for pi := range cfg.Pools {
		p := &cfg.Pools[pi]
		for ri := range p.Replicas {
			r := &p.Replicas[ri]
			if !strings.HasPrefix(r.URL, "fake://") {
				continue
			}
			f, err := fake.New(fake.Options{
				Engine: p.Engine, Slots: 2, ITL: 20 * time.Millisecond, TTFT: 50 * time.Millisecond,
				Logger: log.With(zap.String("fake", r.ID)),
			})
			if err == nil {
				err = f.Start("127.0.0.1:0")
			}
			if err != nil {
				for _, g := range fakes {
					_ = g.Close()
				}
				return nil, fmt.Errorf("replica %s: %w", r.ID, err)
			}
			fakes = append(fakes, f)
			r.URL = f.URL()
		}
	}
	return fakes, nil
}

func printDemo(w io.Writer, addr string, cfg *config.Config) {
	model := cfg.Pools[0].Model
	engine := cfg.Pools[0].Engine
	fmt.Fprintf(w, `orchd: demo gateway on http://%[1]s (two in-process %[3]s fake replicas)
orchd: demo API key: sk-demo (accepted from loopback only)

  curl -sN http://%[1]s/v1/tasks \
    -H 'Authorization: Bearer sk-demo' -H 'Accept: text/event-stream' \
    -d '{"task_id":"'$(cat /proc/sys/kernel/random/uuid)'","session_id":"'$(cat /proc/sys/kernel/random/uuid)'","model_ref":"%[2]s","engine":"%[3]s","prompt":"Hello","max_tokens":16}'

`, addr, model, engine)
}
