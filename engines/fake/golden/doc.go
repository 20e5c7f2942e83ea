// Package golden pins the bytes every fake engine (engines/fake and its
// tgi, triton and vllm packages) puts on the wire: its test sends a fixed
// set of requests over raw TCP — every fail mode, split UTF-8, the Tokens
// cap, request errors, health, props, info and metrics — and compares the
// responses, head and chunk boundaries included, with testdata/*.golden.
// Only time-dependent values (Date, created, timings, durations, ids drawn
// from the clock, the port-derived GPU UUID) are normalised.
//
// After a deliberate wire change, refresh the captures with
//
//	go test ./engines/fake/golden -update
package golden
