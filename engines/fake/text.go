package fake

import (
	"unicode/utf8"
)

// The fake model's vocabulary, shaped like a llama SPM vocabulary of 32000
// pieces: 0 <unk>, 1 <s>, 2 </s>, 3..258 byte tokens, the rest words.
const (
	// BOS is the beginning-of-sequence token id (`<s>`).
	BOS = 1
	// EOS is the end-of-sequence token id (`</s>`).
	EOS = 2
	// SpaceID is the id of the lone "▁" piece a trailing space becomes.
	SpaceID = 29871
	// VocabSize is the size of the fake vocabulary.
	VocabSize = 32000

	firstWordID = 259
)

// words are the fake model's plain tokens: ASCII, lowercase, no spaces, so
// " "+word is a SentencePiece-style token that never splits a character.
var words = [256]string{
	"alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "maple",
	"amber", "harbor", "lantern", "meadow", "silver", "copper", "garden", "window",
	"bridge", "candle", "forest", "valley", "summer", "winter", "autumn", "spring",
	"orange", "purple", "yellow", "violet", "crimson", "indigo", "scarlet", "ivory",
	"north", "south", "east", "west", "table", "chair", "paper", "pencil",
	"castle", "tower", "market", "village", "island", "desert", "canyon", "glacier",
	"falcon", "badger", "otter", "heron", "salmon", "raven", "beaver", "lynx",
	"apple", "pear", "plum", "cherry", "lemon", "melon", "grape", "olive",
	"quiet", "rapid", "gentle", "bright", "hollow", "narrow", "steady", "simple",
	"engine", "signal", "vector", "matrix", "kernel", "buffer", "socket", "packet",
	"harvest", "thunder", "breeze", "shadow", "mirror", "compass", "anchor", "saddle",
	"music", "rhythm", "melody", "chorus", "violin", "trumpet", "piano", "flute",
	"basket", "blanket", "bottle", "button", "carpet", "ladder", "needle", "pocket",
	"orbit", "comet", "planet", "nebula", "quasar", "meteor", "galaxy", "photon",
	"bread", "butter", "cheese", "honey", "pepper", "salt", "sugar", "flour",
	"walk", "run", "jump", "swim", "climb", "sing", "read", "write",
	"the", "a", "of", "and", "to", "in", "is", "that",
	"for", "with", "on", "as", "by", "at", "from", "this",
	"early", "late", "near", "far", "high", "low", "deep", "wide",
	"history", "science", "story", "poem", "letter", "answer", "question", "reason",
	"morning", "evening", "midnight", "sunrise", "sunset", "season", "moment", "minute",
	"doctor", "farmer", "sailor", "baker", "painter", "teacher", "pilot", "miner",
	"circle", "square", "triangle", "spiral", "line", "point", "angle", "curve",
	"coffee", "tea", "water", "milk", "juice", "soup", "rice", "bean",
	"friend", "family", "neighbor", "stranger", "guest", "host", "crowd", "team",
	"open", "close", "begin", "finish", "build", "break", "carry", "follow",
	"wooden", "golden", "woolen", "frozen", "broken", "hidden", "sudden", "silent",
	"ocean", "lake", "pond", "creek", "marsh", "dune", "cliff", "cave",
	"token", "stream", "slot", "queue", "batch", "cache", "model", "prompt",
	"zebra", "tiger", "eagle", "whale", "koala", "panda", "camel", "moose",
	"velvet", "cotton", "linen", "silk", "leather", "canvas", "denim", "satin",
	"one", "two", "three", "four", "five", "six", "seven", "eight",
}

// spaced holds " "+word for every word, so tokens allocate nothing.
var spaced [len(words)]string

func init() {
	for i, w := range words {
		spaced[i] = " " + w
	}
}

// Text returns the text of the fake model's token at pos (0-based) for a
// request with this seed and prompt: a plain ASCII word with a leading space
// (" alpha"). It is a pure function of its arguments — never of the engine,
// model or slot — so every engine's fake yields the same text for the same
// request.
func Text(seed int64, prompt string, pos int) string {
	return NewGenerator(seed, prompt, false).wordText(pos)
}

// TokenID returns the id of the token Text(seed, prompt, pos) returns.
func TokenID(seed int64, prompt string, pos int) int {
	_, id := NewGenerator(seed, prompt, false).Token(pos)
	return id
}

// WordID returns the fake vocabulary id of a word (without its leading
// space): the id a prompt word tokenizes to, and the id of a generated token
// with that text, so a follow-up prompt that repeats earlier output shares a
// prefix with the slot's cache.
func WordID(word string) int {
	// FNV-1a 32.
	h := uint32(2166136261)
	for i := 0; i < len(word); i++ {
		h ^= uint32(word[i])
		h *= 16777619
	}
	return firstWordID + int(h%uint32(SpaceID-firstWordID))
}

// Generator yields one request's tokens; it hashes the prompt once, so use
// it rather than Text when producing many positions.
type Generator struct {
	h         uint64
	splitUTF8 bool
}

// NewGenerator returns the generator for (seed, prompt). With splitUTF8 the
// tokens follow a fixed pattern of multi-byte characters split across tokens
// (see Token); otherwise every token is Text(seed, prompt, pos).
func NewGenerator(seed int64, prompt string, splitUTF8 bool) Generator {
	// FNV-1a 64 of the prompt, mixed with the seed.
	h := uint64(14695981039346656037)
	for i := 0; i < len(prompt); i++ {
		h ^= uint64(prompt[i])
		h *= 1099511628211
	}
	return Generator{h: h ^ mix(uint64(seed)), splitUTF8: splitUTF8}
}

func mix(x uint64) uint64 {
	// splitmix64 finaliser.
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

func (g Generator) word(pos int) int {
	return int(mix(g.h^uint64(pos)*0xC2B2AE3D27D4EB4F) % uint64(len(words)))
}

func (g Generator) wordText(pos int) string { return spaced[g.word(pos)] }

// splitPieces is the split-UTF-8 pattern, repeating every 10 positions: an
// entry with text "" is a plain word token. Pieces that end inside a
// character are completed by the next piece, as a byte-fallback tokenizer
// emits them: "😀", " 😂", "ö", "日本".
var splitPieces = [10]struct {
	text string
	id   int
}{
	{"\xF0\x9F", 29871 + 1},         // first half of 😀
	{"\x98\x80", 29871 + 2},         // completes 😀
	{"", 0},                         // word
	{" \xF0\x9F\x98", 29871 + 3},    // " " + first 3 bytes of 😂
	{"\x82", 3 + 0x82},              // byte token completing 😂
	{"", 0},                         // word
	{"\xC3", 3 + 0xC3},              // byte token: lead of ö
	{"\xB6", 3 + 0xB6},              // completes ö
	{"\xE6\x97", 29871 + 4},         // first 2 bytes of 日
	{"\xA5\xE6\x9C\xAC", 29871 + 5}, // completes 日, then 本
}

// Token returns the bytes of the token at pos and its id. Without splitUTF8
// the bytes are Text(seed, prompt, pos). With splitUTF8 the sequence repeats
// every 10 positions: pieces of "😀", a word, pieces of " 😂", a word,
// pieces of "ö", pieces of "日本"; a piece may end inside a character, so
// callers must join pieces until the text is valid UTF-8 (see Complete).
func (g Generator) Token(pos int) (text string, id int) {
	if g.splitUTF8 {
		if p := splitPieces[pos%len(splitPieces)]; p.text != "" {
			return p.text, p.id
		}
	}
	w := g.word(pos)
	return spaced[w], WordID(words[w])
}

// Complete reports whether b ends at a character boundary, the test
// llama.cpp applies before it sends a frame: an incomplete multi-byte
// sequence at the end means "withhold". Invalid bytes elsewhere count as
// complete (the JSON encoder replaces them with U+FFFD).
func Complete(b []byte) bool {
	// Look back at most 3 bytes for a lead byte whose sequence overruns b.
	for i := 1; i <= 3 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 {
			return true
		}
		if c >= 0xC0 { // lead byte
			need := 0
			switch {
			case c >= 0xF0:
				need = 4
			case c >= 0xE0:
				need = 3
			default:
				need = 2
			}
			return i >= need
		}
	}
	return true
}

// Detokenizer releases generated text at character boundaries, as the
// engines' incremental detokenizers do: a piece that ends inside a
// multi-byte character is held until a later piece completes it (see
// Complete). The zero value is ready to use.
type Detokenizer struct{ pending []byte }

// Add appends a token's piece and returns the text it completes with true,
// or false while a character is still cut. The text is valid until the
// next Add.
func (d *Detokenizer) Add(piece string) ([]byte, bool) {
	d.pending = append(d.pending, piece...)
	if !Complete(d.pending) {
		return nil, false
	}
	text := d.pending
	d.pending = d.pending[:0]
	return text, true
}

// CountTokens is the fake tokenizer's count for a prompt: BOS, one token per
// whitespace-separated word, and one more when the prompt ends in
// whitespace (SentencePiece's lone "▁"). It matches the real capture:
// "Hello" is 2 tokens, "Hello world " × 1200 is 2402.
func CountTokens(prompt string) int {
	return len(Tokenize(nil, prompt, true))
}

// Tokenize appends the fake tokenizer's ids for text to dst (see
// CountTokens); addBOS prepends BOS, as llama.cpp does for completions.
func Tokenize(dst []int32, text string, addBOS bool) []int32 {
	if addBOS {
		dst = append(dst, BOS)
	}
	start := -1
	for i := 0; i < len(text); {
		r, size := rune(text[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(text[i:])
		}
		if isSpace(r) {
			if start >= 0 {
				dst = append(dst, int32(WordID(text[start:i])))
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i += size
	}
	if start >= 0 {
		dst = append(dst, int32(WordID(text[start:])))
	} else if len(text) > 0 {
		dst = append(dst, SpaceID)
	}
	return dst
}

func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0x85, 0xA0:
		return true
	}
	return r > 0xFF && (r == 0x1680 || (r >= 0x2000 && r <= 0x200A) || r == 0x2028 || r == 0x2029 || r == 0x202F || r == 0x205F || r == 0x3000)
}
