package enginetest

import (
	"strings"
	"sync"
)

// RecSink records what an adapter delivers. It is safe for concurrent use
// (a test reads it while a stream runs).
type RecSink struct {
	// OnToken, when set, is called after each token with the count so far.
	OnToken func(n int)
	// OnFlush, when set, is called after each flush.
	OnFlush func()

	mu      sync.Mutex
	tokens  []string
	flushes int
	log     strings.Builder
}

// Token records a copy of text.
func (s *RecSink) Token(text []byte) {
	s.mu.Lock()
	s.tokens = append(s.tokens, string(text))
	s.log.WriteByte('T')
	n := len(s.tokens)
	s.mu.Unlock()
	if s.OnToken != nil {
		s.OnToken(n)
	}
}

// Flush records a flush.
func (s *RecSink) Flush() {
	s.mu.Lock()
	s.flushes++
	s.log.WriteByte('F')
	s.mu.Unlock()
	if s.OnFlush != nil {
		s.OnFlush()
	}
}

// Tokens returns the tokens so far.
func (s *RecSink) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// Text returns the tokens so far, joined.
func (s *RecSink) Text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tokens, "")
}

// Flushes returns the number of flushes so far.
func (s *RecSink) Flushes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushes
}

// Log returns the calls so far in order: "T" per token, "F" per flush.
func (s *RecSink) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// NopSink discards everything.
type NopSink struct{}

// Token does nothing.
func (NopSink) Token([]byte) {}

// Flush does nothing.
func (NopSink) Flush() {}

// CountSink counts calls (benchmarks: it allocates nothing).
type CountSink struct{ Tokens, Flushes int }

// Token counts a token.
func (s *CountSink) Token([]byte) { s.Tokens++ }

// Flush counts a flush.
func (s *CountSink) Flush() { s.Flushes++ }
