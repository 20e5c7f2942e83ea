package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake"
	faketgi "github.com/llama-orch/llama-orch/engines/fake/tgi"
)

type detFake interface {
	Start(string) error
	URL() string
	Requests() int64
	Close() error
}

func startDetFake(t *testing.T, s detFake, err error) detFake {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func llamaFake(t *testing.T, o fake.Options) detFake {
	s, err := fake.New(o)
	return startDetFake(t, s, err)
}

func TestDeterminismCommand(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // after the fakes' cleanups

	t.Run("one replica set", func(t *testing.T) {
		a, b := llamaFake(t, fake.Options{}), llamaFake(t, fake.Options{})
		out := filepath.Join(t.TempDir(), "det")
		code, stdout, stderr := runCmd("determinism", "--engine", "llamacpp", "--replica", a.URL(), "--replica", b.URL(),
			"--tokens", "8", "--out", out)
		if code != exitOK {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		if !strings.Contains(stdout, "64 seeds × 4 prompts: 256 cases, 0 differences\n") {
			t.Errorf("stdout: %s", stdout)
		}
		if a.Requests() != 256 || b.Requests() != 256 {
			t.Errorf("requests %d, %d; want 256 each", a.Requests(), b.Requests())
		}
		data, err := os.ReadFile(filepath.Join(out, "determinism.json"))
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Engine        string            `json:"engine"`
			EngineVersion string            `json:"engine_version"`
			Model         string            `json:"model"`
			Cases         int               `json:"cases"`
			Differences   []json.RawMessage `json:"differences"`
		}
		if err := json.Unmarshal(data, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Engine != "llamacpp" || rep.EngineVersion != fake.DefaultEngineVersion || rep.Model != fake.DefaultModel ||
			rep.Cases != 256 || rep.Differences == nil || len(rep.Differences) != 0 {
			t.Errorf("determinism.json: %s", data)
		}
	})

	t.Run("different versions", func(t *testing.T) {
		a := llamaFake(t, fake.Options{EngineVersion: "b10470-34af94cd9"})
		b := llamaFake(t, fake.Options{EngineVersion: "b10500-feedbeef0"})
		out := filepath.Join(t.TempDir(), "det")
		code, stdout, stderr := runCmd("determinism", "--engine", "llamacpp", "--replica", a.URL(), "--replica", b.URL(),
			"--tokens", "8", "--out", out)
		want := `orch-bench determinism: replicas are not one replica set: engine_version "b10470-34af94cd9" vs "b10500-feedbeef0" — no determinism is assumed across versions (SPEC §11)` + "\n"
		if code != exitUsage || stderr != want || stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, stdout, stderr, want)
		}
		if a.Requests() != 0 || b.Requests() != 0 {
			t.Errorf("completion requests sent: %d, %d", a.Requests(), b.Requests())
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("--out written on refusal: %v", err)
		}
	})

	t.Run("differences", func(t *testing.T) {
		a, b := llamaFake(t, fake.Options{}), llamaFake(t, fake.Options{Tokens: 3})
		code, stdout, stderr := runCmd("determinism", "--engine", "llamacpp", "--replica", a.URL(), "--replica", b.URL(),
			"--tokens", "8", "--seeds", "2")
		if code != exitDifferences {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		if !strings.Contains(stdout, "2 seeds × 4 prompts: 8 cases, 8 differences\n") ||
			!strings.Contains(stdout, "first difference at token 3") || !strings.Contains(stdout, "tokens_out 8 vs 4") {
			t.Errorf("stdout: %s", stdout)
		}
	})

	t.Run("tgi", func(t *testing.T) {
		sa, err := faketgi.New(fake.Options{})
		a := startDetFake(t, sa, err)
		sb, err := faketgi.New(fake.Options{})
		b := startDetFake(t, sb, err)
		code, stdout, stderr := runCmd("determinism", "--engine", "tgi", "--replica", a.URL(), "--replica", b.URL(),
			"--tokens", "4", "--seeds", "8")
		if code != exitOK || !strings.Contains(stdout, "8 seeds × 4 prompts: 32 cases, 0 differences") {
			t.Errorf("exit %d\n%s%s", code, stdout, stderr)
		}
	})

	t.Run("engine errors", func(t *testing.T) {
		a, b := llamaFake(t, fake.Options{}), llamaFake(t, fake.Options{Fail: fake.FailStart503})
		code, stdout, stderr := runCmd("determinism", "--engine", "llamacpp", "--replica", a.URL(), "--replica", b.URL(), "--tokens", "4")
		if code != exitIncomplete || !strings.Contains(stdout, "unavailable error") || !strings.Contains(stdout, "(engine errors)") {
			t.Errorf("exit %d\n%s%s", code, stdout, stderr)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--engine", "llamacpp", "--replica", "http://127.0.0.1:1"}, "exactly two replicas"},
			{[]string{"--replica", "http://127.0.0.1:1", "--replica", "http://127.0.0.1:2"}, "--engine is required"},
			{[]string{"--engine", "llamacpp", "--replica", "http://127.0.0.1:1", "--replica", "http://127.0.0.1:2", "extra"}, "unexpected arguments: extra"},
			{[]string{"--engine", "llamacpp", "--replica", "http://127.0.0.1:1", "--replica", "http://127.0.0.1:2", "--seeds", "0x"}, "invalid value"},
		} {
			code, _, stderr := runCmd(append([]string{"determinism"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
			}
		}
	})
}
