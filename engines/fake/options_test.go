package fake

import (
	"errors"
	"testing"
)

// TestCheck: the checks and defaults every engine's fake shares.
func TestCheck(t *testing.T) {
	errMine := errors.New("mine")
	d := Defaults{Slots: 3, EngineVersion: "v", Model: "m"}
	o := Options{}
	if err := o.Check(d, errMine); err != nil {
		t.Fatal(err)
	}
	if o.Fail != FailNone || o.Slots != 3 || o.Ctx != DefaultCtx || o.EngineVersion != "v" || o.Model != "m" || o.Logger == nil {
		t.Fatalf("defaults not filled: %+v", o)
	}
	// An engine with its own meaning for Slots 0 keeps it.
	o = Options{}
	if err := o.Check(Defaults{}, errMine); err != nil || o.Slots != 0 {
		t.Fatalf("Slots = %d, %v", o.Slots, err)
	}
	for _, bad := range []Options{{Fail: "sometimes"}, {Slots: -1}, {ITL: -1}, {Ctx: 1}} {
		if err := bad.Check(d, errMine); !errors.Is(err, errMine) {
			t.Errorf("Check(%+v) = %v, want %v", bad, err, errMine)
		}
	}
}

func TestTextTokensAndFaultAt(t *testing.T) {
	f := func(tokens, n int, ignoreEOS bool, wantText int, wantEOS bool) {
		t.Helper()
		o := Options{Tokens: tokens}
		if text, eos := o.TextTokens(n, ignoreEOS); text != wantText || eos != wantEOS {
			t.Errorf("Tokens %d: TextTokens(%d, %v) = %d, %v", tokens, n, ignoreEOS, text, eos)
		}
	}
	f(0, 8, false, 8, false) // no cap
	f(3, 8, false, 3, true)  // the model's EOS cuts it short
	f(3, 8, true, 8, false)  // ignore_eos
	f(3, 3, false, 3, false) // the cap is not below the ask
	for mode, want := range map[string]int{FailNone: -1, FailStart500: -1, FailSplitUTF8: -1,
		FailMidstreamDisconnect: 3, FailStall: 2, FailMalformed: 2, FailMidstreamError: 2} {
		if got := FaultAt(mode); got != want {
			t.Errorf("FaultAt(%s) = %d, want %d", mode, got, want)
		}
	}
}

// TestDetokenizer: split pieces come out as whole characters, each when
// its last piece arrives.
func TestDetokenizer(t *testing.T) {
	g := NewGenerator(1, "p", true)
	var d Detokenizer
	var out []string
	for pos := 0; pos < 10; pos++ {
		piece, _ := g.Token(pos)
		if text, ok := d.Add(piece); ok {
			out = append(out, string(text))
		} else {
			out = append(out, "…")
		}
	}
	want := []string{"…", "😀", Text(1, "p", 2), "…", " 😂", Text(1, "p", 5), "…", "ö", "…", "日本"}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("Detokenizer gave %q, want %q", out, want)
		}
	}
}
