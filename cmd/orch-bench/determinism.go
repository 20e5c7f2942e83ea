package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/llama-orch/llama-orch/bench"
)

// Exit codes of `orch-bench determinism` (0 and 2 are exitOK and exitUsage).
const (
	exitDifferences = 1 // the replicas' streams differ
	exitIncomplete  = 3 // engine errors or an interrupt: not every case compared
)

// replicaFlags collects repeated --replica flags.
type replicaFlags []string

func (r *replicaFlags) String() string { return strings.Join(*r, ",") }

func (r *replicaFlags) Set(v string) error {
	*r = append(*r, v)
	return nil
}

func runDeterminism(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "orch-bench determinism"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      bench.DeterminismConfig
		replicas replicaFlags
		out      string
	)
	fs.StringVar(&cfg.Engine, "engine", "", "the replicas' engine: its adapter speaks to them directly (required)")
	fs.Var(&replicas, "replica", "base URL of one replica of the set; give it twice (required, loopback only)")
	fs.StringVar(&cfg.Model, "model", "", "model name for engines whose requests name it (Triton requires it)")
	fs.IntVar(&cfg.Seeds, "seeds", bench.DefaultDeterminismSeeds, "number of corpus seeds (bench.DeterminismSeed(0..N-1))")
	fs.IntVar(&cfg.Tokens, "tokens", bench.DefaultDeterminismTokens, "max_tokens of every request")
	fs.StringVar(&cfg.PromptSet, "prompt-set", bench.BuiltinPromptSet, "builtin, or a UTF-8 file with one prompt per line")
	fs.IntVar(&cfg.Concurrency, "concurrency", bench.DefaultDeterminismConcurrency, "cases in flight (each one request on each replica)")
	fs.DurationVar(&cfg.Timeout, "timeout", bench.DefaultDeterminismTimeout, "bound on one stream and on each props read")
	fs.BoolVar(&cfg.AllowUnknownVersion, "allow-unknown-version", false, "compare replicas whose engine version cannot be read (different known versions are never compared)")
	fs.StringVar(&out, "out", "", "directory for determinism.json (optional)")
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
		fmt.Fprintf(stderr, "%s: unexpected arguments: %s\n", name, strings.Join(fs.Args(), " "))
		return exitUsage
	}
	cfg.Replicas = replicas
	if err := cfg.Check(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "%s: %s\n", name, line)
		}
		return exitUsage
	}
	rep, err := bench.RunDeterminism(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		var rse *bench.ReplicaSetError
		if errors.As(err, &rse) {
			return exitUsage
		}
		return exitIncomplete
	}
	if err := bench.WriteDeterminismText(stdout, rep); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitIncomplete
	}
	if out != "" {
		if err := bench.WriteDeterminismJSON(out, rep); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitIncomplete
		}
		fmt.Fprintf(stdout, "report: %s\n", filepath.Join(out, bench.DeterminismFile))
	}
	switch {
	case rep.Failed():
		return exitIncomplete
	case len(rep.Differences) > 0:
		return exitDifferences
	}
	return exitOK
}
