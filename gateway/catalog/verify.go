package catalog

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// trustedKey is one configured ed25519 public key and its id.
type trustedKey struct {
	pub ed25519.PublicKey
	id  string // first 16 hex digits of sha256(pub)
}

// parseKey decodes a standard base64 ed25519 public key.
func parseKey(s string) (trustedKey, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return trustedKey{}, fmt.Errorf("is not standard base64")
	}
	if len(b) != ed25519.PublicKeySize {
		return trustedKey{}, fmt.Errorf("decodes to %d bytes, an ed25519 public key has %d", len(b), ed25519.PublicKeySize)
	}
	return trustedKey{pub: ed25519.PublicKey(b), id: keyID(b)}, nil
}

// keyID is the first 16 hex digits of sha256(pub).
func keyID(pub []byte) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// verifySignature reports which trusted key, if any, signed the digest string.
func (c *Catalog) verifySignature(digest, sig string) (keyID string, ok bool) {
	s, err := decodeSignature(sig)
	if err != nil {
		return "", false
	}
	for _, k := range c.keys {
		if ed25519.Verify(k.pub, []byte(digest), s) {
			return k.id, true
		}
	}
	return "", false
}

// trustsKeyID reports whether id names a configured key.
func (c *Catalog) trustsKeyID(id string) bool {
	for _, k := range c.keys {
		if k.id == id {
			return true
		}
	}
	return false
}

// defaultClient reads http(s) refs when Options.HTTPClient is nil. There is no
// overall timeout (a large artifact may take long to stream): Verify fails a
// read that makes no progress for defaultTimeout instead. Connections are not
// kept: verifications are rare and a pool would only hold idle goroutines.
func defaultClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: defaultTimeout,
		DisableKeepAlives:     true,
		ForceAttemptHTTP2:     true,
		// The digest is of the bytes as served: a gzip Content-Encoding must
		// not be undone before hashing.
		DisableCompression: true,
	}}
}

// Verify reads the artifact of model id, hashes it and records the outcome as
// the entry's latest verification (persisted even when it fails). Under the
// permissive policy an entry without a digest is resolved: its digest becomes
// the one read. The error is nil when the verification ran (its Result says
// pass or fail) except under the strict policy, where a fail is a KindUntrusted
// error with the verification's reason; KindNotFound for an unknown id;
// KindStorage when the result could not be persisted (nothing recorded then).
//
// No lock is held while the artifact is read, so concurrent calls interleave;
// a verification that started before the one already recorded is returned but
// not recorded.
func (c *Catalog) Verify(ctx context.Context, id string) (Entry, Verification, error) {
	c.mu.Lock()
	rec, ok := c.records[id]
	if !ok {
		c.mu.Unlock()
		return Entry{}, Verification{}, errf(KindNotFound, "model %q is not registered", id)
	}
	c.vseq++
	seq := c.vseq
	ref := rec.e.Ref
	c.mu.Unlock()

	var v Verification
	v.ResolvedDigest, v.Bytes, v.Reason, v.Message = c.hash(ctx, ref)
	if err := ctx.Err(); err != nil {
		// The caller gave up (shutdown, its own bound): that says nothing
		// about the artifact, so nothing is recorded.
		return Entry{}, Verification{}, errf(KindInterrupted, "verification of model %q was interrupted (%v): nothing recorded; verify again", id, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	rec, ok = c.records[id]
	if !ok {
		return Entry{}, Verification{}, errf(KindNotFound, "model %q was removed while it was being verified", id)
	}
	v.At = c.timeNow()
	// Judge against the entry as it is now: another verification may have
	// resolved its digest meanwhile.
	resolved := c.judge(&rec.e, &v)
	cur := rec
	if seq > rec.vseq {
		next := &record{e: rec.e.clone(), vseq: seq}
		vv := v
		next.e.Verification = &vv
		if resolved {
			next.e.Digest = v.ResolvedDigest
		}
		next.e.UpdatedAt = v.At
		if err := c.commit(id, next); err != nil {
			return rec.e.clone(), v, err
		}
		cur = next
	}
	if c.policy == PolicyStrict && v.Result != resultPass {
		return cur.e.clone(), v, untrusted(v.Reason, "verification of model %q failed: %s", id, v.Message)
	}
	return cur.e.clone(), v, nil
}

// judge sets v's Result, Reason, KeyID and Message from what was read (v's
// ResolvedDigest, Bytes, and a Reason already set when reading failed) and
// the entry's declared digest and signature. It reports whether the entry's
// digest should become the resolved one.
func (c *Catalog) judge(e *Entry, v *Verification) (resolve bool) {
	fail := func(reason, format string, args ...any) {
		v.Result, v.Reason, v.Message = resultFail, reason, fmt.Sprintf(format, args...)
	}
	if v.Reason != "" { // reading failed; Message says why
		v.Result = resultFail
		return false
	}
	digest := e.Digest
	switch {
	case digest == "" && c.policy == PolicyStrict:
		fail(ReasonUnsigned, "no declared digest: the strict trust policy needs a signed digest (read %s)", v.ResolvedDigest)
		return false
	case digest == "":
		digest, resolve = v.ResolvedDigest, true
	case digest != v.ResolvedDigest:
		fail(ReasonDigestMismatch, "declared %s, read %s", digest, v.ResolvedDigest)
		return false
	}
	switch {
	case e.Signature == "" && c.policy == PolicyStrict:
		fail(ReasonUnsigned, "no signature: the strict trust policy needs one")
	case e.Signature == "":
		v.Result, v.Reason, v.Message = resultPass, ReasonOK, "digest matches; unsigned (permissive policy)"
	default:
		kid, ok := c.verifySignature(digest, e.Signature)
		if !ok {
			fail(ReasonBadSignature, "the signature does not verify over %s with any trusted key", digest)
			break
		}
		v.Result, v.Reason, v.KeyID, v.Message = resultPass, ReasonOK, kid, "digest matches; signed by key "+kid
	}
	if resolve {
		v.Message += "; digest resolved from the bytes read"
	}
	return resolve
}

// hash streams the artifact at ref through sha256, reading at most
// c.maxBytes. On failure reason is ReasonUnreadable or ReasonTooLarge and msg
// says why; digest is set only on success.
func (c *Catalog) hash(ctx context.Context, ref string) (digest string, n int64, reason, msg string) {
	var body io.Reader
	var stalled atomic.Bool
	if isHTTPRef(ref) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// One timer covers the wait for headers and every gap between reads.
		timer := time.AfterFunc(c.stall, func() { stalled.Store(true); cancel() })
		defer timer.Stop()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref, nil)
		if err != nil {
			return "", 0, ReasonUnreadable, "cannot build the request: " + urlErr(err)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			if stalled.Load() {
				return "", 0, ReasonUnreadable, fmt.Sprintf("GET: no answer for %s", c.stall)
			}
			return "", 0, ReasonUnreadable, "GET: " + urlErr(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return "", 0, ReasonUnreadable, "GET answered " + resp.Status
		}
		if resp.ContentLength > c.maxBytes {
			return "", 0, ReasonTooLarge, fmt.Sprintf("GET announces %d bytes, more than the %d allowed", resp.ContentLength, c.maxBytes)
		}
		body = &progressReader{r: resp.Body, timer: timer, d: c.stall}
	} else {
		p := filePath(ref)
		fi, err := os.Stat(p)
		if err != nil {
			return "", 0, ReasonUnreadable, err.Error()
		}
		if !fi.Mode().IsRegular() { // a FIFO or device could block or never end
			return "", 0, ReasonUnreadable, p + " is not a regular file"
		}
		if fi.Size() > c.maxBytes {
			return "", 0, ReasonTooLarge, fmt.Sprintf("%s has %d bytes, more than the %d allowed", p, fi.Size(), c.maxBytes)
		}
		// O_NONBLOCK: if the file was swapped for a FIFO since the Stat,
		// the open does not block; the open file is checked again.
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return "", 0, ReasonUnreadable, err.Error()
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			return "", 0, ReasonUnreadable, p + " is not a regular file"
		}
		body = &ctxReader{ctx: ctx, r: f}
	}
	limit := c.maxBytes
	if limit < math.MaxInt64 {
		limit++ // one byte more than allowed tells "too large" from "exactly the bound"
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(body, limit), make([]byte, 256<<10))
	switch {
	case err != nil && stalled.Load():
		return "", n, ReasonUnreadable, fmt.Sprintf("read: no data for %s after %d bytes", c.stall, n)
	case err != nil:
		return "", n, ReasonUnreadable, fmt.Sprintf("read failed after %d bytes: %s", n, urlErr(err))
	case n > c.maxBytes:
		return "", n, ReasonTooLarge, fmt.Sprintf("more than the %d bytes allowed", c.maxBytes)
	}
	return digestPrefix + hex.EncodeToString(h.Sum(nil)), n, "", ""
}

// urlErr renders err without the URL a *url.Error repeats (it may carry a
// presigned query) and as valid UTF-8.
func urlErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return strings.ToValidUTF8(err.Error(), "?")
}

// progressReader pushes the stall deadline back whenever bytes arrive.
type progressReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.timer.Reset(p.d)
	}
	return n, err
}

// ctxReader stops a file read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
