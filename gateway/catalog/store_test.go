package catalog

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// populate fills c with entries in every state, verified or not, with SBOM
// bytes that JSON encoders like to rewrite.
func populate(t testing.TB, c *Catalog, clk *clock, dir string, k signer) {
	t.Helper()
	data := []byte("weights")
	art := filepath.Join(dir, "a.bin")
	writeFile(t, art, data)
	d := digestOf(data)
	regs := []Registration{
		{ID: "a/draft", Ref: "/nowhere", Engine: "tgi"},
		{ID: "b:active", Ref: art, Digest: d, Signature: k.sign(d), Engine: "llamacpp",
			SBOM: json.RawMessage(`{"components":[{"name":"<tok & weights>","v":"é \u2028"}], "n":1.50}`)},
		{ID: "c.deprecated", Ref: "file://" + art, Engine: "vllm"},
		{ID: "d_retired", Ref: "https://models.example/x?rev=1", Digest: d},
		{ID: "e-unreadable", Ref: filepath.Join(dir, "missing.bin"), Digest: d},
		{ID: "f-unverified", Ref: art},
	}
	for _, r := range regs {
		clk.Advance(time.Second)
		if _, err := c.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	// Verified: a signed pass, a resolution, a failure.
	for _, id := range []string{"b:active", "c.deprecated", "e-unreadable"} {
		clk.Advance(time.Second)
		if _, _, err := c.Verify(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		id string
		to State
		dl time.Duration
	}{
		{"b:active", Active, 0},
		{"c.deprecated", Canary, 0},
		{"c.deprecated", Deprecated, 90 * time.Second},
		{"d_retired", Active, 0},
		{"d_retired", Deprecated, 0},
		{"d_retired", Retired, 0},
	}
	for _, s := range steps {
		clk.Advance(time.Second)
		if _, err := c.SetState(s.id, s.to, s.dl); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPersistenceRoundTrip(t *testing.T) {
	k := newSigner(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "catalog.json")
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	// A clock with a zone and a monotonic reading: stored times are UTC.
	now := func() time.Time { return clk.Now().In(time.FixedZone("X", 3600)) }
	c := mustOpen(t, Options{Path: path, TrustedKeys: []string{k.b64}, Now: now})
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Open created the file (stat: %v)", err)
	}
	populate(t, c, clk, dir, k)
	before := c.List()

	again := mustOpen(t, Options{Path: path, Policy: PolicyStrict, TrustedKeys: []string{k.b64}})
	if after := again.List(); !reflect.DeepEqual(after, before) {
		t.Fatalf("after reopening:\n%+v\nbefore:\n%+v", after, before)
	}
	for _, e := range before {
		st, until, ok := again.Lookup(e.ID)
		if !ok || st != e.State || (e.SessionsUntil == nil) != until.IsZero() {
			t.Fatalf("%s: Lookup %s %v %v after reopening", e.ID, st, until, ok)
		}
	}
	// What the file says, as another reader sees it.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
	}
	if names := dirNames(t, filepath.Dir(path)); !reflect.DeepEqual(names, []string{"catalog.json"}) {
		t.Fatalf("directory holds %v: a temp file was left behind", names)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Version int               `json:"version"`
		Models  []json.RawMessage `json:"models"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Version != 1 || len(doc.Models) != len(before) {
		t.Fatalf("file: version %d, %d models, err %v", doc.Version, len(doc.Models), err)
	}
	for _, want := range []string{`"sha256:`, `"sessions_until"`, `"resolved_digest"`, `"<tok & weights>"`, `"key_id": "` + k.id} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("file does not contain %s", want)
		}
	}
	// The resolution and the failure survived.
	if e, _ := again.Get("c.deprecated"); e.Digest != digestOf([]byte("weights")) || e.SessionsUntil == nil {
		t.Fatalf("c.deprecated: %+v", e)
	}
	if e, _ := again.Get("e-unreadable"); e.Verification == nil || e.Verification.Reason != ReasonUnreadable {
		t.Fatalf("e-unreadable: %+v", e)
	}
}

func TestMemoryOnly(t *testing.T) {
	dir := t.TempDir()
	c := mustOpen(t, Options{})
	populate(t, c, newClock(), dir, newSigner(t))
	if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"a.bin"}) {
		t.Fatalf("memory-only catalog wrote files: %v", names)
	}
	if c.Len() != 6 {
		t.Fatalf("Len = %d", c.Len())
	}
}

// TestWriteFailure: when persisting fails, every change reports KindStorage
// and leaves both the catalog and the file as they were.
func TestWriteFailure(t *testing.T) {
	breakers := []struct {
		name     string
		needUser bool // root ignores permission bits
		brk      func(t *testing.T, real, link string)
		fix      func(t *testing.T, real, link string)
	}{
		{
			"read-only directory", true,
			func(t *testing.T, real, _ string) {
				if err := os.Chmod(real, 0o500); err != nil {
					t.Fatal(err)
				}
			},
			func(t *testing.T, real, _ string) {
				if err := os.Chmod(real, 0o700); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			// The catalog's directory (reached through a symlink) vanishes.
			"directory gone", false,
			func(t *testing.T, real, link string) {
				if err := os.Remove(link); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(real+".gone", link); err != nil {
					t.Fatal(err)
				}
			},
			func(t *testing.T, real, link string) {
				if err := os.Remove(link); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(real, link); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, b := range breakers {
		t.Run(b.name, func(t *testing.T) {
			if b.needUser && os.Geteuid() == 0 {
				t.Skip("root writes into read-only directories; the other breaker covers this path")
			}
			k := newSigner(t)
			dir := t.TempDir()
			real, link := filepath.Join(dir, "real"), filepath.Join(dir, "link")
			if err := os.Mkdir(real, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(link, "catalog.json")
			clk := newClock()
			c := mustOpen(t, Options{Path: path, TrustedKeys: []string{k.b64}, Now: clk.Now})
			populate(t, c, clk, dir, k)
			before := c.List()
			fileBefore, err := os.ReadFile(filepath.Join(real, "catalog.json"))
			if err != nil {
				t.Fatal(err)
			}
			b.brk(t, real, link)
			defer b.fix(t, real, link)
			clk.Advance(time.Hour)

			changes := []struct {
				name string
				do   func() error
			}{
				{"register", func() error {
					_, err := c.Register(Registration{ID: "new", Ref: "/x"})
					return err
				}},
				{"set state", func() error {
					_, err := c.SetState("b:active", Deprecated, time.Minute)
					return err
				}},
				{"leave deprecated", func() error {
					_, err := c.SetState("c.deprecated", Active, 0)
					return err
				}},
				{"verify", func() error {
					_, _, err := c.Verify(t.Context(), "b:active")
					return err
				}},
				// Resolution would set the digest: it must not stick either.
				{"verify resolving", func() error {
					_, _, err := c.Verify(t.Context(), "f-unverified")
					return err
				}},
			}
			for _, ch := range changes {
				err := ch.do()
				if k, _ := kindOf(t, err); k != KindStorage {
					t.Fatalf("%s: err = %v, want KindStorage", ch.name, err)
				}
				if after := c.List(); !reflect.DeepEqual(after, before) {
					t.Fatalf("%s changed the catalog although persisting failed:\n%+v", ch.name, after)
				}
				if st, until, _ := c.Lookup("b:active"); st != Active || !until.IsZero() {
					t.Fatalf("%s: Lookup sees %s %v", ch.name, st, until)
				}
				if st, until, _ := c.Lookup("c.deprecated"); st != Deprecated || until.IsZero() {
					t.Fatalf("%s: Lookup sees %s %v", ch.name, st, until)
				}
			}
			if got, _ := os.ReadFile(filepath.Join(real, "catalog.json")); string(got) != string(fileBefore) {
				t.Fatal("the file changed although writing failed")
			}
			if names := dirNames(t, real); !reflect.DeepEqual(names, []string{"catalog.json"}) {
				t.Fatalf("directory holds %v", names)
			}
			b.fix(t, real, link)
			if _, err := c.SetState("b:active", Canary, 0); err != nil {
				t.Fatalf("after the fix: %v", err)
			}
			b.brk(t, real, link) // the deferred fix expects it broken
		})
	}
}

func TestOpenCorrupt(t *testing.T) {
	d := digestOf([]byte("x"))
	entry := func(fields string) string {
		return `{"version":1,"models":[{"id":"m","ref":"/a","state":"Draft","history":[],"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"` + fields + `}]}`
	}
	cases := []struct {
		name, content, want string
	}{
		{"not JSON", `{`, "invalid catalog JSON"},
		{"empty", ``, "invalid catalog JSON"},
		{"null", `null`, "version 0"},
		{"array", `[]`, "invalid catalog JSON"},
		{"unknown top-level field", `{"version":1,"models":[],"extra":1}`, "unknown field"},
		{"unknown entry field", entry(`,"owner":"x"`), "unknown field"},
		{"unknown verification field", entry(`,"verification":{"at":"2026-01-01T00:00:00Z","result":"pass","reason":"ok","bytes":1,"extra":true}`), "unknown field"},
		{"no version", `{"models":[]}`, "version 0"},
		{"version 2", `{"version":2,"models":[]}`, "version 2"},
		{"trailing data", `{"version":1,"models":[]} {}`, "data after"},
		{"duplicate id", `{"version":1,"models":[` + strings.Repeat(`{"id":"m","ref":"/a","state":"Draft","history":[],"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"},`, 2) + `{"id":"n","ref":"/a","state":"Draft","history":[],"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}]}`, "appears twice"},
		{"bad id", strings.Replace(entry(""), `"id":"m"`, `"id":"a b"`, 1), "id"},
		{"bad ref", strings.Replace(entry(""), `"ref":"/a"`, `"ref":"a"`, 1), "ref"},
		{"bad state", strings.Replace(entry(""), `"Draft"`, `"Live"`, 1), "state"},
		{"bad digest", entry(`,"digest":"sha256:XYZ"`), "digest"},
		{"bad signature", entry(`,"digest":"` + d + `","signature":"abc"`), "signature"},
		{"bad engine", entry(`,"engine":"ollama"`), "engine"},
		{"bad time", strings.Replace(entry(""), `"2026-01-01T00:00:00Z"`, `"yesterday"`, 1), "invalid catalog JSON"},
		{"sessions_until outside Deprecated", entry(`,"sessions_until":"2026-01-01T00:00:00Z"`), "sessions_until"},
		{"verification bad result", entry(`,"verification":{"at":"2026-01-01T00:00:00Z","result":"maybe","reason":"ok","bytes":1}`), "result"},
		{"verification bad reason", entry(`,"verification":{"at":"2026-01-01T00:00:00Z","result":"fail","reason":"nope","bytes":1}`), "reason"},
		{"verification pass with a fail reason", entry(`,"verification":{"at":"2026-01-01T00:00:00Z","result":"pass","reason":"unsigned","bytes":1}`), "reason"},
		{"verification bad key id", entry(`,"verification":{"at":"2026-01-01T00:00:00Z","result":"pass","reason":"ok","bytes":1,"key_id":"xyz"}`), "key_id"},
		{"verification negative bytes", entry(`,"verification":{"at":"2026-01-01T00:00:00Z","result":"pass","reason":"ok","bytes":-1}`), "bytes"},
		{"history bad state", strings.Replace(entry(""), `"history":[]`, `"history":[{"from":"Draft","to":"Live","at":"2026-01-01T00:00:00Z"}]`, 1), "history"},
		{"time before year 0 in UTC", strings.Replace(entry(""), `"created_at":"2026-01-01T00:00:00Z"`, `"created_at":"0000-01-01T00:00:00+01:00"`, 1), "created_at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := catalogPath(t)
			writeFile(t, path, []byte(tc.content))
			_, err := Open(Options{Path: path})
			if err == nil {
				t.Fatal("Open accepted a corrupt file")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s and containing %q", err, path, tc.want)
			}
		})
	}
	t.Run("valid control", func(t *testing.T) {
		path := catalogPath(t)
		writeFile(t, path, []byte(entry(`,"verification":{"at":"2026-01-01T01:00:00+01:00","result":"fail","reason":"unreadable","bytes":0}`)))
		c, err := Open(Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if e, _ := c.Get("m"); e.Verification == nil || !e.Verification.At.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || e.Verification.At.Location() != time.UTC {
			t.Fatalf("loaded %+v", e)
		}
	})
	t.Run("path is a directory", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Open(Options{Path: dir}); err == nil || !strings.Contains(err.Error(), dir) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestOpenMissingDirectory: a path whose directory does not exist fails at
// Open, not at the first registration.
func TestOpenMissingDirectory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "no-such-dir", "catalog.json")
	if _, err := Open(Options{Path: p}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Open(%s) = %v", p, err)
	}
}
