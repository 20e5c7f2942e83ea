package catalog

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// artifactServer serves the artifact bytes in several ways.
func artifactServer(t *testing.T, data []byte) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/good", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	})
	mux.HandleFunc("/missing", http.NotFound)
	// Chunked: no Content-Length, so only the read bound can catch the size.
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(data); i += 100 {
			w.Write(data[i:min(i+100, len(data))])
			w.(http.Flusher).Flush()
		}
	})
	// Sends a little, then nothing until the client leaves.
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Write(data[:10])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestVerify(t *testing.T) {
	k1, k2 := newSigner(t), newSigner(t)
	dir := t.TempDir()
	data := randomBytes(t, 1000)
	d := digestOf(data)
	dOther := digestOf([]byte("something else"))
	good := filepath.Join(dir, "good.bin")
	writeFile(t, good, data)
	srv := artifactServer(t, data)

	type want struct {
		result, reason string
		resolved       bool   // ResolvedDigest == d (else empty)
		keyID          string // "" or the signer's id
		errKind        ErrorKind
		digest         string // the entry's digest afterwards
		msg            string // substring of Message
	}
	cases := []struct {
		name     string
		strict   bool
		maxBytes int64
		reg      Registration // ID is filled in
		want     want
	}{
		{"file signed permissive", false, 0, Registration{Ref: good, Digest: d, Signature: k1.sign(d)},
			want{result: "pass", reason: ReasonOK, resolved: true, keyID: k1.id, digest: d}},
		{"file signed strict", true, 0, Registration{Ref: good, Digest: d, Signature: k1.sign(d)},
			want{result: "pass", reason: ReasonOK, resolved: true, keyID: k1.id, digest: d}},
		{"file URL signed strict", true, 0, Registration{Ref: "file://" + good, Digest: d, Signature: k1.sign(d)},
			want{result: "pass", reason: ReasonOK, resolved: true, keyID: k1.id, digest: d}},
		{"http signed strict", true, 0, Registration{Ref: srv.URL + "/good", Digest: d, Signature: k1.sign(d)},
			want{result: "pass", reason: ReasonOK, resolved: true, keyID: k1.id, digest: d}},
		{"http chunked signed", false, 0, Registration{Ref: srv.URL + "/chunked", Digest: d, Signature: k1.sign(d)},
			want{result: "pass", reason: ReasonOK, resolved: true, keyID: k1.id, digest: d}},
		// Exactly the bound is allowed.
		{"exactly max bytes", false, 1000, Registration{Ref: good, Digest: d},
			want{result: "pass", reason: ReasonOK, resolved: true, digest: d}},

		{"mismatch permissive", false, 0, Registration{Ref: good, Digest: dOther, Signature: k1.sign(dOther)},
			want{result: "fail", reason: ReasonDigestMismatch, resolved: true, digest: dOther, msg: d}},
		{"mismatch strict", true, 0, Registration{Ref: good, Digest: dOther, Signature: k1.sign(dOther)},
			want{result: "fail", reason: ReasonDigestMismatch, resolved: true, digest: dOther, errKind: KindUntrusted}},

		// Permissive passes an unsigned artifact whose digest matches, with no key.
		{"unsigned permissive", false, 0, Registration{Ref: good, Digest: d},
			want{result: "pass", reason: ReasonOK, resolved: true, digest: d, msg: "unsigned"}},
		{"unsigned strict", true, 0, Registration{Ref: good, Digest: d},
			want{result: "fail", reason: ReasonUnsigned, resolved: true, digest: d, errKind: KindUntrusted}},

		{"untrusted key permissive", false, 0, Registration{Ref: good, Digest: d, Signature: k2.sign(d)},
			want{result: "fail", reason: ReasonBadSignature, resolved: true, digest: d}},
		{"untrusted key strict", true, 0, Registration{Ref: good, Digest: d, Signature: k2.sign(d)},
			want{result: "fail", reason: ReasonBadSignature, resolved: true, digest: d, errKind: KindUntrusted}},
		{"signature over another digest", false, 0, Registration{Ref: good, Digest: d, Signature: k1.sign(dOther)},
			want{result: "fail", reason: ReasonBadSignature, resolved: true, digest: d}},

		{"missing file", false, 0, Registration{Ref: filepath.Join(dir, "nope.bin"), Digest: d},
			want{result: "fail", reason: ReasonUnreadable, digest: d, msg: "no such file"}},
		{"missing file strict", true, 0, Registration{Ref: filepath.Join(dir, "nope.bin"), Digest: d, Signature: k1.sign(d)},
			want{result: "fail", reason: ReasonUnreadable, digest: d, errKind: KindUntrusted}},
		{"directory", false, 0, Registration{Ref: dir, Digest: d},
			want{result: "fail", reason: ReasonUnreadable, digest: d, msg: "not a regular file"}},
		{"http 404", false, 0, Registration{Ref: srv.URL + "/missing", Digest: d},
			want{result: "fail", reason: ReasonUnreadable, digest: d, msg: "404"}},
		{"http refused", false, 0, Registration{Ref: "http://127.0.0.1:1/x", Digest: d},
			want{result: "fail", reason: ReasonUnreadable, digest: d, msg: "GET"}},

		{"too large file", false, 999, Registration{Ref: good, Digest: d},
			want{result: "fail", reason: ReasonTooLarge, digest: d}},
		{"too large http announced", false, 999, Registration{Ref: srv.URL + "/good", Digest: d},
			want{result: "fail", reason: ReasonTooLarge, digest: d}},
		{"too large http chunked", false, 999, Registration{Ref: srv.URL + "/chunked", Digest: d},
			want{result: "fail", reason: ReasonTooLarge, digest: d}},

		// Tag→digest resolution: no declared digest, the bytes read decide it.
		{"resolve unsigned", false, 0, Registration{Ref: srv.URL + "/good"},
			want{result: "pass", reason: ReasonOK, resolved: true, digest: d, msg: "resolved"}},
		{"resolve signed", false, 0, Registration{Ref: good, Signature: k1.sign(d)},
			want{result: "pass", reason: ReasonOK, resolved: true, keyID: k1.id, digest: d}},
		// The resolution is recorded even when the signature then fails.
		{"resolve bad signature", false, 0, Registration{Ref: good, Signature: k1.sign(dOther)},
			want{result: "fail", reason: ReasonBadSignature, resolved: true, digest: d}},
		// Nothing read, nothing resolved.
		{"resolve unreadable", false, 0, Registration{Ref: srv.URL + "/missing"},
			want{result: "fail", reason: ReasonUnreadable, digest: ""}},
		// Strict never adopts a digest it was not given signed.
		{"no digest strict", true, 0, Registration{Ref: good, Signature: k1.sign(d)},
			want{result: "fail", reason: ReasonUnsigned, resolved: true, digest: "", errKind: KindUntrusted}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			path := catalogPath(t)
			tc.reg.ID = "model-" + strconv.Itoa(i)
			// Register under permissive (strict refuses some of these
			// registrations), then open under the case's policy: an operator
			// who tightened the policy.
			seed := mustOpen(t, Options{Path: path, TrustedKeys: []string{k1.b64}, Now: clk.Now})
			if _, err := seed.Register(tc.reg); err != nil {
				t.Fatal(err)
			}
			o := Options{Path: path, TrustedKeys: []string{k1.b64}, MaxBytes: tc.maxBytes, Now: clk.Now}
			if tc.strict {
				o.Policy = PolicyStrict
			}
			c := mustOpen(t, o)
			clk.Advance(time.Minute)
			e, v, err := c.Verify(t.Context(), tc.reg.ID)
			kind, reason := kindOf(t, err)
			if kind != tc.want.errKind {
				t.Fatalf("err = %v, want kind %d", err, tc.want.errKind)
			}
			if kind == KindUntrusted && reason != tc.want.reason {
				t.Fatalf("error reason %q, want %q", reason, tc.want.reason)
			}
			wantResolved := ""
			if tc.want.resolved {
				wantResolved = d
			}
			if v.Result != tc.want.result || v.Reason != tc.want.reason || v.ResolvedDigest != wantResolved || v.KeyID != tc.want.keyID {
				t.Fatalf("verification %+v, want %+v (resolved %q)", v, tc.want, wantResolved)
			}
			if tc.want.resolved && v.Bytes != int64(len(data)) {
				t.Fatalf("Bytes = %d, want %d", v.Bytes, len(data))
			}
			if !strings.Contains(v.Message, tc.want.msg) {
				t.Fatalf("message %q does not contain %q", v.Message, tc.want.msg)
			}
			if !v.At.Equal(clk.Now()) {
				t.Fatalf("At %v, want %v", v.At, clk.Now())
			}
			if e.Digest != tc.want.digest || e.Verification == nil || *e.Verification != v {
				t.Fatalf("entry digest %q verification %+v; want digest %q and the verification", e.Digest, e.Verification, tc.want.digest)
			}
			// Recorded and persisted, pass or fail.
			again := mustOpen(t, Options{Path: path})
			if got, _ := again.Get(tc.reg.ID); !reflect.DeepEqual(got, e) {
				t.Fatalf("persisted %+v\nwant      %+v", got, e)
			}
		})
	}
	t.Run("unknown id", func(t *testing.T) {
		c := mustOpen(t, Options{})
		if _, _, err := c.Verify(t.Context(), "nope"); err == nil {
			t.Fatal("no error")
		} else if k, _ := kindOf(t, err); k != KindNotFound {
			t.Fatalf("err = %v, want KindNotFound", err)
		}
	})
}

// TestVerifyCanceled: a verification the caller's context ends says nothing
// about the artifact: KindInterrupted, nothing recorded.
func TestVerifyCanceled(t *testing.T) {
	data := randomBytes(t, 100)
	srv := artifactServer(t, data)
	file := filepath.Join(t.TempDir(), "a.bin")
	writeFile(t, file, data)
	for _, ref := range []string{file, srv.URL + "/good"} {
		c := mustOpen(t, Options{})
		if _, err := c.Register(Registration{ID: "m", Ref: ref, Digest: digestOf(data)}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, _, err := c.Verify(ctx, "m")
		var ce *Error
		if !errors.As(err, &ce) || ce.Kind != KindInterrupted {
			t.Fatalf("%s: Verify error = %v, want KindInterrupted", ref, err)
		}
		if e, _ := c.Get("m"); e.Verification != nil {
			t.Fatalf("%s: an interrupted verification was recorded: %+v", ref, e.Verification)
		}
	}
}

// TestVerifyStall: an http(s) read that stops making progress fails.
func TestVerifyStall(t *testing.T) {
	data := randomBytes(t, 100)
	srv := artifactServer(t, data)
	c := mustOpen(t, Options{})
	c.stall = 200 * time.Millisecond
	if _, err := c.Register(Registration{ID: "m", Ref: srv.URL + "/stall"}); err != nil {
		t.Fatal(err)
	}
	_, v, err := c.Verify(t.Context(), "m")
	if err != nil || v.Result != "fail" || v.Reason != ReasonUnreadable || !strings.Contains(v.Message, "no data") || v.Bytes != 10 {
		t.Fatalf("Verify = %+v, %v", v, err)
	}
}

// TestVerifyInterleaved: a verification that started before the recorded one
// is returned but does not overwrite it.
func TestVerifyInterleaved(t *testing.T) {
	oldBytes, newBytes := []byte("old weights"), []byte("new weights")
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	firstIn := make(chan struct{})
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			close(firstIn)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			w.Write(oldBytes)
			return
		}
		w.Write(newBytes)
	}))
	// LIFO: the held handler is released before Close waits for it, on
	// every path out of the test; the timer bounds a run that never gets
	// to release it.
	defer srv.Close()
	defer unblock()
	defer time.AfterFunc(10*time.Second, unblock).Stop()
	c := mustOpen(t, Options{Path: catalogPath(t)})
	if _, err := c.Register(Registration{ID: "m", Ref: srv.URL + "/m", Digest: digestOf(newBytes)}); err != nil {
		t.Fatal(err)
	}
	type res struct {
		v   Verification
		err error
	}
	first := make(chan res, 1)
	go func() {
		_, v, err := c.Verify(context.Background(), "m")
		first <- res{v, err}
	}()
	select {
	case <-firstIn:
	case r := <-first:
		t.Fatalf("first Verify ended before fetching: %+v, %v", r.v, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("first Verify never fetched the artifact")
	}
	_, second, err := c.Verify(t.Context(), "m")
	if err != nil || second.Result != "pass" {
		t.Fatalf("second Verify = %+v, %v", second, err)
	}
	unblock()
	var r res
	select {
	case r = <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("first Verify did not return after the artifact was released")
	}
	if r.err != nil || r.v.Result != "fail" || r.v.Reason != ReasonDigestMismatch {
		t.Fatalf("first Verify = %+v, %v", r.v, r.err)
	}
	if e, _ := c.Get("m"); e.Verification == nil || *e.Verification != second {
		t.Fatalf("recorded %+v, want the later-started %+v", e.Verification, second)
	}
}

func TestStrictGate(t *testing.T) {
	k1, k2 := newSigner(t), newSigner(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "a.bin")
	data := randomBytes(t, 500)
	d := digestOf(data)
	writeFile(t, art, data)
	path := filepath.Join(dir, "catalog.json")
	strict := func(keys ...signer) *Catalog {
		o := Options{Path: path, Policy: PolicyStrict}
		for _, k := range keys {
			o.TrustedKeys = append(o.TrustedKeys, k.b64)
		}
		return mustOpen(t, o)
	}
	expect := func(c *Catalog, to State, reason string) {
		t.Helper()
		_, err := c.SetState("m", to, 0)
		if k, r := kindOf(t, err); (reason == "" && err != nil) || (reason != "" && (k != KindUntrusted || r != reason)) {
			t.Fatalf("SetState(%s) = %v, want reason %q", to, err, reason)
		}
	}
	verify := func(c *Catalog, result string) {
		t.Helper()
		if _, v, _ := c.Verify(t.Context(), "m"); v.Result != result {
			t.Fatalf("Verify = %+v, want %s", v, result)
		}
	}

	c := strict(k1)
	if _, err := c.Register(Registration{ID: "m", Ref: art, Digest: d, Signature: k1.sign(d)}); err != nil {
		t.Fatal(err)
	}
	expect(c, Active, ReasonUnsigned) // never verified
	expect(c, Canary, ReasonUnsigned)
	writeFile(t, art, []byte("tampered"))
	verify(c, "fail")
	expect(c, Active, ReasonDigestMismatch) // the failed verification's reason
	if err := os.Remove(art); err != nil {
		t.Fatal(err)
	}
	verify(c, "fail")
	expect(c, Canary, ReasonUnreadable)
	writeFile(t, art, data)
	verify(c, "pass")
	expect(c, Canary, "")
	expect(c, Active, "")
	expect(c, Deprecated, "") // leaving service needs no verification
	// The verifying key is no longer trusted: verify again first.
	c = strict(k2)
	expect(c, Active, ReasonBadSignature)
	c = strict(k1, k2)
	expect(c, Active, "")

	// A pass recorded under permissive without a signature does not open the
	// gate once the policy is strict.
	perm := mustOpen(t, Options{Path: path})
	if _, err := perm.Register(Registration{ID: "u", Ref: art, Digest: d}); err != nil {
		t.Fatal(err)
	}
	if _, v, err := perm.Verify(t.Context(), "u"); err != nil || v.Result != "pass" {
		t.Fatalf("permissive Verify = %+v, %v", v, err)
	}
	c = strict(k1)
	if _, err := c.SetState("u", Active, 0); err == nil {
		t.Fatal("unsigned pass opened the strict gate")
	} else if k, r := kindOf(t, err); k != KindUntrusted || r != ReasonUnsigned {
		t.Fatalf("err = %v", err)
	}
	// Permissive has no gate.
	if _, err := perm.SetState("u", Active, 0); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkVerifyFile measures hashing throughput of a file artifact.
func BenchmarkVerifyFile(b *testing.B) {
	data := randomBytes(b, 16<<20)
	art := filepath.Join(b.TempDir(), "a.bin")
	writeFile(b, art, data)
	c := mustOpen(b, Options{})
	if _, err := c.Register(Registration{ID: "m", Ref: art, Digest: digestOf(data)}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, v, err := c.Verify(b.Context(), "m"); err != nil || v.Result != "pass" {
			b.Fatalf("Verify = %+v, %v", v, err)
		}
	}
}
