package catalog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fixedSigner is deterministic so fuzz seeds can carry valid signatures.
func fixedSigner() signer {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	return signer{priv: priv, b64: base64.StdEncoding.EncodeToString(pub), id: hex.EncodeToString(sum[:])[:16]}
}

// FuzzOpen: no file makes Open panic, every error names the file, and what
// Open accepts is saved and read back identically.
func FuzzOpen(f *testing.F) {
	// A real catalog file: every state, verifications, a resolution, an SBOM.
	dir := f.TempDir()
	path := filepath.Join(dir, "catalog.json")
	clk := newClock()
	c, err := Open(Options{Path: path, TrustedKeys: []string{fixedSigner().b64}, Now: clk.Now})
	if err != nil {
		f.Fatal(err)
	}
	populate(f, c, clk, dir, fixedSigner())
	valid, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"version":1,"models":[]}`))
	f.Add([]byte(`{"version":1,"models":[{"id":"m","ref":"/a","state":"Deprecated","sessions_until":"2026-01-01T00:00:00+05:00","history":null,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","sbom":[1, {"a" : "<&>"}]}]}`))
	f.Add([]byte(`{"version":1,"models":[{"id":"m","ref":"/a","state":"Draft"}],"x":1}`))
	f.Add([]byte(`{"version":1,"models":[{"id":"m"},{"id":"m"}]}`))
	f.Add([]byte(`null`))
	// One file per worker: the fuzz function runs sequentially within one.
	path = filepath.Join(f.TempDir(), "catalog.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		writeFile(t, path, data)
		c, err := Open(Options{Path: path})
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		before := c.List()
		for _, e := range before {
			st, until, ok := c.Lookup(e.ID)
			if !ok || st != e.State || (e.SessionsUntil == nil) != until.IsZero() {
				t.Fatalf("%s: Lookup %s %v %v disagrees with %+v", e.ID, st, until, ok, e)
			}
		}
		// Saved and read back (in memory: an fsync per input would starve
		// the fuzzer; the file path is covered by the persistence tests).
		c.mu.Lock()
		saved, err := c.encode()
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("a catalog Open accepted cannot be saved: %v", err)
		}
		entries, err := decode(saved)
		if err != nil {
			t.Fatalf("a saved catalog does not open: %v\n%s", err, saved)
		}
		if after := entries; !reflect.DeepEqual(after, before) {
			t.Fatalf("round trip changed the catalog:\n%+v\n%+v", after, before)
		}
	})
}

// FuzzRegistration: no body makes Register panic; errors are classified; an
// accepted registration reads back identically, also after a reopen.
func FuzzRegistration(f *testing.F) {
	k := fixedSigner()
	d := digestOf([]byte("weights"))
	seeds := []string{
		`{"id":"llama-3-8b","ref":"/models/llama-3-8b.Q4_K_M.gguf"}`,
		`{"id":"meta/llama-3.1-8b:q4","ref":"file:///models/a.gguf","digest":"` + d + `","signature":"` + k.sign(d) + `","sbom":{"spdxVersion":"SPDX-2.3","packages":[{"name":"<x>"}]},"engine":"llamacpp"}`,
		`{"id":"m","ref":"https://models.example/m.safetensors?rev=main","engine":"vllm","sbom":null}`,
		`{"id":"m","ref":"http://127.0.0.1:9/m","digest":"sha256:00","signature":"AAAA"}`,
		`{"id":"","ref":"","sbom":"  "}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r Registration
		if json.Unmarshal(body, &r) != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "catalog.json")
		perm := mustOpen(t, Options{Path: path, TrustedKeys: []string{k.b64}})
		strict := mustOpen(t, Options{Policy: PolicyStrict, TrustedKeys: []string{k.b64}})
		if _, err := strict.Register(r); err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Kind < KindInvalid || e.Kind > KindStorage || (e.Kind == KindUntrusted) != (e.Reason != "") {
				t.Fatalf("strict: unclassified error %#v", err)
			}
		}
		e, err := perm.Register(r)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Kind != KindInvalid {
				t.Fatalf("permissive: error %#v, want KindInvalid", err)
			}
			if perm.Len() != 0 {
				t.Fatal("a refused registration was stored")
			}
			return
		}
		if got, ok := perm.Get(r.ID); !ok || !reflect.DeepEqual(got, e) {
			t.Fatalf("Get = %+v, want %+v", got, e)
		}
		again := mustOpen(t, Options{Path: path})
		if got, ok := again.Get(r.ID); !ok || !reflect.DeepEqual(got, e) {
			t.Fatalf("after reopening %+v, want %+v", got, e)
		}
	})
}
