// Command orchctl operates a running orchd through its control API (SPEC §9,
// §14): it shows pools and replicas, follows ops events, drains and reloads
// pools, and previews or applies a new config file.
//
//	orchctl [--url URL] [--key KEY] status [--json]
//	orchctl watch [--json]
//	orchctl drain POOL --deadline DUR
//	orchctl reload POOL --model REF [--replica ID=URL ...] [--timeout DUR]
//	orchctl apply -f FILE [--commit]
//
// ORCHD_URL (default http://127.0.0.1:8090) and ORCHD_KEY (a key with the
// control role) configure the connection; --url and --key override them.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes (documented in usage).
const (
	exitOK          = 0
	exitFailed      = 1 // orchd refused, or the operation failed
	exitUnreachable = 2 // orchd could not be reached
	exitUsage       = 3 // bad command line
	exitInterrupted = 130
)

// defaultURL is where `orchd` with no flags listens (SPEC §13).
const defaultURL = "http://127.0.0.1:8090"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usage = `Usage: orchctl [--url URL] [--key KEY] COMMAND [FLAGS]

Operates a running orchd through its control API (needs a key with the
control role).

Commands:
  status [--json]
      Pools (engine, model, ready, draining, queue depth, TTFT p95) and their
      replicas (state, breaker, inflight/slots, engine load, last error).
      --json prints the server's JSON as it is, indented.
  watch [--json]
      Follows ops events (breaker transitions, replica states, drains,
      reloads, config applies), one line each, until Ctrl-C. Reconnects with
      backoff (at most 5s) when the stream drops; events during a gap are not
      replayed. --json prints each event's JSON on one line.
  drain POOL --deadline DUR
      Stops admissions to POOL; in-flight work may finish within DUR (a Go
      duration such as 30s or 2m), then it is canceled.
  reload POOL --model REF [--replica ID=URL ...] [--timeout DUR]
      Switches POOL to model REF once every replica (by default the current
      ones, restarted by you) is healthy and reports REF, within --timeout
      (default: orchd's, 30s). Prints the new replica set, or why orchd
      refused (nothing changed then).
  apply -f FILE [--commit]
      Validates FILE locally (every problem with its line; refuses to send an
      invalid file), then shows the diff against the running config without
      changing anything. --commit applies it (atomically).
  help
      This text.

Connection (before or after the command):
  --url URL   orchd base URL; default $ORCHD_URL, else ` + defaultURL + `
  --key KEY   API key; default $ORCHD_KEY

Exit codes:
  0    success (watch: ended by Ctrl-C)
  1    orchd refused or the operation failed: an HTTP error (printed with its
       code and message), a missing key or one without the control role
       (401/403), a reload that could not be verified (409), a config file
       with problems
  2    orchd could not be reached (connection refused, DNS, timeout)
  3    usage error
  130  interrupted by Ctrl-C while waiting for orchd
`

// run is orchctl with its environment passed in, so tests can drive it. It
// cancels what it waits for on SIGINT/SIGTERM.
func run(args []string, env func(string) string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runCtx(ctx, args, env, stdout, stderr)
}

// runCtx is run with the interrupt context passed in.
func runCtx(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	global := flag.NewFlagSet("orchctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	var conn connFlags
	conn.register(global)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if global.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	var fn func(context.Context, *command) error
	switch cmd {
	case "status":
		fn = cmdStatus
	case "watch":
		fn = cmdWatch
	case "drain":
		fn = cmdDrain
	case "reload":
		fn = cmdReload
	case "apply":
		fn = cmdApply
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "orchctl: unknown command %q (see orchctl help)\n", cmd)
		return exitUsage
	}
	c := &command{name: cmd, args: rest, env: env, stdout: stdout, stderr: stderr,
		fs: flag.NewFlagSet("orchctl "+cmd, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {
		fmt.Fprint(stderr, usage+"\nFlags of "+cmd+":\n")
		c.fs.PrintDefaults()
	}
	// Flags after the command override those before it. Not defaults of the
	// subcommand's flags: -h would print the key.
	c.conn.register(c.fs)
	c.outer = conn
	err := fn(ctx, c)
	if c.client != nil {
		c.client.close()
	}
	return c.exit(ctx, err)
}

// connFlags are --url and --key.
type connFlags struct{ url, key string }

func (f *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "url", "", "orchd base URL (default $ORCHD_URL, else "+defaultURL+")")
	fs.StringVar(&f.key, "key", "", "API key with the control role (default $ORCHD_KEY)")
}

// command is one invocation of a subcommand: its flags, output and client.
type command struct {
	name           string
	args           []string // after the command name
	fs             *flag.FlagSet
	conn           connFlags // given after the command
	outer          connFlags // given before it
	env            func(string) string
	stdout, stderr io.Writer
	client         *client
}

// usageError is a bad command line (exit 3); errHelp asked for help (exit 0).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

var errHelp = errors.New("help requested")

// errReported means the failure was already printed in full (exit 1).
var errReported = errors.New("reported")

// errBadFlags means package flag already printed a bad flag (exit 3).
var errBadFlags = errors.New("bad flags")

// parse parses the subcommand's flags, which may come before, between and
// after its positional arguments, and returns the positional arguments.
func (c *command) parse() ([]string, error) {
	args := c.args
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, errBadFlags
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...) // everything after "--" is positional
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, nil
}

// connect builds the client from --url/--key, then the environment.
func (c *command) connect() error {
	base := cmp.Or(c.conn.url, c.outer.url)
	if base == "" {
		base = c.env("ORCHD_URL")
	}
	if base == "" {
		base = defaultURL
	}
	key := cmp.Or(c.conn.key, c.outer.key)
	if key == "" {
		key = c.env("ORCHD_KEY")
	}
	norm, err := normalizeURL(base)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	c.client = newClient(norm, key)
	return nil
}

// normalizeURL accepts `http(s)://host:port[/prefix]` or a bare host:port
// (http assumed) and drops a trailing slash.
func normalizeURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("orchd URL must be http(s)://HOST:PORT, got %q", s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// exit prints err (unless already printed) and maps it to an exit code.
func (c *command) exit(ctx context.Context, err error) int {
	var ue *usageError
	var unreach *unreachableError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "orchctl %s: %s (see orchctl help)\n", c.name, ue.msg)
		return exitUsage
	case errors.Is(err, errBadFlags):
		return exitUsage
	case errors.Is(err, errReported):
		return exitFailed
	case ctx.Err() != nil:
		fmt.Fprintf(c.stderr, "orchctl: interrupted\n")
		return exitInterrupted
	case errors.As(err, &unreach):
		fmt.Fprintf(c.stderr, "orchctl: %v\n", err)
		return exitUnreachable
	default:
		fmt.Fprintf(c.stderr, "orchctl: %v\n", err)
		return exitFailed
	}
}
