// Command orch-bench drives the gateway, and for comparison an engine
// directly, with closed-loop streaming clients and reports the latency and CPU
// the gateway adds (SPEC §12, §14).
//
//	orch-bench run --gateway URL --direct URL --key K --model M --engine E -c N -d DURATION
//	    --tokens N [--paced DUR] [--gateway-pid PID[,PID…]] [--two-step] --out DIR
//	orch-bench summary --out FILE [--peers REPORT,…] REPORT…
//	orch-bench determinism --engine E --replica URL --replica URL [--model M]
//	    [--seeds 64] [--tokens 32] [--prompt-set builtin|FILE] [--out DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/llama-orch/llama-orch/bench"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr)))
}

const usage = `Usage:
  orch-bench run --gateway URL --direct URL --key K --model M --engine E -c N -d DURATION
      --tokens N [--paced DUR] [--gateway-pid PID] [--two-step] --out DIR
  orch-bench summary --out FILE [--peers REPORT.json,…] REPORT.json…
  orch-bench determinism --engine E --replica URL --replica URL [--model M]
      [--seeds 64] [--tokens 32] [--prompt-set builtin|FILE] [--out DIR]

run: a direct phase (clients → engine's native API) then a gateway phase
(clients → gateway → engine), each -d long, with -c closed-loop streaming
clients over keep-alive connections; writes report.json, report.md and
report.svg into --out. Targets must be loopback (127.0.0.0/8, ::1, localhost).
summary: one Markdown table over several report.json files.
determinism: streams a fixed corpus (seeds × prompts) from two replicas of
one replica set, straight through the engine adapters, and compares the
token streams byte for byte (SPEC §11); refuses replicas of different engine
versions. Exit 0 identical, 1 differences, 2 refusal or usage, 3 engine
errors or interrupted.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runBench(ctx, args[1:], stdout, stderr, tty)
	case "summary":
		return runSummary(args[1:], stdout, stderr)
	case "determinism":
		return runDeterminism(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "orch-bench: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	fs := flag.NewFlagSet("orch-bench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      bench.Config
		pids     string
		epids    string
		out      string
		progress string
		cpuProf  string
	)
	fs.StringVar(&cfg.GatewayURL, "gateway", "", "gateway base URL, e.g. http://127.0.0.1:8090 (required)")
	fs.StringVar(&cfg.DirectURL, "direct", "", "engine base URL for the direct phase, e.g. http://127.0.0.1:18081 (required)")
	fs.StringVar(&cfg.Key, "key", "", "gateway API key (sent as Authorization: Bearer)")
	fs.StringVar(&cfg.Model, "model", "", "model_ref of every task (required)")
	fs.StringVar(&cfg.Engine, "engine", "", "engine of every task, and the direct phase's wire protocol (required; direct: llamacpp)")
	fs.IntVar(&cfg.C, "c", 0, "concurrent closed-loop clients (required)")
	fs.DurationVar(&cfg.Duration, "d", 0, "how long each phase starts new requests, e.g. 15s (required); requests in flight then finish")
	fs.IntVar(&cfg.Tokens, "tokens", 0, "max_tokens of every request; a stream with another count is an error (required)")
	fs.DurationVar(&cfg.Paced, "paced", 0, "the engine's per-token pacing (its --itl-ms), recorded in the report; the bench does not pace")
	fs.StringVar(&pids, "gateway-pid", "", "gateway PID (or comma-separated PIDs, e.g. nginx master and workers): sample CPU and peak RSS")
	fs.StringVar(&epids, "engine-pid", "", "engine PID(s), comma-separated: sample its CPU in both phases (optional)")
	fs.BoolVar(&cfg.TwoStep, "two-step", false, "POST /v1/tasks (202) then GET /v1/tasks/{id}/stream instead of one round trip")
	fs.StringVar(&out, "out", "", "directory for report.json, report.md, report.svg (required)")
	fs.StringVar(&cfg.Scenario, "scenario", "", "scenario name in the reports (default derived from the flags)")
	fs.StringVar(&cfg.GatewayAPI, "gateway-api", "orchqueue", "orchqueue: the gateway speaks OrchQueue v1 | engine: it is a plain proxy speaking the engine's API (nginx reference)")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "bound on one request, send to terminal event (default 60s + 2 × tokens × paced)")
	fs.DurationVar(&cfg.Ramp, "ramp", 0, "spread client starts over this long (must be shorter than -d)")
	fs.StringVar(&cfg.Prompt, "prompt", "", "prompt of every request (default a short sentence)")
	fs.StringVar(&cpuProf, "cpuprofile", "", "write orch-bench's own CPU profile to this file (to check the load generator is not the bottleneck)")
	fs.StringVar(&progress, "progress", "auto", "progress line on stderr: auto (on a terminal) | on | off")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage+"\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "orch-bench run: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	}
	var errs []error
	if cfg.DirectURL == "" {
		errs = append(errs, errors.New("--direct is required"))
	}
	if out == "" {
		errs = append(errs, errors.New("--out is required"))
	}
	var err error
	if cfg.GatewayPIDs, err = parsePIDs("--gateway-pid", pids); err != nil {
		errs = append(errs, err)
	}
	if cfg.EnginePIDs, err = parsePIDs("--engine-pid", epids); err != nil {
		errs = append(errs, err)
	}
	switch progress {
	case "auto":
		if tty {
			cfg.Progress = stderr
		}
	case "on":
		cfg.Progress = stderr
	case "off":
	default:
		errs = append(errs, fmt.Errorf("--progress must be auto, on or off, got %q", progress))
	}
	if err := cfg.Check(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "orch-bench run: %s\n", line)
		}
		return exitUsage
	}
	if cpuProf != "" {
		f, err := os.Create(cpuProf)
		if err != nil {
			fmt.Fprintf(stderr, "orch-bench run: %v\n", err)
			return exitError
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "orch-bench run: cannot profile: %v\n", err)
			return exitError
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "orch-bench run: %v\n", err)
		return exitError
	}
	if err := bench.WriteReports(out, rep); err != nil {
		fmt.Fprintf(stderr, "orch-bench run: %v\n", err)
		return exitError
	}
	printBrief(stdout, rep, out)
	if rep.Interrupted {
		return exitError
	}
	return exitOK
}

// parsePIDs parses a comma-separated list of running processes' PIDs.
func parsePIDs(flagName, list string) ([]int, error) {
	if list == "" {
		return nil, nil
	}
	var pids []int
	var errs []error
	for _, s := range strings.Split(list, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || pid <= 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a PID", flagName, s))
			continue
		}
		if _, err := bench.ProcCPU(pid); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", flagName, err))
		}
		pids = append(pids, pid)
	}
	return pids, errors.Join(errs...)
}

// printBrief prints the headline figures and where the reports are.
func printBrief(w io.Writer, r *bench.Report, out string) {
	fmt.Fprintf(w, "%s: c=%d tokens=%d paced=%s\n", r.Scenario, r.C, r.Tokens, r.Paced)
	for _, p := range []struct {
		name string
		ph   *bench.Phase
	}{{"direct", r.Direct}, {"gateway", r.Gateway}} {
		fmt.Fprintf(w, "  %-7s %8d req %10.0f tok/s  TTFT p50/p99 %.3f/%.3f ms  ITL p99 %.3f ms  errors %d",
			p.name, p.ph.Requests, p.ph.TokensPerS, p.ph.TTFT.P50, p.ph.TTFT.P99, p.ph.ITL.P99, p.ph.ErrorCount())
		if c := p.ph.CPUSPer1000Tokens; c != nil {
			fmt.Fprintf(w, "  CPU %.3f ms/1000 tok", *c*1000)
		}
		if m := p.ph.PeakRSSBytes; m != nil {
			fmt.Fprintf(w, "  peak RSS %.1f MiB", float64(*m)/(1<<20))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  reports: %s\n", filepath.Join(out, "report.{json,md,svg}"))
}

func runSummary(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("orch-bench summary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "Markdown file to write (- or empty: stdout)")
	peers := fs.String("peers", "", "comma-separated report.json files of reference relays (nginx)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "orch-bench summary: name at least one report.json")
		return exitUsage
	}
	read := func(paths []string) ([]*bench.Report, error) {
		var rs []*bench.Report
		for _, p := range paths {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			r, err := bench.ReadReport(p)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
		}
		return rs, nil
	}
	reports, err := read(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "orch-bench summary: %v\n", err)
		return exitError
	}
	var peerReports []*bench.Report
	if *peers != "" {
		if peerReports, err = read(strings.Split(*peers, ",")); err != nil {
			fmt.Fprintf(stderr, "orch-bench summary: %v\n", err)
			return exitError
		}
	}
	w := stdout
	var f *os.File
	if *out != "" && *out != "-" {
		if f, err = os.Create(*out); err != nil {
			fmt.Fprintf(stderr, "orch-bench summary: %v\n", err)
			return exitError
		}
		w = f
	}
	err = bench.WriteSummary(w, reports, peerReports)
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "orch-bench summary: %v\n", err)
		return exitError
	}
	return exitOK
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
