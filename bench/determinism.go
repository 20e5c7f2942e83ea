package bench

// The determinism suite (SPEC §11, `orch-bench determinism`): a stable corpus
// of (seed, prompt) cases streamed from two replicas of one replica set,
// straight through their engine adapters, and compared byte for byte.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/adapters"
)

// Determinism defaults.
const (
	// DefaultDeterminismSeeds is SPEC §11's 64 stable seeds.
	DefaultDeterminismSeeds = 64
	// DefaultDeterminismTokens is each case's max_tokens.
	DefaultDeterminismTokens = 32
	// DefaultDeterminismConcurrency is the number of cases in flight; each
	// case has one request in flight on each replica.
	DefaultDeterminismConcurrency = 4
	// DefaultDeterminismTimeout bounds one stream.
	DefaultDeterminismTimeout = 60 * time.Second
	// BuiltinPromptSet names the built-in prompts (BuiltinPrompts).
	BuiltinPromptSet = "builtin"
	// DeterminismFile is the file WriteDeterminismJSON writes.
	DeterminismFile = "determinism.json"
)

// maxPromptFile bounds a prompt-set file.
const maxPromptFile = 4 << 20

// builtinPrompts are the built-in prompt set, fixed forever so that runs on
// different days compare: plain English, a longer instruction with
// punctuation, a completion-style prompt ending in a colon, and a prompt
// with non-ASCII letters and punctuation (multi-byte UTF-8).
var builtinPrompts = [...]string{
	"Tell me a story about a lighthouse keeper.",
	"Explain, step by step, how a bicycle's gears change the effort needed to climb a steep hill.",
	"List three prime numbers greater than 100:",
	"Traduis en français : « Le café est chaud, la tasse est pleine. »",
}

// BuiltinPrompts returns the built-in prompt set (a fresh copy):
//
//	0 "Tell me a story about a lighthouse keeper."
//	1 "Explain, step by step, how a bicycle's gears change the effort needed to climb a steep hill."
//	2 "List three prime numbers greater than 100:"
//	3 "Traduis en français : « Le café est chaud, la tasse est pleine. »"
func BuiltinPrompts() []string {
	return append([]string(nil), builtinPrompts[:]...)
}

// LoadPrompts resolves a --prompt-set: "builtin" (or "") is BuiltinPrompts;
// anything else is a UTF-8 text file with one prompt per line (trailing
// \r are dropped, empty lines are skipped).
func LoadPrompts(set string) ([]string, error) {
	if set == "" || set == BuiltinPromptSet {
		return BuiltinPrompts(), nil
	}
	f, err := os.Open(set)
	if err != nil {
		return nil, fmt.Errorf("prompt set: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPromptFile+1))
	if err != nil {
		return nil, fmt.Errorf("prompt set %s: %w", set, err)
	}
	if len(data) > maxPromptFile {
		return nil, fmt.Errorf("prompt set %s: larger than %d bytes", set, maxPromptFile)
	}
	ps, err := parsePrompts(data)
	if err != nil {
		return nil, fmt.Errorf("prompt set %s: %w", set, err)
	}
	return ps, nil
}

// parsePrompts splits a prompt-set file into its prompts.
func parsePrompts(data []byte) ([]string, error) {
	var ps []string
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			continue
		}
		if !utf8.Valid(line) {
			return nil, fmt.Errorf("line %d is not valid UTF-8", n)
		}
		ps = append(ps, string(line))
	}
	if len(ps) == 0 {
		return nil, errors.New("no prompts (one prompt per line)")
	}
	return ps, nil
}

// DeterminismSeed returns the corpus's i-th seed: SplitMix64's output for
// the i-th step (its finalizer applied to (i+1)·0x9E3779B97F4A7C15), shifted
// right by 33 bits. The seeds look random, never change, and lie in
// [0, 2^31), so every engine reads them alike (llama.cpp's uint32, TGI's
// u64, vLLM's int) and none takes one for "random" (llama.cpp's -1).
func DeterminismSeed(i int) int64 {
	z := uint64(i+1) * 0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	z ^= z >> 31
	return int64(z >> 33)
}

// DeterminismCase is one (seed, prompt) of the corpus. Case k has seed
// index k / len(prompts) and prompt index k % len(prompts).
type DeterminismCase struct {
	Case      int
	SeedIndex int
	Seed      int64
	Prompt    int // index into the prompt set
}

// DeterminismCorpus returns seeds × len(prompts) cases in case order.
func DeterminismCorpus(seeds, prompts int) []DeterminismCase {
	if seeds <= 0 || prompts <= 0 {
		return nil
	}
	cs := make([]DeterminismCase, 0, seeds*prompts)
	for s := range seeds {
		seed := DeterminismSeed(s)
		for p := range prompts {
			cs = append(cs, DeterminismCase{Case: len(cs), SeedIndex: s, Seed: seed, Prompt: p})
		}
	}
	return cs
}

// DeterminismConfig is one `orch-bench determinism`.
type DeterminismConfig struct {
	// Engine names the replicas' engine and wire protocol (adapters.New).
	Engine string
	// Replicas are the two replicas' base URLs (loopback only).
	Replicas []string
	// Model is the model name for engines whose requests name it
	// (adapters.Options.Model; Triton requires it) and every request's Model.
	Model string
	// Seeds is the number of corpus seeds (default 64).
	Seeds int
	// Tokens is every request's max_tokens (default 32).
	Tokens int
	// PromptSet is "builtin" (default) or a file; see LoadPrompts.
	PromptSet string
	// Prompts, when set, replace PromptSet (tests).
	Prompts []string
	// Concurrency is the number of cases in flight (default 4).
	Concurrency int
	// Timeout bounds one stream (default 60 s) and each props read.
	Timeout time.Duration
	// AllowUnknownVersion compares replicas whose engine version cannot be
	// read. Replicas that report different versions are never compared.
	AllowUnknownVersion bool
}

// Check validates c and fills defaults (and Prompts from PromptSet).
func (c *DeterminismConfig) Check() error {
	var errs []error
	if c.Engine == "" {
		errs = append(errs, errors.New("--engine is required"))
	} else if !hasAdapter(c.Engine) {
		errs = append(errs, fmt.Errorf("--engine: %q has no adapter in this build (available: %s)",
			c.Engine, strings.Join(adapters.Engines(), ", ")))
	}
	if len(c.Replicas) != 2 {
		errs = append(errs, fmt.Errorf("name exactly two replicas of one replica set (--replica URL --replica URL), got %d", len(c.Replicas)))
	} else {
		for _, r := range c.Replicas {
			if _, err := ParseTarget(r); err != nil {
				errs = append(errs, fmt.Errorf("--replica: %w", err))
			}
		}
		if strings.TrimRight(c.Replicas[0], "/") == strings.TrimRight(c.Replicas[1], "/") {
			errs = append(errs, fmt.Errorf("--replica: both name %s; name two different replicas", c.Replicas[0]))
		}
	}
	if c.Seeds == 0 {
		c.Seeds = DefaultDeterminismSeeds
	}
	if c.Tokens == 0 {
		c.Tokens = DefaultDeterminismTokens
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultDeterminismConcurrency
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultDeterminismTimeout
	}
	if c.Seeds < 1 {
		errs = append(errs, fmt.Errorf("--seeds must be at least 1, got %d", c.Seeds))
	}
	if c.Tokens < 1 {
		errs = append(errs, fmt.Errorf("--tokens must be at least 1, got %d", c.Tokens))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency must be at least 1, got %d", c.Concurrency))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--timeout must not be negative, got %v", c.Timeout))
	}
	if len(c.Prompts) == 0 {
		ps, err := LoadPrompts(c.PromptSet)
		if err != nil {
			errs = append(errs, fmt.Errorf("--prompt-set: %w", err))
		}
		c.Prompts = ps
	}
	if c.PromptSet == "" {
		c.PromptSet = BuiltinPromptSet
	}
	return errors.Join(errs...)
}

func hasAdapter(engine string) bool {
	for _, e := range adapters.Engines() {
		if e == engine {
			return true
		}
	}
	return false
}

// ReplicaSetError is RunDeterminism's refusal: the two replicas are not (or
// cannot be shown to be) one replica set, so nothing is compared.
type ReplicaSetError struct {
	// Mismatches are the properties that differ: `engine_version "a" vs "b"`.
	Mismatches []string
	// Unknown says which replica's version cannot be read, and why.
	Unknown []string
}

func (e *ReplicaSetError) Error() string {
	const why = " — no determinism is assumed across versions (SPEC §11)"
	if len(e.Mismatches) > 0 {
		return "replicas are not one replica set: " + strings.Join(e.Mismatches, "; ") + why
	}
	return "cannot tell that the replicas are one replica set: " + strings.Join(e.Unknown, "; ") + why +
		"; --allow-unknown-version compares them anyway"
}

// DeterminismReport is determinism.json.
type DeterminismReport struct {
	Engine string `json:"engine"`
	// EngineVersion is the replicas' common engine version ("" when unknown).
	EngineVersion string `json:"engine_version"`
	// Model is the replicas' common model (what they report, else --model).
	Model       string `json:"model"`
	ModelDigest string `json:"model_digest,omitempty"`
	// VersionUnchecked is set when --allow-unknown-version let replicas of
	// unknown version be compared.
	VersionUnchecked bool                 `json:"version_unchecked,omitempty"`
	Replicas         []DeterminismReplica `json:"replicas"`
	Seeds            int                  `json:"seeds"`
	// SeedValues are the corpus seeds, in seed-index order.
	SeedValues []int64  `json:"seed_values"`
	PromptSet  string   `json:"prompt_set"`
	Prompts    []string `json:"prompts"`
	// Tokens is every request's max_tokens.
	Tokens      int `json:"tokens"`
	Concurrency int `json:"concurrency"`
	// Cases is the number of cases compared (both streams complete);
	// PlannedCases is seeds × prompts.
	Cases        int `json:"cases"`
	PlannedCases int `json:"planned_cases"`
	// TokensCompared is the sum of replica a's tokens_out over the compared
	// cases.
	TokensCompared int64                   `json:"tokens_compared"`
	Differences    []DeterminismDifference `json:"differences"`
	// Errors are engine failures; the cases they hit were not compared, and
	// no case is started after the first one.
	Errors      []DeterminismError `json:"errors,omitempty"`
	Interrupted bool               `json:"interrupted,omitempty"`
	StartedAt   time.Time          `json:"started_at"`
	DurationS   float64            `json:"duration_s"`
}

// DeterminismReplica is what one replica reported about itself.
type DeterminismReplica struct {
	URL           string `json:"url"`
	EngineVersion string `json:"engine_version"`
	Model         string `json:"model,omitempty"`
	ModelDigest   string `json:"model_digest,omitempty"`
}

// DeterminismDifference is one case whose streams differ.
type DeterminismDifference struct {
	Case   int   `json:"case"`
	Seed   int64 `json:"seed"`
	Prompt int   `json:"prompt"`
	// Kinds say what differs: "text" (the bytes), "token_boundaries" (same
	// bytes, split into tokens differently), "tokens_out", "finish_reason".
	Kinds []string `json:"kinds"`
	// FirstToken is the first token index at which the token streams differ
	// (-1 when they are identical); FirstByte the first byte offset at which
	// the texts differ (-1 when identical).
	FirstToken int               `json:"first_token"`
	FirstByte  int               `json:"first_byte"`
	A          DeterminismStream `json:"a"`
	B          DeterminismStream `json:"b"`
}

// DeterminismStream is one replica's stream of one case.
type DeterminismStream struct {
	Text string `json:"text"`
	// Tokens is the number of engine frames that carried text.
	Tokens       int    `json:"tokens"`
	TokensOut    int    `json:"tokens_out"`
	FinishReason string `json:"finish_reason"`
}

// DeterminismError is one engine failure.
type DeterminismError struct {
	Case    int    `json:"case"`
	Seed    int64  `json:"seed"`
	Prompt  int    `json:"prompt"`
	Replica string `json:"replica"`
	// Kind is the engines.ErrorKind name, "timeout", or "client".
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Failed reports whether the comparison is incomplete: engine errors or an
// interrupt.
func (r *DeterminismReport) Failed() bool { return len(r.Errors) > 0 || r.Interrupted }

// RunDeterminism reads both replicas' props, refuses (*ReplicaSetError)
// unless they are one replica set, then streams every corpus case from both
// replicas through their adapters (c.Concurrency cases at a time, each with
// one request on each replica) and compares the streams byte for byte. A
// props failure is returned as an error; stream failures are recorded in the
// report's Errors, and no new case starts after one. Canceling ctx stops the
// run; the report then says interrupted.
func RunDeterminism(ctx context.Context, c DeterminismConfig) (*DeterminismReport, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: loopbackControl}
	var ads [2]engines.Adapter
	for i, u := range c.Replicas {
		a, err := adapters.New(c.Engine, u, adapters.Options{Model: c.Model, MaxIdleConns: c.Concurrency + 2, Dial: dialer.DialContext})
		if err != nil {
			return nil, fmt.Errorf("replica %s: %w", u, err)
		}
		ads[i] = a
		if cl, ok := a.(engines.Closer); ok {
			defer cl.Close()
		}
	}
	rep := &DeterminismReport{
		Engine:      c.Engine,
		Seeds:       c.Seeds,
		PromptSet:   c.PromptSet,
		Prompts:     c.Prompts,
		Tokens:      c.Tokens,
		Concurrency: c.Concurrency,
		Differences: []DeterminismDifference{},
		StartedAt:   time.Now().UTC(),
	}
	if err := checkReplicaSet(ctx, &c, ads, rep); err != nil {
		return nil, err
	}
	corpus := DeterminismCorpus(c.Seeds, len(c.Prompts))
	rep.PlannedCases = len(corpus)
	for s := range c.Seeds {
		rep.SeedValues = append(rep.SeedValues, DeterminismSeed(s))
	}
	outcomes := make([]caseOutcome, len(corpus))
	var (
		next    atomic.Int64
		stopped atomic.Bool
		wg      sync.WaitGroup
	)
	for range min(c.Concurrency, len(corpus)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped.Load() && ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= len(corpus) {
					return
				}
				o := &outcomes[k]
				runCase(ctx, &c, ads, corpus[k], o)
				if o.errs[0] != nil || o.errs[1] != nil {
					stopped.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	rep.Interrupted = ctx.Err() != nil
	for k, cs := range corpus {
		o := &outcomes[k]
		if !o.ran {
			continue
		}
		failed := false
		for i, err := range o.errs {
			if err == nil {
				continue
			}
			failed = true
			if rep.Interrupted && errors.Is(err, context.Canceled) {
				continue // the interrupt, not the engine
			}
			rep.Errors = append(rep.Errors, DeterminismError{Case: cs.Case, Seed: cs.Seed, Prompt: cs.Prompt,
				Replica: c.Replicas[i], Kind: errorKind(err), Message: err.Error()})
		}
		if failed {
			continue
		}
		rep.Cases++
		rep.TokensCompared += int64(o.rec[0].res.TokensOut)
		if d, ok := compareStreams(&o.rec[0], &o.rec[1]); ok {
			d.Case, d.Seed, d.Prompt = cs.Case, cs.Seed, cs.Prompt
			rep.Differences = append(rep.Differences, d)
		}
	}
	rep.DurationS = time.Since(rep.StartedAt).Seconds()
	return rep, nil
}

// checkReplicaSet reads both replicas' props and refuses unless they are one
// replica set; it fills the report's replica fields.
func checkReplicaSet(ctx context.Context, c *DeterminismConfig, ads [2]engines.Adapter, rep *DeterminismReport) error {
	var props [2]engines.Props
	var unknown []string
	for i, a := range ads {
		p, ok := a.(engines.Prober)
		if !ok {
			unknown = append(unknown, fmt.Sprintf("replica %s: the %s adapter cannot read its props, so its engine version is unknown", c.Replicas[i], c.Engine))
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, c.Timeout)
		pr, err := p.Props(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("replica %s: cannot read its props: %w", c.Replicas[i], err)
		}
		props[i] = pr
		if pr.EngineVersion == "" {
			unknown = append(unknown, fmt.Sprintf("replica %s reports no engine version", c.Replicas[i]))
		}
	}
	a, b := props[0], props[1]
	var mism []string
	if a.EngineVersion != "" && b.EngineVersion != "" && a.EngineVersion != b.EngineVersion {
		mism = append(mism, fmt.Sprintf("engine_version %q vs %q", a.EngineVersion, b.EngineVersion))
	}
	if a.Model != "" && b.Model != "" && a.Model != b.Model {
		mism = append(mism, fmt.Sprintf("model %q vs %q", a.Model, b.Model))
	}
	if a.ModelDigest != "" && b.ModelDigest != "" && a.ModelDigest != b.ModelDigest {
		mism = append(mism, fmt.Sprintf("model_digest %q vs %q", a.ModelDigest, b.ModelDigest))
	}
	if len(mism) > 0 {
		return &ReplicaSetError{Mismatches: mism, Unknown: unknown}
	}
	if len(unknown) > 0 {
		if !c.AllowUnknownVersion {
			return &ReplicaSetError{Unknown: unknown}
		}
		rep.VersionUnchecked = true
	}
	for i, p := range props {
		rep.Replicas = append(rep.Replicas, DeterminismReplica{URL: c.Replicas[i], EngineVersion: p.EngineVersion,
			Model: p.Model, ModelDigest: p.ModelDigest})
	}
	rep.EngineVersion = cmp.Or(a.EngineVersion, b.EngineVersion)
	if a.EngineVersion == "" || b.EngineVersion == "" {
		rep.EngineVersion = "" // not known for both: no common version
	}
	rep.Model = cmp.Or(a.Model, b.Model, c.Model)
	rep.ModelDigest = cmp.Or(a.ModelDigest, b.ModelDigest)
	return nil
}

// streamRecord is one replica's stream of one case.
type streamRecord struct {
	text []byte
	ends []int // end offset of each token in text
	res  engines.Result
}

// Token implements engines.Sink.
func (r *streamRecord) Token(t []byte) {
	r.text = append(r.text, t...)
	r.ends = append(r.ends, len(r.text))
}

// Flush implements engines.Sink.
func (r *streamRecord) Flush() {}

// token returns token i's bytes.
func (r *streamRecord) token(i int) []byte {
	start := 0
	if i > 0 {
		start = r.ends[i-1]
	}
	return r.text[start:r.ends[i]]
}

type caseOutcome struct {
	ran  bool
	rec  [2]streamRecord
	errs [2]error
}

// runCase streams one case from both replicas at once.
func runCase(ctx context.Context, c *DeterminismConfig, ads [2]engines.Adapter, cs DeterminismCase, o *caseOutcome) {
	o.ran = true
	var wg sync.WaitGroup
	for i := range ads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &engines.Request{
				TaskID:    "determinism-" + strconv.Itoa(cs.Case) + "-" + string(rune('a'+i)),
				Model:     c.Model,
				Prompt:    c.Prompts[cs.Prompt],
				MaxTokens: c.Tokens,
				Seed:      cs.Seed,
				// No KV reuse: a cached prefix changes the numerics on
				// real engines (ENGINES.md "Determinism").
				CachePrompt: false,
			}
			sctx, cancel := context.WithTimeout(ctx, c.Timeout)
			defer cancel()
			res, err := ads[i].Stream(sctx, req, &o.rec[i])
			if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				err = fmt.Errorf("%w: no terminal frame within --timeout %v", errTimeout, c.Timeout)
			}
			o.rec[i].res, o.errs[i] = res, err
		}()
	}
	wg.Wait()
}

var errTimeout = errors.New("timeout")

func errorKind(err error) string {
	if e, ok := engines.AsError(err); ok {
		return e.Kind.String()
	}
	if errors.Is(err, errTimeout) {
		return "timeout"
	}
	return "client"
}

// compareStreams compares two streams of one case; ok is false when they
// are identical.
func compareStreams(a, b *streamRecord) (d DeterminismDifference, ok bool) {
	d.FirstToken, d.FirstByte = -1, -1
	n := min(len(a.ends), len(b.ends))
	for i := range n {
		if !bytes.Equal(a.token(i), b.token(i)) {
			d.FirstToken = i
			break
		}
	}
	if d.FirstToken < 0 && len(a.ends) != len(b.ends) {
		d.FirstToken = n
	}
	if !bytes.Equal(a.text, b.text) {
		d.FirstByte = commonPrefix(a.text, b.text)
		d.Kinds = append(d.Kinds, "text")
	} else if d.FirstToken >= 0 {
		d.Kinds = append(d.Kinds, "token_boundaries")
	}
	if a.res.TokensOut != b.res.TokensOut {
		d.Kinds = append(d.Kinds, "tokens_out")
	}
	if a.res.FinishReason != b.res.FinishReason {
		d.Kinds = append(d.Kinds, "finish_reason")
	}
	if len(d.Kinds) == 0 {
		return d, false
	}
	d.A, d.B = a.summary(), b.summary()
	return d, true
}

func (r *streamRecord) summary() DeterminismStream {
	return DeterminismStream{Text: string(r.text), Tokens: len(r.ends), TokensOut: r.res.TokensOut, FinishReason: r.res.FinishReason}
}

func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// excerpt returns up to before bytes of s before at and after bytes from at,
// cut on character boundaries, with "…" where it cut.
func excerpt(s string, at, before, after int) string {
	at = max(0, min(at, len(s)))
	lo, hi := max(0, at-before), min(len(s), at+after)
	for lo > 0 && lo < len(s) && !utf8.RuneStart(s[lo]) {
		lo++
	}
	for hi < len(s) && hi > lo && !utf8.RuneStart(s[hi]) {
		hi--
	}
	if lo > hi {
		lo = hi
	}
	out := s[lo:hi]
	if lo > 0 {
		out = "…" + out
	}
	if hi < len(s) {
		out += "…"
	}
	return out
}

// WriteDeterminismText prints every difference (case, first differing token,
// both texts excerpted), the errors, and the summary line
// "S seeds × P prompts: N cases, D differences".
func WriteDeterminismText(w io.Writer, r *DeterminismReport) error {
	bw := &errWriter{w: w}
	ver := r.EngineVersion
	if ver == "" {
		ver = "(version unknown)"
	}
	bw.printf("determinism: %s %s, model %q, %d tokens per case\n", r.Engine, ver, r.Model, r.Tokens)
	for i, rp := range r.Replicas {
		bw.printf("  %c %s\n", 'a'+i, rp.URL)
	}
	for _, d := range r.Differences {
		bw.printf("case %d (seed %d, prompt %d): %s", d.Case, d.Seed, d.Prompt, strings.Join(d.Kinds, ", "))
		if d.FirstToken >= 0 {
			bw.printf("; first difference at token %d", d.FirstToken)
		}
		if d.FirstByte >= 0 {
			bw.printf(" (byte %d)", d.FirstByte)
		}
		bw.printf("; tokens_out %d vs %d; finish_reason %q vs %q\n", d.A.TokensOut, d.B.TokensOut, d.A.FinishReason, d.B.FinishReason)
		at := d.FirstByte
		if at < 0 {
			at = 0
		}
		bw.printf("  a: %q\n  b: %q\n", excerpt(d.A.Text, at, 48, 48), excerpt(d.B.Text, at, 48, 48))
	}
	for _, e := range r.Errors {
		bw.printf("case %d (seed %d, prompt %d): replica %s: %s error: %s\n", e.Case, e.Seed, e.Prompt, e.Replica, e.Kind, e.Message)
	}
	bw.printf("%d seeds × %d prompts: %d cases, %d differences\n", r.Seeds, len(r.Prompts), r.Cases, len(r.Differences))
	if r.Cases < r.PlannedCases {
		why := "engine errors"
		if r.Interrupted {
			why = "interrupted"
		}
		bw.printf("incomplete: %d of %d cases not compared (%s)\n", r.PlannedCases-r.Cases, r.PlannedCases, why)
	}
	return bw.err
}

// WriteDeterminismJSON writes r as dir/determinism.json.
func WriteDeterminismJSON(dir string, r *DeterminismReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	return writeFile(filepath.Join(dir, DeterminismFile), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	})
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
