package catalog

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseState(t *testing.T) {
	f := func(in string, want State, wantOK bool) {
		t.Helper()
		got, ok := ParseState(in)
		if got != want || ok != wantOK {
			t.Errorf("ParseState(%q) = %q, %v; want %q, %v", in, got, ok, want, wantOK)
		}
	}
	for _, s := range States {
		f(string(s), s, true)                    // exact name
		f(strings.ToLower(string(s)), s, true)   // lowercase
		f(strings.ToUpper(string(s)), "", false) // no other casing
	}
	f("", "", false)
	f("Live", "", false)
	f(" Active", "", false)
}

func TestOpenOptions(t *testing.T) {
	good := newSigner(t).b64
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	cases := []struct {
		name    string
		o       Options
		wantErr string // substring; "" = success
		policy  string
	}{
		// Zero options: permissive, memory only.
		{"defaults", Options{}, "", PolicyPermissive},
		{"strict", Options{Policy: PolicyStrict, TrustedKeys: []string{good}}, "", PolicyStrict},
		{"explicit permissive", Options{Policy: PolicyPermissive}, "", PolicyPermissive},
		// Policy names are exact.
		{"bad policy", Options{Policy: "Strict"}, `policy "Strict"`, ""},
		// A key error names the key's position.
		{"key not base64", Options{TrustedKeys: []string{good, "***"}}, "trusted key 1", ""},
		{"key 31 bytes", Options{TrustedKeys: []string{short}}, "trusted key 0", ""},
		{"key raw url base64", Options{TrustedKeys: []string{strings.TrimRight(base64.RawURLEncoding.EncodeToString(make([]byte, 32)), "=")}}, "trusted key 0", ""},
		{"negative max bytes", Options{MaxBytes: -1}, "max bytes", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(tc.o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Policy() != tc.policy || c.Len() != 0 {
				t.Fatalf("policy %q len %d", c.Policy(), c.Len())
			}
		})
	}
}

func TestRegister(t *testing.T) {
	trusted, other := newSigner(t), newSigner(t)
	d := digestOf([]byte("weights"))
	dOther := digestOf([]byte("other weights"))
	longID := strings.Repeat("a", 129)
	big := json.RawMessage(`"` + strings.Repeat("x", 1<<20) + `"`)

	type want struct {
		kind   ErrorKind
		reason string
	}
	cases := []struct {
		name   string
		strict bool
		r      Registration
		want   want
		sbom   string // the SBOM recorded on success
	}{
		// The smallest valid registration.
		{"minimal", false, Registration{ID: "llama-3-8b", Ref: "/models/a.gguf"}, want{}, ""},
		// Every field, file:// ref, SBOM compacted, engine known.
		{"full", false, Registration{ID: "org/llama:3.1_8b-q4", Ref: "file:///models/a.gguf", Digest: d, Signature: trusted.sign(d), SBOM: json.RawMessage(`{ "name" : "<llama & co>" }`), Engine: "vllm"}, want{}, `{"name":"<llama & co>"}`},
		{"file localhost", false, Registration{ID: "m", Ref: "file://localhost/models/a"}, want{}, ""},
		{"http ref", false, Registration{ID: "m", Ref: "http://127.0.0.1:8080/a.gguf"}, want{}, ""},
		{"https ref with query", false, Registration{ID: "m", Ref: "https://models.example/a.gguf?rev=3"}, want{}, ""},
		// JSON null SBOM means none.
		{"sbom null", false, Registration{ID: "m", Ref: "/a", SBOM: json.RawMessage(`null`)}, want{}, ""},
		// Permissive accepts a signature it cannot check yet: Verify judges it.
		{"permissive untrusted signature", false, Registration{ID: "m", Ref: "/a", Digest: d, Signature: other.sign(d)}, want{}, ""},
		{"permissive signature without digest", false, Registration{ID: "m", Ref: "/a", Signature: trusted.sign(d)}, want{}, ""},

		{"id empty", false, Registration{Ref: "/a"}, want{kind: KindInvalid}, ""},
		{"id 129 bytes", false, Registration{ID: longID, Ref: "/a"}, want{kind: KindInvalid}, ""},
		{"id 128 bytes", false, Registration{ID: longID[:128], Ref: "/a"}, want{}, ""},
		{"id space", false, Registration{ID: "my model", Ref: "/a"}, want{kind: KindInvalid}, ""},
		{"id question mark", false, Registration{ID: "m?x=1", Ref: "/a"}, want{kind: KindInvalid}, ""},
		{"id non-ascii", false, Registration{ID: "modèle", Ref: "/a"}, want{kind: KindInvalid}, ""},

		{"ref empty", false, Registration{ID: "m"}, want{kind: KindInvalid}, ""},
		{"ref relative", false, Registration{ID: "m", Ref: "models/a.gguf"}, want{kind: KindInvalid}, ""},
		{"ref ftp", false, Registration{ID: "m", Ref: "ftp://host/a"}, want{kind: KindInvalid}, ""},
		{"ref file remote host", false, Registration{ID: "m", Ref: "file://host/a"}, want{kind: KindInvalid}, ""},
		{"ref file opaque", false, Registration{ID: "m", Ref: "file:a"}, want{kind: KindInvalid}, ""},
		{"ref file query", false, Registration{ID: "m", Ref: "file:///a?x=1"}, want{kind: KindInvalid}, ""},
		{"ref http no host", false, Registration{ID: "m", Ref: "http:///a"}, want{kind: KindInvalid}, ""},
		// Credentials would be persisted and returned by GET.
		{"ref credentials", false, Registration{ID: "m", Ref: "https://user:pw@host/a"}, want{kind: KindInvalid}, ""},
		{"ref control char", false, Registration{ID: "m", Ref: "/a\nb"}, want{kind: KindInvalid}, ""},
		{"ref invalid utf8", false, Registration{ID: "m", Ref: "/a\xff"}, want{kind: KindInvalid}, ""},
		{"ref too long", false, Registration{ID: "m", Ref: "/" + strings.Repeat("a", 4096)}, want{kind: KindInvalid}, ""},

		{"digest uppercase", false, Registration{ID: "m", Ref: "/a", Digest: strings.ToUpper(d)}, want{kind: KindInvalid}, ""},
		{"digest upper hex", false, Registration{ID: "m", Ref: "/a", Digest: "sha256:" + strings.ToUpper(d[7:])}, want{kind: KindInvalid}, ""},
		{"digest short", false, Registration{ID: "m", Ref: "/a", Digest: d[:70]}, want{kind: KindInvalid}, ""},
		{"digest other algorithm", false, Registration{ID: "m", Ref: "/a", Digest: "sha512:" + d[7:]}, want{kind: KindInvalid}, ""},

		{"signature not base64", false, Registration{ID: "m", Ref: "/a", Digest: d, Signature: "not base64!"}, want{kind: KindInvalid}, ""},
		{"signature wrong length", false, Registration{ID: "m", Ref: "/a", Digest: d, Signature: base64.StdEncoding.EncodeToString(make([]byte, 10))}, want{kind: KindInvalid}, ""},

		{"sbom too large", false, Registration{ID: "m", Ref: "/a", SBOM: big}, want{kind: KindInvalid}, ""},
		{"sbom invalid json", false, Registration{ID: "m", Ref: "/a", SBOM: json.RawMessage(`{"a":`)}, want{kind: KindInvalid}, ""},
		{"engine unknown", false, Registration{ID: "m", Ref: "/a", Engine: "ollama"}, want{kind: KindInvalid}, ""},

		// The id is taken (a model "taken" is registered before every case).
		{"exists", false, Registration{ID: "taken", Ref: "/b"}, want{kind: KindExists}, ""},

		// Strict: a digest and a signature by a trusted key over it.
		{"strict ok", true, Registration{ID: "m", Ref: "/a", Digest: d, Signature: trusted.sign(d)}, want{}, ""},
		{"strict no digest", true, Registration{ID: "m", Ref: "/a", Signature: trusted.sign(d)}, want{KindUntrusted, ReasonUnsigned}, ""},
		{"strict no signature", true, Registration{ID: "m", Ref: "/a", Digest: d}, want{KindUntrusted, ReasonUnsigned}, ""},
		{"strict untrusted key", true, Registration{ID: "m", Ref: "/a", Digest: d, Signature: other.sign(d)}, want{KindUntrusted, ReasonBadSignature}, ""},
		{"strict signature over another digest", true, Registration{ID: "m", Ref: "/a", Digest: d, Signature: trusted.sign(dOther)}, want{KindUntrusted, ReasonBadSignature}, ""},
		// Malformed fields stay INVALID_PARAMS under strict.
		{"strict bad ref", true, Registration{ID: "m", Ref: "rel", Digest: d, Signature: trusted.sign(d)}, want{kind: KindInvalid}, ""},
		{"strict exists", true, Registration{ID: "taken", Ref: "/a", Digest: d, Signature: trusted.sign(d)}, want{kind: KindExists}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			o := Options{Path: catalogPath(t), TrustedKeys: []string{trusted.b64}, Now: clk.Now}
			if tc.strict {
				o.Policy = PolicyStrict
			}
			c := mustOpen(t, o)
			taken, err := c.Register(Registration{ID: "taken", Ref: "/taken", Digest: d, Signature: trusted.sign(d)})
			if err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
			e, err := c.Register(tc.r)
			kind, reason := kindOf(t, err)
			if kind != tc.want.kind || reason != tc.want.reason {
				t.Fatalf("err = %v (kind %d reason %q), want kind %d reason %q", err, kind, reason, tc.want.kind, tc.want.reason)
			}
			if err != nil {
				// Nothing is stored on error.
				if c.Len() != 1 {
					t.Fatalf("Len = %d after a failed registration", c.Len())
				}
				if got, _ := c.Get("taken"); !reflect.DeepEqual(got, taken) {
					t.Fatalf("taken changed: %+v", got)
				}
				if tc.r.ID != "taken" {
					if _, ok := c.Get(tc.r.ID); ok {
						t.Fatal("a failed registration was stored")
					}
				}
				return
			}
			if e.ID != tc.r.ID || e.Ref != tc.r.Ref || e.Digest != tc.r.Digest || e.Signature != tc.r.Signature || e.Engine != tc.r.Engine {
				t.Fatalf("entry %+v does not carry the registration %+v", e, tc.r)
			}
			if string(e.SBOM) != tc.sbom {
				t.Fatalf("SBOM = %q, want %q", e.SBOM, tc.sbom)
			}
			if e.State != Draft || e.Verification != nil || e.SessionsUntil != nil || e.History == nil || len(e.History) != 0 {
				t.Fatalf("new entry not a clean Draft: %+v", e)
			}
			if !e.CreatedAt.Equal(clk.Now()) || !e.UpdatedAt.Equal(clk.Now()) {
				t.Fatalf("times %v %v, want %v", e.CreatedAt, e.UpdatedAt, clk.Now())
			}
			if got, ok := c.Get(e.ID); !ok || !reflect.DeepEqual(got, e) {
				t.Fatalf("Get = %+v, %v; want %+v", got, ok, e)
			}
			if st, until, ok := c.Lookup(e.ID); st != Draft || !until.IsZero() || !ok {
				t.Fatalf("Lookup = %v %v %v", st, until, ok)
			}
		})
	}
}

// TestGetIsDeepCopy: callers cannot reach the stored entry through a copy.
func TestGetIsDeepCopy(t *testing.T) {
	c := mustOpen(t, Options{})
	if _, err := c.Register(Registration{ID: "m", Ref: "/a", SBOM: json.RawMessage(`[1]`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetState("m", Active, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetState("m", Deprecated, time.Minute); err != nil {
		t.Fatal(err)
	}
	e, _ := c.Get("m")
	e.SBOM[0] = '{'
	e.History[0].To = Retired
	*e.SessionsUntil = time.Time{}
	l := c.List()
	l[0].History[1].From = Retired
	got, _ := c.Get("m")
	if string(got.SBOM) != "[1]" || got.History[0].To != Active || got.History[1].From != Active || got.SessionsUntil.IsZero() {
		t.Fatalf("stored entry changed through a copy: %+v", got)
	}
}

func TestList(t *testing.T) {
	c := mustOpen(t, Options{})
	for _, id := range []string{"c", "a", "b/2", "b/1"} {
		if _, err := c.Register(Registration{ID: id, Ref: "/" + id}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for _, e := range c.List() {
		ids = append(ids, e.ID)
	}
	if want := []string{"a", "b/1", "b/2", "c"}; !reflect.DeepEqual(ids, want) || c.Len() != 4 {
		t.Fatalf("List ids %v (Len %d), want %v", ids, c.Len(), want)
	}
}

// pathTo lists the transitions that bring a new (Draft) entry to each state.
var pathTo = map[State][]State{
	Draft:      nil,
	Active:     {Active},
	Canary:     {Canary},
	Deprecated: {Active, Deprecated},
	Retired:    {Active, Deprecated, Retired},
}

func TestStateMachine(t *testing.T) {
	// The lifecycle of SPEC §9 as written in the brief, independent of the
	// package's table.
	allowed := map[string]bool{
		"Draft>Active": true, "Draft>Canary": true, "Draft>Retired": true,
		"Active>Canary": true, "Active>Deprecated": true,
		"Canary>Active": true, "Canary>Deprecated": true,
		"Deprecated>Active": true, "Deprecated>Retired": true,
	}
	for _, from := range States {
		for _, to := range States {
			name := string(from) + ">" + string(to)
			t.Run(name, func(t *testing.T) {
				clk := newClock()
				c := mustOpen(t, Options{Path: catalogPath(t), Now: clk.Now})
				if _, err := c.Register(Registration{ID: "m", Ref: "/a"}); err != nil {
					t.Fatal(err)
				}
				for _, s := range pathTo[from] {
					if _, err := c.SetState("m", s, 0); err != nil {
						t.Fatalf("reaching %s: %v", from, err)
					}
				}
				before, _ := c.Get("m")
				clk.Advance(time.Second)
				e, err := c.SetState("m", to, 0)
				kind, _ := kindOf(t, err)
				if !allowed[name] {
					if kind != KindConflict {
						t.Fatalf("err = %v, want KindConflict", err)
					}
					// The message names the allowed targets (or that there are none).
					for k := range allowed {
						if f, target, _ := strings.Cut(k, ">"); f == string(from) && !strings.Contains(err.Error(), target) {
							t.Errorf("message %q does not name allowed target %s", err, target)
						}
					}
					if from == Retired && !strings.Contains(err.Error(), "no transition") {
						t.Errorf("message %q does not say Retired is terminal", err)
					}
					if after, _ := c.Get("m"); !reflect.DeepEqual(after, before) {
						t.Fatalf("a refused transition changed the entry: %+v", after)
					}
					return
				}
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				last := e.History[len(e.History)-1]
				if e.State != to || last != (Transition{From: from, To: to, At: clk.Now()}) || len(e.History) != len(before.History)+1 {
					t.Fatalf("entry after %s: state %s history %+v", name, e.State, e.History)
				}
				if !e.UpdatedAt.Equal(clk.Now()) {
					t.Fatalf("UpdatedAt %v, want %v", e.UpdatedAt, clk.Now())
				}
				if st, _, _ := c.Lookup("m"); st != to {
					t.Fatalf("Lookup state %s, want %s", st, to)
				}
			})
		}
	}
}

func TestSetStateInvalid(t *testing.T) {
	c := mustOpen(t, Options{})
	if _, err := c.Register(Registration{ID: "m", Ref: "/a"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		id       string
		to       State
		deadline time.Duration
		want     ErrorKind
	}{
		{"unknown id", "nope", Active, 0, KindNotFound},
		{"unknown state", "m", "Live", 0, KindInvalid},
		// SetState takes State values; lowercase goes through ParseState first.
		{"lowercase state value", "m", "active", 0, KindInvalid},
		{"negative deadline", "m", Deprecated, -time.Millisecond, KindInvalid},
		// Draft cannot be re-entered.
		{"same state", "m", Draft, 0, KindConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.SetState(tc.id, tc.to, tc.deadline)
			if kind, _ := kindOf(t, err); kind != tc.want {
				t.Fatalf("err = %v, want kind %d", err, tc.want)
			}
			if st, _, _ := c.Lookup("m"); st != Draft {
				t.Fatalf("state changed to %s", st)
			}
		})
	}
}

func TestSessionsUntil(t *testing.T) {
	clk := newClock()
	c := mustOpen(t, Options{Path: catalogPath(t), Now: clk.Now})
	if _, err := c.Register(Registration{ID: "m", Ref: "/a"}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		to        State
		deadline  time.Duration
		until     time.Duration // offset of SessionsUntil from the step's now; -1 = none
		historyMs int64
	}{
		{"activate", Active, 0, -1, 0},
		// A deadline given for another target is not recorded.
		{"canary with a deadline", Canary, time.Minute, -1, 0},
		{"deprecate with 5s", Deprecated, 5 * time.Second, 5 * time.Second, 5000},
		{"leaving Deprecated clears it", Active, 0, -1, 0},
		{"deprecate without deadline", Deprecated, 0, -1, 0},
		{"reactivate", Active, 0, -1, 0},
		{"deprecate 1500ms", Deprecated, 1500 * time.Millisecond, 1500 * time.Millisecond, 1500},
		{"retire clears it", Retired, 0, -1, 0},
	}
	for _, s := range steps {
		clk.Advance(time.Second)
		e, err := c.SetState("m", s.to, s.deadline)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		st, until, ok := c.Lookup("m")
		if !ok || st != s.to {
			t.Fatalf("%s: Lookup %s %v", s.name, st, ok)
		}
		if s.until < 0 {
			if e.SessionsUntil != nil || !until.IsZero() {
				t.Fatalf("%s: SessionsUntil %v, Lookup until %v; want none", s.name, e.SessionsUntil, until)
			}
		} else {
			want := clk.Now().Add(s.until)
			if e.SessionsUntil == nil || !e.SessionsUntil.Equal(want) || !until.Equal(want) {
				t.Fatalf("%s: SessionsUntil %v, Lookup until %v; want %v", s.name, e.SessionsUntil, until, want)
			}
		}
		if got := e.History[len(e.History)-1].DeadlineMs; got != s.historyMs {
			t.Fatalf("%s: history deadline_ms %d, want %d", s.name, got, s.historyMs)
		}
	}
}

func TestHistoryBounded(t *testing.T) {
	clk := newClock()
	c := mustOpen(t, Options{Now: clk.Now})
	if _, err := c.Register(Registration{ID: "m", Ref: "/a"}); err != nil {
		t.Fatal(err)
	}
	const n = 101 // Draft→Canary, then 100 flips
	to := Canary
	var e Entry
	for i := 0; i < n; i++ {
		clk.Advance(time.Second)
		var err error
		if e, err = c.SetState("m", to, 0); err != nil {
			t.Fatal(err)
		}
		to = map[State]State{Canary: Active, Active: Canary}[to]
	}
	if len(e.History) != historyMax {
		t.Fatalf("history has %d transitions, want %d", len(e.History), historyMax)
	}
	if last := e.History[historyMax-1]; !last.At.Equal(clk.Now()) {
		t.Fatalf("last transition %+v is not the latest", last)
	}
	if first := e.History[0]; !first.At.Equal(clk.Now().Add(-(historyMax - 1) * time.Second)) {
		t.Fatalf("first kept transition %+v is not the %dth latest", first, historyMax)
	}
}

func TestLookupUnknown(t *testing.T) {
	c := mustOpen(t, Options{})
	if st, until, ok := c.Lookup("nope"); ok || st != "" || !until.IsZero() {
		t.Fatalf("Lookup(unknown) = %q %v %v", st, until, ok)
	}
}

func TestLookupAllocs(t *testing.T) {
	c := mustOpen(t, Options{})
	for i := 0; i < 100; i++ {
		if _, err := c.Register(Registration{ID: fmt.Sprintf("m%d", i), Ref: "/a"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetState("m7", Active, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetState("m7", Deprecated, time.Hour); err != nil {
		t.Fatal(err)
	}
	id, missing := "m7", "zz"
	var st State
	var until time.Time
	var ok bool
	allocs := testing.AllocsPerRun(1000, func() {
		st, until, ok = c.Lookup(id)
		_, _, _ = c.Lookup(missing)
	})
	if allocs != 0 {
		t.Fatalf("Lookup allocates %v times per call", allocs)
	}
	if st != Deprecated || until.IsZero() || !ok {
		t.Fatalf("Lookup = %s %v %v", st, until, ok)
	}
}

func BenchmarkLookup(b *testing.B) {
	c := mustOpen(b, Options{})
	for i := 0; i < 1024; i++ {
		if _, err := c.Register(Registration{ID: fmt.Sprintf("model-%d", i), Ref: "/a"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, ok := c.Lookup("model-512"); !ok {
				b.Fatal("missing")
			}
		}
	})
}

// TestConcurrent exercises Lookup, Get, List, SetState and Verify together
// (run with -race).
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	art := dir + "/a.bin"
	data := []byte("weights")
	writeFile(t, art, data)
	c := mustOpen(t, Options{})
	ids := []string{"m0", "m1", "m2", "m3"}
	for _, id := range ids {
		if _, err := c.Register(Registration{ID: id, Ref: art, Digest: digestOf(data)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SetState(id, Active, 0); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				st, _, ok := c.Lookup(ids[i%len(ids)])
				if !ok || (st != Active && st != Canary) {
					t.Errorf("Lookup = %s %v", st, ok)
					return
				}
				if i%64 == 0 {
					_ = c.List()
					_, _ = c.Get(ids[i%len(ids)])
				}
			}
		})
	}
	var writers sync.WaitGroup
	for w := 0; w < 2; w++ {
		writers.Go(func() {
			for i := 0; i < 300; i++ {
				id := ids[(w*2+i)%len(ids)]
				st, _, _ := c.Lookup(id)
				to := Canary
				if st == Canary {
					to = Active
				}
				// Another writer may move the same entry first: a conflict is fine.
				// (errors.As, not kindOf: its t.Fatalf must not run off the
				// test goroutine.)
				if _, err := c.SetState(id, to, 0); err != nil {
					if e := (*Error)(nil); !errors.As(err, &e) || e.Kind != KindConflict {
						t.Errorf("SetState: %v", err)
					}
				}
			}
		})
	}
	writers.Go(func() {
		for i := 0; i < 40; i++ {
			_, v, err := c.Verify(t.Context(), ids[i%len(ids)])
			if err != nil || v.Result != "pass" {
				t.Errorf("Verify = %+v, %v", v, err)
			}
		}
	})
	writers.Wait()
	close(done)
	wg.Wait()
	for _, e := range c.List() {
		st, _, _ := c.Lookup(e.ID)
		if st != e.State || e.Verification == nil || e.Verification.Result != "pass" {
			t.Fatalf("%s: Lookup %s, entry %+v", e.ID, st, e)
		}
	}
}

// TestTrustedAndEachState: Trusted follows the strict gate through a
// signed verification, a tampered artifact and a permissive unsigned pass;
// EachState lists every model's state.
func TestTrustedAndEachState(t *testing.T) {
	s := newSigner(t)
	data := randomBytes(t, 64)
	file := filepath.Join(t.TempDir(), "m.bin")
	writeFile(t, file, data)
	c := mustOpen(t, Options{Policy: PolicyStrict, TrustedKeys: []string{s.b64}})
	if _, ok := c.Trusted("m"); ok {
		t.Fatal("Trusted of an unknown model said ok")
	}
	d := digestOf(data)
	if _, err := c.Register(Registration{ID: "m", Ref: file, Digest: d, Signature: s.sign(d)}); err != nil {
		t.Fatal(err)
	}
	if tr, ok := c.Trusted("m"); tr || !ok {
		t.Fatalf("never verified: Trusted = %v, %v", tr, ok)
	}
	if _, _, err := c.Verify(t.Context(), "m"); err != nil {
		t.Fatal(err)
	}
	if tr, _ := c.Trusted("m"); !tr {
		t.Fatal("a passing signed verification is not trusted")
	}
	writeFile(t, file, append(data, 'x'))
	if _, _, err := c.Verify(t.Context(), "m"); err == nil {
		t.Fatal("a tampered artifact verified under strict")
	}
	if tr, _ := c.Trusted("m"); tr {
		t.Fatal("trusted after a failed verification")
	}

	p := mustOpen(t, Options{})
	if _, err := p.Register(Registration{ID: "u", Ref: file}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Verify(t.Context(), "u"); err != nil {
		t.Fatal(err)
	}
	if tr, _ := p.Trusted("u"); tr {
		t.Fatal("an unsigned pass is trusted")
	}
	if _, err := p.SetState("u", Active, 0); err != nil {
		t.Fatal(err)
	}
	got := map[string]State{}
	p.EachState(func(id string, st State) { got[id] = st })
	if len(got) != 1 || got["u"] != Active {
		t.Fatalf("EachState: %v", got)
	}
	if n := testing.AllocsPerRun(100, func() { p.Trusted("u") }); n != 0 {
		t.Fatalf("Trusted allocates %v", n)
	}
}
