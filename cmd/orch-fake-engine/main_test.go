package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/internal/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunUsage: flag and engine errors exit 2 with a clear message; --help
// exits 0.
func TestRunUsage(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		// Engines without a fake yet.
		// Unknown and missing engine.
		{"unknown engine", []string{"--engine", "ollama", "--listen", "127.0.0.1:0"}, 2, "unknown engine"},
		{"no engine", []string{"--listen", "127.0.0.1:0"}, 2, "--engine is required"},
		// Missing listen.
		{"no listen", []string{"--engine", "llamacpp"}, 2, "--listen is required"},
		// An unknown fault lists the modes.
		{"bad fail", []string{"--engine", "llamacpp", "--listen", "127.0.0.1:0", "--fail", "boom"}, 2, "midstream-disconnect|stall"},
		// Unknown flags and stray arguments.
		{"bad flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"stray arg", []string{"--engine", "llamacpp", "--listen", "127.0.0.1:0", "extra"}, 2, "unexpected arguments"},
		// Negative values.
		{"negative slots", []string{"--engine", "llamacpp", "--listen", "127.0.0.1:0", "--slots", "-1"}, 2, "negative"},
		// Help text names every flag.
		{"help", []string{"--help"}, 0, "--engine llamacpp|vllm|tgi|triton --listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr, make(chan os.Signal))
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want %d containing %q", code, stderr.String(), tc.code, tc.want)
			}
			if tc.name == "help" {
				for _, f := range []string{"slots", "ctx", "tokens", "ttft-ms", "itl-ms", "load-ms", "fail", "engine-version", "model"} {
					if !strings.Contains(stderr.String(), "-"+f+" ") {
						t.Errorf("help lacks -%s", f)
					}
				}
			}
		})
	}
}

// TestRunServes: the fake prints its URL, serves, and exits 0 on SIGTERM.
func TestRunServes(t *testing.T) {
	pr, pw := io.Pipe()
	stop := make(chan os.Signal, 1)
	ended := make(chan struct{}) // closed when run has returned
	var code int
	var stderr syncBuffer // read while run may still write
	go func() {
		defer close(ended)
		code = run([]string{"--engine", "llamacpp", "--listen", "127.0.0.1:0", "--slots", "3", "--ctx", "512",
			"--tokens", "2", "--ttft-ms", "1", "--itl-ms", "1", "--model", "m.gguf", "--engine-version", "b1-abc"}, pw, &stderr, stop)
		pw.Close()
	}()
	stopped := false
	// On every way out: stop run (a write to stdout nobody reads fails once
	// pr is closed) and wait for it, bounded.
	t.Cleanup(func() {
		if !stopped {
			stop <- syscall.SIGTERM
		}
		pr.Close()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Error("run did not return within 10s of SIGTERM")
		}
	})
	br := bufio.NewReader(pr)
	type lineRes struct {
		line string
		err  error
	}
	first := make(chan lineRes, 1)
	go func() {
		line, err := br.ReadString('\n')
		first <- lineRes{line, err}
	}()
	var line string
	select {
	case r := <-first:
		if r.err != nil {
			t.Fatalf("read stdout: %v (stderr %s)", r.err, stderr.String())
		}
		line = r.line
	case <-time.After(10 * time.Second):
		t.Fatalf("no line on stdout within 10s (stderr %s)", stderr.String())
	}
	const prefix = "orch-fake-engine: llamacpp listening on http://"
	if !strings.HasPrefix(line, prefix) {
		t.Fatalf("stdout %q", line)
	}
	go io.Copy(io.Discard, br) //nolint:errcheck // ends when either pipe end closes
	addr := strings.TrimSpace(strings.TrimPrefix(line, prefix))

	props := get(t, addr, "/props")
	for _, want := range []string{`"total_slots":3`, `"n_ctx":512`, `"model_alias":"m.gguf"`, `"build_info":"b1-abc"`} {
		if !strings.Contains(props, want) {
			t.Errorf("props lack %s: %s", want, props)
		}
	}
	// --tokens 2: two words, the EOS frame, the final frame.
	body := get(t, addr, "/completion")
	if strings.Count(body, "data: ") != 4 || !strings.Contains(body, `"stop_type":"eos"`) {
		t.Errorf("completion %s", body)
	}

	stop <- syscall.SIGTERM
	stopped = true
	select {
	case <-ended:
		if code != 0 {
			t.Errorf("exit %d, stderr %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
}

// get sends a request with Connection: close and returns the raw body
// (POST with a streaming body for /completion). Dial and exchange are
// bounded, so a fake that stops answering fails the test.
func get(t *testing.T, addr, path string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if path == "/completion" {
		body := `{"prompt":"Hello","n_predict":8,"stream":true}`
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	} else {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("GET %s: %v (read so far: %q)", path, err, b)
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return body
}

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer = syncbuf.Buffer
