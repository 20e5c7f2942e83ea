// Package bench is the home of orch-bench, the load harness that measures the
// latency and CPU the gateway adds over talking to an engine directly
// (SPEC §12). Its clients speak only HTTP and read the canonical stream with
// package sse; cmd/orch-bench is its command line.
package bench
