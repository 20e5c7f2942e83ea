package catalog

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// signer is an ed25519 key pair generated for a test.
type signer struct {
	priv ed25519.PrivateKey
	b64  string // the public key as Options.TrustedKeys holds it
	id   string // the KeyID a verification records
}

func newSigner(t testing.TB) signer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pub)
	return signer{priv: priv, b64: base64.StdEncoding.EncodeToString(pub), id: hex.EncodeToString(sum[:])[:16]}
}

// sign signs the exact digest string, as the Registration contract says.
func (s signer) sign(digest string) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(s.priv, []byte(digest)))
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustOpen(t testing.TB, o Options) *Catalog {
	t.Helper()
	c, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

// kindOf returns the kind and reason of a catalog error (0 for nil).
func kindOf(t testing.TB, err error) (ErrorKind, string) {
	t.Helper()
	if err == nil {
		return 0, ""
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *catalog.Error", err, err)
	}
	return e.Kind, e.Reason
}

// dirNames lists the names in dir.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func catalogPath(t testing.TB) string { return filepath.Join(t.TempDir(), "catalog.json") }
