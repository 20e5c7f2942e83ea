package faketest

import (
	"testing"
)

func TestShape(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		if got := Shape(t, []byte(doc)); got != want {
			t.Errorf("Shape(%s) = %s, want %s", doc, got, want)
		}
	}
	f(`{"a":1,"b":1.5,"c":"x","d":true,"e":null}`, "{a:int,b:float,c:string,d:bool,e:null}")
	f(`{"z":[],"y":[1,"s",{"k":2e3}]}`, "{z:[],y:[int,string,{k:float}]}")
	f(` [ {} ] `, "[{}]")
}

func TestEvents(t *testing.T) {
	got := Events(t, []byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"))
	if len(got) != 2 || string(got[0]) != `{"a":1}` || string(got[1]) != "[DONE]" {
		t.Fatalf("Events = %q", got)
	}
	if len(Events(t, nil)) != 0 {
		t.Fatal("Events of an empty body")
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, "three polls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("polled %d times", n)
	}
}
