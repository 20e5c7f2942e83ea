// Package catalog is the gateway's model catalog (SPEC §9): the store of model
// artifacts that pools may serve, their lifecycle state, the trust policy that
// decides which artifacts may go live, and the verification record that backs it.
//
// # Model
//
// An Entry is registered in Draft with an id (the model name pools serve), a ref
// (where the artifact bytes are: an absolute file path, a file:// URL or an
// http(s) URL), and optionally a declared digest ("sha256:<hex>"), an ed25519
// signature over that digest string, an SBOM and an engine. Verify streams the
// artifact bytes, hashes them and records the outcome (pass/fail with a Reason)
// on the entry; a ref registered without a digest is resolved to the digest of
// the bytes actually read ("tag→digest resolution"), which is recorded as the
// entry's digest from then on.
//
// Lifecycle: Draft → Active|Canary; Active ⇄ Canary; Active|Canary → Deprecated;
// Deprecated → Active|Retired; Retired is terminal. Deprecated blocks new
// sessions; with a deadline existing sessions may continue until SessionsUntil,
// without one until the model is Retired. The gateway asks Lookup on every
// admission, so Lookup reads an immutable snapshot without locks or allocation.
//
// # Policies
//
// Permissive (the default) records everything and blocks nothing: unsigned
// artifacts verify as "pass" with an empty KeyID, and a signature, when one is
// given, must still verify against a trusted key. Strict refuses to register an
// artifact without a digest and a signature that verifies with one of the
// configured keys, makes a failed verification an error (KindUntrusted, shown as
// UNTRUSTED_ARTIFACT), and lets a model become Active or Canary only when its
// latest verification passed, was signed by a currently trusted key, and hashed
// to exactly the entry's digest.
//
// # Persistence
//
// With Options.Path set, every successful change and every recorded verification
// rewrites the whole catalog as {"version":1,"models":[...]} atomically (temp
// file in the same directory, fsync, rename). A failed write leaves the
// in-memory catalog as it was and reports KindStorage.
package catalog

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// State is a model's lifecycle state.
type State string

// The lifecycle states, in order.
const (
	Draft      State = "Draft"
	Active     State = "Active"
	Canary     State = "Canary"
	Deprecated State = "Deprecated"
	Retired    State = "Retired"
)

// States lists every state in lifecycle order.
var States = []State{Draft, Active, Canary, Deprecated, Retired}

// ParseState returns the state named s: the exact name ("Active") or its
// lowercase form ("active").
func ParseState(s string) (State, bool) {
	for _, st := range States {
		if s == string(st) || s == strings.ToLower(string(st)) {
			return st, true
		}
	}
	return "", false
}

// transitions lists the allowed targets of each state, in lifecycle order.
var transitions = map[State][]State{
	Draft:      {Active, Canary, Retired}, // Retired: withdrawn before it ever served
	Active:     {Canary, Deprecated},
	Canary:     {Active, Deprecated},
	Deprecated: {Active, Retired},
	Retired:    nil,
}

// Trust policies.
const (
	PolicyStrict     = "strict"
	PolicyPermissive = "permissive"
)

// Options configures a Catalog.
type Options struct {
	Path        string           // JSON file the catalog persists to; "" = memory only
	Policy      string           // PolicyStrict or PolicyPermissive ("" = permissive)
	TrustedKeys []string         // ed25519 public keys, standard base64 of the 32 raw bytes
	HTTPClient  *http.Client     // for http(s) refs; nil = a client without keep-alives (either way a read idle for 60 s fails)
	MaxBytes    int64            // bound on bytes hashed per verification; 0 = 1 TiB
	Now         func() time.Time // nil = time.Now
}

// Registration is the body of POST /v1/catalog/models.
type Registration struct {
	ID        string          `json:"id"`                  // required, ^[A-Za-z0-9._:/-]{1,128}$ ; the model name pools serve (pool `model`)
	Ref       string          `json:"ref"`                 // required: file:///abs/path, /abs/path, or http(s)://… (where the artifact bytes are)
	Digest    string          `json:"digest,omitempty"`    // "sha256:<64 lowercase hex>"; required under strict
	Signature string          `json:"signature,omitempty"` // standard base64 ed25519 signature over the exact Digest string bytes
	SBOM      json.RawMessage `json:"sbom,omitempty"`      // any JSON value, recorded as given (≤ 1 MiB)
	Engine    string          `json:"engine,omitempty"`    // optional: llamacpp|vllm|tgi|triton
}

// Verification is the outcome of one Verify.
type Verification struct {
	At             time.Time `json:"at"`
	Result         string    `json:"result"`                    // "pass" | "fail"
	Reason         string    `json:"reason"`                    // one of the Reason* constants
	ResolvedDigest string    `json:"resolved_digest,omitempty"` // sha256 of the bytes actually read
	Bytes          int64     `json:"bytes"`
	KeyID          string    `json:"key_id,omitempty"`  // first 16 hex of sha256(public key) that verified the signature
	Message        string    `json:"message,omitempty"` // human detail (no secrets)
}

// Verification results.
const (
	resultPass = "pass"
	resultFail = "fail"
)

// Reasons of a verification or of a KindUntrusted error. The set is bounded:
// the values become a metric label.
const (
	ReasonOK             = "ok"
	ReasonDigestMismatch = "digest_mismatch"
	ReasonUnsigned       = "unsigned"
	ReasonBadSignature   = "bad_signature"
	ReasonUnreadable     = "unreadable"
	ReasonTooLarge       = "too_large"
)

var reasons = []string{ReasonOK, ReasonDigestMismatch, ReasonUnsigned, ReasonBadSignature, ReasonUnreadable, ReasonTooLarge}

// Transition is one recorded lifecycle change.
type Transition struct {
	From       State     `json:"from"`
	To         State     `json:"to"`
	At         time.Time `json:"at"`
	DeadlineMs int64     `json:"deadline_ms,omitempty"` // only on →Deprecated with a deadline
}

// historyMax bounds Entry.History (the oldest transitions are dropped).
const historyMax = 64

// Entry is one catalogued model.
type Entry struct {
	ID            string          `json:"id"`
	Ref           string          `json:"ref"`
	Digest        string          `json:"digest,omitempty"`
	Signature     string          `json:"signature,omitempty"`
	Engine        string          `json:"engine,omitempty"`
	SBOM          json.RawMessage `json:"sbom,omitempty"`
	State         State           `json:"state"`
	Verification  *Verification   `json:"verification,omitempty"`   // the latest one
	SessionsUntil *time.Time      `json:"sessions_until,omitempty"` // Deprecated with a deadline: existing sessions may continue until then
	History       []Transition    `json:"history"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
}

// clone returns a deep copy of e.
func (e *Entry) clone() Entry {
	c := *e
	if e.SBOM != nil {
		c.SBOM = slices.Clone(e.SBOM)
	}
	if e.Verification != nil {
		v := *e.Verification
		c.Verification = &v
	}
	if e.SessionsUntil != nil {
		t := *e.SessionsUntil
		c.SessionsUntil = &t
	}
	c.History = append(make([]Transition, 0, len(e.History)), e.History...)
	return c
}

// ErrorKind classifies errors for the HTTP layer.
type ErrorKind int

// Error kinds and the HTTP answers they map to.
const (
	KindInvalid     ErrorKind = iota + 1 // 400 INVALID_PARAMS
	KindNotFound                         // 404
	KindExists                           // 409
	KindUntrusted                        // 400 UNTRUSTED_ARTIFACT
	KindConflict                         // 409: transition not allowed from the current state
	KindStorage                          // 500: persisting failed
	KindInterrupted                      // 503: the caller's context ended a verification; nothing recorded
)

// Error is the error type of every Catalog method except Open.
type Error struct {
	Kind   ErrorKind
	Reason string // a Reason* for KindUntrusted, else ""
	Msg    string
}

// Error returns the message (it already names the reason, if any).
func (e *Error) Error() string { return e.Msg }

func errf(k ErrorKind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

func untrusted(reason, format string, args ...any) *Error {
	return &Error{Kind: KindUntrusted, Reason: reason, Msg: "untrusted artifact (" + reason + "): " + fmt.Sprintf(format, args...)}
}

// record is a stored entry plus bookkeeping that is not part of the API.
type record struct {
	e Entry
	// vseq is the sequence number of the verification recorded in e; a
	// verification that started before it is not recorded over it.
	vseq uint64
}

// lookupVal is what admission needs to know about one model.
type lookupVal struct {
	state   State
	until   time.Time
	trusted bool // the strict gate passes: latest verification passed, signed by a trusted key, of exactly the digest
}

// Catalog is the model store. It is safe for concurrent use.
type Catalog struct {
	path     string
	policy   string
	keys     []trustedKey
	client   *http.Client
	stall    time.Duration // an http(s) read that makes no progress this long fails
	maxBytes int64
	now      func() time.Time

	mu      sync.RWMutex
	records map[string]*record
	vseq    uint64 // last verification sequence number handed out

	snap atomic.Pointer[map[string]lookupVal] // rebuilt after every change
}

// defaultMaxBytes is the hashing bound when Options.MaxBytes is 0.
const defaultMaxBytes = 1 << 40

// defaultTimeout is the inactivity bound of http(s) reads and responses.
const defaultTimeout = 60 * time.Second

// Open validates o and returns the catalog persisted at o.Path (empty when the
// file does not exist yet; nothing is created until the first change).
func Open(o Options) (*Catalog, error) {
	c := &Catalog{
		path:     o.Path,
		policy:   o.Policy,
		client:   o.HTTPClient,
		stall:    defaultTimeout,
		maxBytes: o.MaxBytes,
		now:      o.Now,
		records:  map[string]*record{},
	}
	switch c.policy {
	case "":
		c.policy = PolicyPermissive
	case PolicyStrict, PolicyPermissive:
	default:
		return nil, fmt.Errorf("catalog: policy %q: must be %q or %q", o.Policy, PolicyStrict, PolicyPermissive)
	}
	for i, k := range o.TrustedKeys {
		tk, err := parseKey(k)
		if err != nil {
			return nil, fmt.Errorf("catalog: trusted key %d (%.12q): %w", i, k, err)
		}
		c.keys = append(c.keys, tk)
	}
	switch {
	case c.maxBytes < 0:
		return nil, fmt.Errorf("catalog: max bytes %d: must not be negative", o.MaxBytes)
	case c.maxBytes == 0:
		c.maxBytes = defaultMaxBytes
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.client == nil {
		c.client = defaultClient()
	}
	if c.path != "" {
		// Fail at start, not at the first registration, when the file
		// could never be written.
		dir := filepath.Dir(c.path)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("catalog: the directory %s of %s does not exist", dir, c.path)
		}
		recs, err := load(c.path)
		if err != nil {
			return nil, err
		}
		for _, e := range recs {
			c.records[e.ID] = &record{e: e}
		}
	}
	c.publish()
	return c, nil
}

// Policy returns the trust policy in force (PolicyStrict or PolicyPermissive).
func (c *Catalog) Policy() string { return c.policy }

// timeNow returns the current time in UTC without a monotonic reading, so a
// stored time equals itself after a JSON round trip.
func (c *Catalog) timeNow() time.Time { return c.now().UTC().Round(0) }

// Register adds a new entry in Draft. Errors: KindInvalid for a malformed
// field (including a signature that is not 64 bytes of standard base64),
// KindExists when the id is taken, and under strict KindUntrusted with
// ReasonUnsigned (no digest or no signature) or ReasonBadSignature (no trusted
// key verifies the signature over the digest string). Nothing is stored on error.
func (c *Catalog) Register(r Registration) (Entry, error) {
	if err := validateRegistration(&r); err != nil {
		return Entry{}, err
	}
	if c.policy == PolicyStrict {
		if r.Digest == "" || r.Signature == "" {
			return Entry{}, untrusted(ReasonUnsigned, "the strict trust policy needs a digest and a signature over it")
		}
		if _, ok := c.verifySignature(r.Digest, r.Signature); !ok {
			return Entry{}, untrusted(ReasonBadSignature, "the signature does not verify over %s with any trusted key", r.Digest)
		}
	}
	now := c.timeNow()
	e := Entry{
		ID:        r.ID,
		Ref:       r.Ref,
		Digest:    r.Digest,
		Signature: r.Signature,
		Engine:    r.Engine,
		SBOM:      r.SBOM,
		State:     Draft,
		History:   []Transition{},
		CreatedAt: now,
		UpdatedAt: now,
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.records[r.ID]; ok {
		return Entry{}, errf(KindExists, "model %q is already registered", r.ID)
	}
	rec := &record{e: e}
	if err := c.commit(r.ID, rec); err != nil {
		return Entry{}, err
	}
	return rec.e.clone(), nil
}

// Get returns a deep copy of the entry id.
func (c *Catalog) Get(id string) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	rec, ok := c.records[id]
	if !ok {
		return Entry{}, false
	}
	return rec.e.clone(), true
}

// List returns deep copies of every entry, sorted by id.
func (c *Catalog) List() []Entry {
	c.mu.RLock()
	out := make([]Entry, 0, len(c.records))
	for _, rec := range c.records {
		out = append(out, rec.e.clone())
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Len returns the number of entries.
func (c *Catalog) Len() int { return len(*c.snap.Load()) }

// Lookup returns the state of model id and, when it is Deprecated with a
// deadline, until when its existing sessions may continue (zero otherwise).
// It is called on every admission: it takes no lock and does not allocate.
func (c *Catalog) Lookup(id string) (st State, sessionsUntil time.Time, ok bool) {
	v, ok := (*c.snap.Load())[id]
	return v.state, v.until, ok
}

// Trusted reports whether model id's latest verification passed, checked a
// signature by a currently trusted key and read exactly its digest — what
// the strict policy requires of a model that serves (ok: id is registered).
// Like Lookup it takes no lock and does not allocate.
func (c *Catalog) Trusted(id string) (trusted, ok bool) {
	v, ok := (*c.snap.Load())[id]
	return v.trusted, ok
}

// EachState calls fn with every model's id and state, in no order, from the
// lookup snapshot (no copies: for metrics).
func (c *Catalog) EachState(fn func(id string, st State)) {
	for id, v := range *c.snap.Load() {
		fn(id, v.state)
	}
}

// SetState moves model id to state to. deadline only matters for →Deprecated:
// > 0 lets existing sessions continue for that long (SessionsUntil), 0 until
// Retired. Errors: KindInvalid (unknown state, negative deadline), KindNotFound,
// KindConflict (not allowed from the current state; the message names the
// allowed targets), under strict KindUntrusted for →Active|Canary without a
// passing, signed verification of exactly the entry's digest, KindStorage.
func (c *Catalog) SetState(id string, to State, deadline time.Duration) (Entry, error) {
	if _, ok := transitions[to]; !ok {
		return Entry{}, errf(KindInvalid, "state %q: must be one of %s", to, joinStates(States))
	}
	if deadline < 0 {
		return Entry{}, errf(KindInvalid, "deadline %s: must not be negative", deadline)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, ok := c.records[id]
	if !ok {
		return Entry{}, errf(KindNotFound, "model %q is not registered", id)
	}
	from := rec.e.State
	allowed := transitions[from]
	if !slices.Contains(allowed, to) {
		if len(allowed) == 0 {
			return Entry{}, errf(KindConflict, "model %q is %s: no transition is allowed from %s", id, from, from)
		}
		return Entry{}, errf(KindConflict, "model %q is %s: it can move to %s, not %s", id, from, joinStates(allowed), to)
	}
	if c.policy == PolicyStrict && (to == Active || to == Canary) {
		if err := c.gate(&rec.e); err != nil {
			return Entry{}, err
		}
	}
	now := c.timeNow()
	next := &record{e: rec.e.clone(), vseq: rec.vseq}
	e := &next.e
	tr := Transition{From: from, To: to, At: now}
	e.SessionsUntil = nil
	if to == Deprecated && deadline > 0 {
		until := now.Add(deadline)
		e.SessionsUntil = &until
		tr.DeadlineMs = deadline.Milliseconds()
	}
	e.State = to
	e.History = append(e.History, tr)
	if n := len(e.History); n > historyMax {
		e.History = slices.Clone(e.History[n-historyMax:])
	}
	e.UpdatedAt = now
	if err := c.commit(id, next); err != nil {
		return Entry{}, err
	}
	return next.e.clone(), nil
}

// gate is the strict policy's check before a model may serve (→Active, →Canary).
func (c *Catalog) gate(e *Entry) error {
	v := e.Verification
	switch {
	case v == nil:
		return untrusted(ReasonUnsigned, "model %q was never verified", e.ID)
	case v.Result != resultPass:
		return untrusted(v.Reason, "the latest verification of model %q failed: %s", e.ID, v.Message)
	case v.ResolvedDigest != e.Digest:
		return untrusted(ReasonDigestMismatch, "the latest verification of model %q read %s, not %s", e.ID, v.ResolvedDigest, e.Digest)
	case v.KeyID == "":
		return untrusted(ReasonUnsigned, "the latest verification of model %q checked no signature", e.ID)
	case !c.trustsKeyID(v.KeyID):
		return untrusted(ReasonBadSignature, "model %q was verified with key %s, which is no longer trusted: verify it again", e.ID, v.KeyID)
	}
	return nil
}

// commit stores rec as entry id, persists the catalog and publishes the
// lookup snapshot; when persisting fails the previous entry is put back.
// c.mu must be held for writing.
func (c *Catalog) commit(id string, rec *record) error {
	prev, had := c.records[id]
	c.records[id] = rec
	if err := c.save(); err != nil {
		if had {
			c.records[id] = prev
		} else {
			delete(c.records, id)
		}
		return errf(KindStorage, "cannot persist the catalog: %v", err)
	}
	c.publish()
	return nil
}

// publish rebuilds the snapshot Lookup reads. c.mu must be held (or c unshared).
func (c *Catalog) publish() {
	m := make(map[string]lookupVal, len(c.records))
	for id, rec := range c.records {
		v := lookupVal{state: rec.e.State, trusted: c.gate(&rec.e) == nil}
		if rec.e.SessionsUntil != nil {
			v.until = *rec.e.SessionsUntil
		}
		m[id] = v
	}
	c.snap.Store(&m)
}

func joinStates(ss []State) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, "|")
}
