package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Files the apply cases use (written into each case's temp dir).
var applyFiles = map[string]string{
	// Same as the fake's running config but another model.
	"new.yaml": strings.Replace(runningYAML, "model: tiny-llama", "model: tiny-llama-v3", 1),
	// Exactly the running config.
	"same.yaml": runningYAML,
	// Three problems on lines 5, 7 and 8.
	"bad.yaml": `pools:
  - id: p
    engine: llamacpp
    model: m
    queue: { capacity: 0 }
    replicas:
      - { id: r0, url: "ftp://x" }
bogus: 1
`,
	"syntax.yaml": "pools: [\n  bad",
	// Valid locally; orchd refuses it (listen cannot change at run time).
	"listen.yaml": strings.Replace(runningYAML, "127.0.0.1:8090", "127.0.0.1:9999", 1),
}

func TestCommands(t *testing.T) {
	down := "http://" + closedPort(t)
	type tcase struct {
		name      string
		args      []string          // $FAKE → fake orchd URL, $DIR → temp dir
		env       map[string]string // nil: ORCHD_URL=$FAKE, ORCHD_KEY=controlKey
		setup     func(f *fakeOrchd)
		code      int
		stdout    []string
		stderr    []string
		notStdout []string
		notStderr []string
		check     func(t *testing.T, f *fakeOrchd, dir string)
	}
	noRequests := func(t *testing.T, f *fakeOrchd, _ string) {
		if n := len(f.recorded()); n != 0 {
			t.Errorf("%d requests reached orchd, want none", n)
		}
	}
	oneRequest := func(method, path, query string, body func(t *testing.T, b []byte)) func(*testing.T, *fakeOrchd, string) {
		return func(t *testing.T, f *fakeOrchd, _ string) {
			rs := f.recorded()
			if len(rs) != 1 {
				t.Fatalf("%d requests, want 1: %+v", len(rs), rs)
			}
			r := rs[0]
			if r.method != method || r.path != path || r.query != query {
				t.Errorf("request %s %s?%s, want %s %s?%s", r.method, r.path, r.query, method, path, query)
			}
			if r.auth != "Bearer "+controlKey {
				t.Errorf("Authorization %q", r.auth)
			}
			if body != nil {
				body(t, r.body)
			}
		}
	}
	jsonBody := func(want string) func(*testing.T, []byte) {
		return func(t *testing.T, b []byte) {
			var got, exp any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("body %q: %v", b, err)
			}
			_ = json.Unmarshal([]byte(want), &exp)
			gb, _ := json.Marshal(got)
			eb, _ := json.Marshal(exp)
			if string(gb) != string(eb) {
				t.Errorf("body %s, want %s", gb, eb)
			}
		}
	}
	cases := []tcase{
		// --- general ---
		{name: "no command prints usage", args: nil, code: exitUsage, stderr: []string{"Usage: orchctl", "Exit codes:"}},
		{name: "help on stdout", args: []string{"help"}, code: exitOK, stdout: []string{"Usage: orchctl", "Exit codes:", "2    orchd could not be reached"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitUsage, stderr: []string{`unknown command "frobnicate"`}, check: noRequests},
		{name: "bad flag", args: []string{"status", "--nope"}, code: exitUsage, stderr: []string{"flag provided but not defined: -nope"}, check: noRequests},
		{name: "subcommand -h is not an error", args: []string{"drain", "-h"}, code: exitOK, stderr: []string{"-deadline"}, check: noRequests},
		{name: "-h does not print a key given before the command", args: []string{"--key", "sk-secret", "drain", "-h"}, code: exitOK,
			notStderr: []string{"sk-secret"}, check: noRequests},
		{name: "URL without http scheme", args: []string{"status"}, env: map[string]string{"ORCHD_URL": "ftp://x", "ORCHD_KEY": controlKey},
			code: exitUsage, stderr: []string{"orchd URL must be http(s)://HOST:PORT"}},
		// --- status ---
		{name: "status table", args: []string{"status"}, code: exitOK, stdout: []string{
			"POOL        ENGINE          MODEL       READY  DRAINING  QUEUE  TTFT P95\n" +
				"llama-demo  llamacpp b4500  tiny-llama  yes    no        3/64   412ms\n\n" +
				"POOL        REPLICA  STATE    BREAKER  INFLIGHT/SLOTS  ENGINE LOAD              LAST ERROR\n" +
				"llama-demo  r0       ready    closed   2/4             processing=2 deferred=1  -\n" +
				"llama-demo  r1       unready  open     0/4             -                        dial tcp 127.0.0.1:18082: connect: connection refused\\nretrying\n"},
			check: oneRequest("GET", "/v1/replicasets", "", nil)},
		{name: "status --json is the server's JSON, indented, unknown fields kept", args: []string{"status", "--json"}, code: exitOK,
			stdout: []string{"{\n  \"replicasets\": [\n", `"slo_attainment": {`, `"by_priority"`}},
		{name: "status with no pools", args: []string{"status"}, setup: func(f *fakeOrchd) { f.sets = []map[string]any{} },
			code: exitOK, stdout: []string{"no pools\n"}},
		{name: "status without a key: 401 says to set ORCHD_KEY", args: []string{"status"}, env: map[string]string{"ORCHD_URL": "$FAKE"},
			code: exitFailed, stderr: []string{"orchctl: status: orchd needs an API key with the control role: set ORCHD_KEY or pass --key (401 UNAUTHORIZED: missing API key"}},
		{name: "status with a data-only key: 403", args: []string{"status"}, env: map[string]string{"ORCHD_URL": "$FAKE", "ORCHD_KEY": dataKey},
			code: exitFailed, stderr: []string{"unknown or lacks the control role (403 FORBIDDEN: API key lacks the control role)", "[correlation id corr-FORBIDDEN]"}},
		{name: "status with an unknown key: 403", args: []string{"status"}, env: map[string]string{"ORCHD_URL": "$FAKE", "ORCHD_KEY": "sk-who"},
			code: exitFailed, stderr: []string{"403 FORBIDDEN: API key not recognised"}},
		{name: "status against a closed port: exit 2", args: []string{"status"}, env: map[string]string{"ORCHD_URL": down, "ORCHD_KEY": controlKey},
			code: exitUnreachable, stderr: []string{"orchctl: cannot reach orchd at " + down + ": ", "connection refused"}},
		{name: "--url before the command overrides ORCHD_URL", args: []string{"--url", "$FAKE", "status"},
			env: map[string]string{"ORCHD_URL": down, "ORCHD_KEY": controlKey}, code: exitOK, stdout: []string{"llama-demo"}},
		{name: "--url after the command overrides the one before", args: []string{"--url", down, "status", "--url", "$FAKE"},
			env: map[string]string{"ORCHD_KEY": controlKey}, code: exitOK, stdout: []string{"llama-demo"}},
		{name: "--key overrides ORCHD_KEY", args: []string{"status", "--key", controlKey},
			env: map[string]string{"ORCHD_URL": "$FAKE", "ORCHD_KEY": dataKey}, code: exitOK, stdout: []string{"llama-demo"}},
		{name: "bare host:port URL", args: []string{"status", "--url", "$HOSTPORT"}, code: exitOK, stdout: []string{"llama-demo"}},
		{name: "status takes no arguments", args: []string{"status", "extra"}, code: exitUsage, stderr: []string{"unexpected arguments: extra"}, check: noRequests},
		// --- drain ---
		{name: "drain", args: []string{"drain", "llama-demo", "--deadline", "30s"}, code: exitOK,
			stdout: []string{"drain of pool llama-demo accepted: no new admissions; in-flight work is canceled if not done within 30s\n"},
			check:  oneRequest("POST", "/v1/pools/llama-demo/drain", "", jsonBody(`{"deadline_ms":30000}`))},
		{name: "drain with flags before the pool, sub-ms rounded up", args: []string{"drain", "--deadline", "1500500us", "llama-demo"}, code: exitOK,
			check: oneRequest("POST", "/v1/pools/llama-demo/drain", "", jsonBody(`{"deadline_ms":1501}`))},
		{name: "drain with deadline 0 cancels at once", args: []string{"drain", "llama-demo", "--deadline=0s"}, code: exitOK,
			check: oneRequest("POST", "/v1/pools/llama-demo/drain", "", jsonBody(`{"deadline_ms":0}`))},
		{name: "drain of a draining pool", args: []string{"drain", "llama-demo", "--deadline", "5s"},
			setup: func(f *fakeOrchd) { f.sets[0]["draining"] = true }, code: exitOK, stdout: []string{"already draining"}},
		{name: "drain of an unknown pool: 404 code and message", args: []string{"drain", "nope", "--deadline", "5s"}, code: exitFailed,
			stderr: []string{`orchctl: drain nope: orchd answered 404 NOT_FOUND: no pool "nope" [correlation id corr-NOT_FOUND]`}},
		{name: "drain without --deadline", args: []string{"drain", "llama-demo"}, code: exitUsage, stderr: []string{"--deadline is required"}, check: noRequests},
		{name: "drain with a negative deadline", args: []string{"drain", "llama-demo", "--deadline", "-1s"}, code: exitUsage, stderr: []string{"must not be negative"}, check: noRequests},
		{name: "drain with a bad duration", args: []string{"drain", "llama-demo", "--deadline", "30"}, code: exitUsage, stderr: []string{"invalid value"}, check: noRequests},
		{name: "drain without a pool", args: []string{"drain", "--deadline", "1s"}, code: exitUsage, stderr: []string{"want exactly one POOL"}, check: noRequests},
		{name: "drain against a closed port", args: []string{"drain", "llama-demo", "--deadline", "1s", "--url", down}, code: exitUnreachable,
			stderr: []string{"cannot reach orchd at " + down}},
		// --- reload ---
		{name: "reload prints the new set", args: []string{"reload", "llama-demo", "--model", "tiny-llama-v2"}, code: exitOK,
			stdout: []string{"pool llama-demo reloaded: now serving model tiny-llama-v2\n\n", "llama-demo  llamacpp b4500  tiny-llama-v2", "r1       unready"},
			check:  oneRequest("POST", "/v1/pools/llama-demo/reload", "", jsonBody(`{"new_model_ref":"tiny-llama-v2"}`))},
		{name: "reload with replicas and timeout", args: []string{"reload", "llama-demo", "--model", "tiny-llama-v2",
			"--replica", "r0=http://127.0.0.1:19001", "--replica", "r1=http://127.0.0.1:19002", "--timeout", "5s"}, code: exitOK,
			stdout: []string{"r0       ready", "r1       ready"},
			check: oneRequest("POST", "/v1/pools/llama-demo/reload", "", jsonBody(
				`{"new_model_ref":"tiny-llama-v2","replicas":[{"id":"r0","url":"http://127.0.0.1:19001"},{"id":"r1","url":"http://127.0.0.1:19002"}],"timeout_ms":5000}`))},
		{name: "reload refused: 409 reason, exit 1", args: []string{"reload", "llama-demo", "--model", "other"}, code: exitFailed,
			stderr:    []string{`orchctl: reload of pool llama-demo refused, nothing changed: new replica set not verified within 30s: replica r0 reports model "tiny-llama-v2", not "other"`},
			notStdout: []string{"reloaded"}},
		{name: "reload without --model", args: []string{"reload", "llama-demo"}, code: exitUsage, stderr: []string{"--model is required"}, check: noRequests},
		{name: "reload with a malformed --replica", args: []string{"reload", "llama-demo", "--model", "m", "--replica", "r0"}, code: exitUsage,
			stderr: []string{"want ID=URL"}, check: noRequests},
		{name: "reload with a non-http replica URL", args: []string{"reload", "llama-demo", "--model", "m", "--replica", "r0=ftp://h:1"}, code: exitUsage,
			stderr: []string{"URL must be absolute http(s)"}, check: noRequests},
		{name: "reload with a replica twice", args: []string{"reload", "llama-demo", "--model", "m", "--replica", "r0=http://a:1", "--replica", "r0=http://b:1"},
			code: exitUsage, stderr: []string{`replica "r0" given twice`}, check: noRequests},
		{name: "reload with a zero timeout", args: []string{"reload", "llama-demo", "--model", "m", "--timeout", "0s"}, code: exitUsage,
			stderr: []string{"--timeout must be positive"}, check: noRequests},
		// --- apply ---
		{name: "apply is a dry run by default", args: []string{"apply", "-f", "$DIR/new.yaml"}, code: exitOK,
			stdout: []string{"dry run: 1 change (pools); nothing applied (rerun with --commit to apply)\n", "-    model: tiny-llama\n", "+    model: tiny-llama-v3\n"},
			check: func(t *testing.T, f *fakeOrchd, dir string) {
				oneRequest("POST", "/v1/config", "dry_run=true", func(t *testing.T, b []byte) {
					if string(b) != applyFiles["new.yaml"] {
						t.Errorf("body %q, want the file", b)
					}
				})(t, f, dir)
				if r := f.recorded()[0]; r.ctype != "application/yaml" {
					t.Errorf("Content-Type %q", r.ctype)
				}
				if f.runningConfig() != runningYAML {
					t.Error("a dry run changed the running config")
				}
			}},
		{name: "apply --commit applies", args: []string{"apply", "-f", "$DIR/new.yaml", "--commit"}, code: exitOK,
			stdout: []string{"applied: 1 change (pools)\n", "+    model: tiny-llama-v3\n"},
			check: func(t *testing.T, f *fakeOrchd, dir string) {
				oneRequest("POST", "/v1/config", "", nil)(t, f, dir)
				if f.runningConfig() != applyFiles["new.yaml"] {
					t.Error("--commit did not change the running config")
				}
			}},
		{name: "apply of the running config: no changes", args: []string{"apply", "-f", "$DIR/same.yaml"}, code: exitOK,
			stdout: []string{"dry run: no changes\n"}, notStdout: []string{"---"}},
		{name: "apply refuses an invalid file, every problem with its line", args: []string{"apply", "--commit", "-f", "$DIR/bad.yaml"}, code: exitFailed,
			stderr: []string{
				"$DIR/bad.yaml:5: pools[0].queue.capacity: must be > 0, got 0\n",
				"$DIR/bad.yaml:7: pools[0].replicas[0].url: must be an absolute http or https URL",
				"$DIR/bad.yaml:8: bogus: unknown field\n",
				"orchctl: refusing $DIR/bad.yaml: 3 problems; nothing was sent to orchd\n"},
			check: noRequests},
		{name: "apply refuses a file that is not YAML", args: []string{"apply", "-f", "$DIR/syntax.yaml"}, code: exitFailed,
			stderr: []string{"$DIR/syntax.yaml: cannot parse YAML", "refusing"}, check: noRequests},
		{name: "apply: orchd's 400 problems printed like local ones", args: []string{"apply", "-f", "$DIR/listen.yaml"}, code: exitFailed,
			stderr: []string{"$DIR/listen.yaml:1: listen: cannot change at run time; restart orchd\n", "orchctl: orchd refused $DIR/listen.yaml: 1 problem; nothing changed\n"}},
		{name: "apply without -f", args: []string{"apply"}, code: exitUsage, stderr: []string{"-f FILE is required"}},
		{name: "apply of a missing file", args: []string{"apply", "-f", "$DIR/none.yaml"}, code: exitFailed, stderr: []string{"cannot read config file"}, check: noRequests},
		{name: "apply with a data-only key", args: []string{"apply", "-f", "$DIR/new.yaml", "--key", dataKey}, code: exitFailed,
			stderr: []string{"apply: orchd refused the API key", "403 FORBIDDEN"}},
		{name: "apply --commit to a closed port says the outcome is unknown", args: []string{"apply", "-f", "$DIR/new.yaml", "--commit", "--url", down},
			code: exitUnreachable, stderr: []string{"cannot reach orchd at " + down, "may be applied"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeOrchd(t)
			dir := t.TempDir()
			for name, body := range applyFiles {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.setup != nil {
				tc.setup(f)
			}
			sub := strings.NewReplacer("$FAKE", f.url(), "$HOSTPORT", strings.TrimPrefix(f.url(), "http://"), "$DIR", dir)
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = sub.Replace(a)
			}
			env := tc.env
			if env == nil {
				env = map[string]string{"ORCHD_URL": "$FAKE", "ORCHD_KEY": controlKey}
			}
			e := map[string]string{}
			for k, v := range env {
				e[k] = sub.Replace(v)
			}
			code, out, errOut := runCase(args, e)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			subAll := func(ss []string) []string {
				r := make([]string, len(ss))
				for i, s := range ss {
					r[i] = sub.Replace(s)
				}
				return r
			}
			checkOutput(t, "stdout", out, subAll(tc.stdout), subAll(tc.notStdout))
			checkOutput(t, "stderr", errOut, subAll(tc.stderr), tc.notStderr)
			if tc.check != nil {
				tc.check(t, f, dir)
			}
		})
	}
}

// TestStatusAfterCommands checks that each command's effect on orchd is
// what a following status shows (the fake keeps state like orchd does).
func TestStatusAfterCommands(t *testing.T) {
	f := newFakeOrchd(t)
	env := map[string]string{"ORCHD_URL": f.url(), "ORCHD_KEY": controlKey}
	steps := []struct {
		args []string
		want string // in the status output afterwards
	}{
		{[]string{"drain", "llama-demo", "--deadline", "1s"}, "llama-demo  llamacpp b4500  tiny-llama  no     yes"},
		{[]string{"reload", "llama-demo", "--model", "tiny-llama-v2"}, "tiny-llama-v2"},
	}
	for _, s := range steps {
		if code, out, errOut := runCase(s.args, env); code != exitOK {
			t.Fatalf("%v: exit %d\n%s%s", s.args, code, out, errOut)
		}
		code, out, errOut := runCase([]string{"status"}, env)
		if code != exitOK {
			t.Fatalf("status: exit %d: %s", code, errOut)
		}
		checkOutput(t, "status after "+strings.Join(s.args, " "), out, []string{s.want}, nil)
	}
}

func TestParseReplica(t *testing.T) {
	f := func(in string, want replicaRef, wantErr bool) {
		t.Helper()
		got, err := parseReplica(in)
		if (err != nil) != wantErr || got != want {
			t.Errorf("parseReplica(%q) = %+v, %v; want %+v, err %t", in, got, err, want, wantErr)
		}
	}
	f("r0=http://127.0.0.1:18081", replicaRef{"r0", "http://127.0.0.1:18081"}, false)
	f(" r1 = https://gpu-2:8000/base ", replicaRef{"r1", "https://gpu-2:8000/base"}, false)
	f("r0=http://h:1?x=y=z", replicaRef{"r0", "http://h:1?x=y=z"}, false) // only the first '=' splits
	f("r0", replicaRef{}, true)
	f("=http://h:1", replicaRef{}, true)
	f("r0=", replicaRef{}, true)
	f("r0=127.0.0.1:1", replicaRef{}, true) // no scheme
	f("r0=http://", replicaRef{}, true)     // no host
}

func TestNormalizeURL(t *testing.T) {
	f := func(in, want string, wantErr bool) {
		t.Helper()
		got, err := normalizeURL(in)
		if (err != nil) != wantErr || got != want {
			t.Errorf("normalizeURL(%q) = %q, %v; want %q, err %t", in, got, err, want, wantErr)
		}
	}
	f("http://127.0.0.1:8090", "http://127.0.0.1:8090", false)
	f("http://127.0.0.1:8090/", "http://127.0.0.1:8090", false)
	f("127.0.0.1:8090", "http://127.0.0.1:8090", false)
	f("https://orchd.example:443/prefix/", "https://orchd.example:443/prefix", false)
	f("ftp://h:1", "", true)
	f("http://", "", true)
	f("http://h:1/?q=1", "", true)
}
