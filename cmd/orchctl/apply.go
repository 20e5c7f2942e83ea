package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/llama-orch/llama-orch/gateway/config"
)

// applyResult is the 200 answer of POST /v1/config.
type applyResult struct {
	DryRun  bool     `json:"dry_run"`
	Applied bool     `json:"applied"`
	Diff    string   `json:"diff"`
	Changes []string `json:"changes"`
}

func cmdApply(ctx context.Context, c *command) error {
	file := c.fs.String("f", "", "config file (YAML) to validate and apply (required)")
	commit := c.fs.Bool("commit", false, "apply the config; without it orchd only validates and diffs (dry run)")
	pos, err := c.parse()
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return &usageError{msg: "unexpected arguments: " + strings.Join(pos, " ")}
	case *file == "":
		return &usageError{msg: "-f FILE is required"}
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return fmt.Errorf("apply: cannot read config file: %w", err)
	}
	// Validate locally first: an invalid file never reaches orchd.
	_, probs, err := config.Check(data, config.ValidateOptions{})
	if err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", *file, err)
		fmt.Fprintf(c.stderr, "orchctl: refusing %s: it is not a YAML config; nothing was sent to orchd\n", *file)
		return errReported
	}
	local := make([]problem, len(probs))
	for i, p := range probs {
		local[i] = problem{Path: p.Path, Line: p.Line, Message: p.Message, Warning: p.Warning}
	}
	if n := printProblems(c.stderr, *file, local); n > 0 {
		fmt.Fprintf(c.stderr, "orchctl: refusing %s: %s; nothing was sent to orchd\n", *file, plural(n, "problem"))
		return errReported
	}
	if err := c.connect(); err != nil {
		return err
	}
	path := "/v1/config?dry_run=true"
	if *commit {
		path = "/v1/config"
	}
	// orchd may wait up to 30 s for new replicas to pass health before it
	// answers an apply; give it that and a margin.
	r, err := c.client.call(ctx, "apply", http.MethodPost, path, "application/yaml", data, applyTimeout)
	var se *statusError
	if errors.As(err, &se) && se.status == http.StatusBadRequest && len(se.env.Problems) > 0 {
		n := printProblems(c.stderr, *file, se.env.Problems)
		if n == 0 { // only warnings: report the envelope as it is
			return err
		}
		fmt.Fprintf(c.stderr, "orchctl: orchd refused %s: %s; nothing changed\n", *file, plural(n, "problem"))
		return errReported
	}
	var unreach *unreachableError
	if *commit && errors.As(err, &unreach) && ctx.Err() == nil {
		// The request may have reached orchd before the connection failed.
		return fmt.Errorf("%w (if the request reached orchd the config may be applied: check with orchctl watch or GET /v1/config)", err)
	}
	if err != nil {
		return err
	}
	var res applyResult
	if err := json.Unmarshal(r.body, &res); err != nil {
		return fmt.Errorf("apply: cannot decode orchd's answer: %w", err)
	}
	switch {
	case *commit && !res.Applied:
		return fmt.Errorf("apply: orchd answered %d but did not apply the config (dry_run=%t)", r.status, res.DryRun)
	case !*commit && res.Applied:
		return errors.New("apply: orchd applied the config although a dry run was asked")
	}
	return writeApplied(c.stdout, res, *commit)
}

// writeApplied prints a summary line, then the diff.
func writeApplied(w io.Writer, res applyResult, commit bool) error {
	summary := ""
	if len(res.Changes) > 0 {
		names := make([]string, len(res.Changes))
		for i, ch := range res.Changes {
			names[i] = oneLine(ch)
		}
		summary = plural(len(res.Changes), "change") + " (" + strings.Join(names, ", ") + ")"
	}
	same := summary == "" && strings.TrimSpace(res.Diff) == ""
	switch {
	case same && commit:
		fmt.Fprintln(w, "applied: no changes")
	case same:
		fmt.Fprintln(w, "dry run: no changes")
	case commit && summary != "":
		fmt.Fprintf(w, "applied: %s\n", summary)
	case commit:
		fmt.Fprintln(w, "applied")
	case summary != "":
		fmt.Fprintf(w, "dry run: %s; nothing applied (rerun with --commit to apply)\n", summary)
	default:
		fmt.Fprintln(w, "dry run: nothing applied (rerun with --commit to apply)")
	}
	if d := res.Diff; strings.TrimSpace(d) != "" {
		if !strings.HasSuffix(d, "\n") {
			d += "\n"
		}
		_, err := io.WriteString(w, d)
		return err
	}
	return nil
}

// printProblems prints each problem as FILE:LINE: path: message (warnings
// marked) and returns how many are errors.
func printProblems(w io.Writer, file string, ps []problem) int {
	n := 0
	for _, p := range ps {
		loc := file
		if p.Line > 0 {
			loc += ":" + strconv.Itoa(p.Line)
		}
		kind := ""
		if p.Warning {
			kind = "warning: "
		} else {
			n++
		}
		msg := oneLine(p.Message)
		if p.Path != "" {
			msg = oneLine(p.Path) + ": " + msg
		}
		fmt.Fprintf(w, "%s: %s%s\n", loc, kind, msg)
	}
	return n
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// applyTimeout bounds POST /v1/config: orchd's own 30 s wait for new
// replica sets plus a margin.
const applyTimeout = 40 * time.Second
