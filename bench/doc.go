// Package bench is orch-bench's load harness: closed-loop streaming clients
// that drive the gateway (OrchQueue v1, SPEC §3.1/§3.2) and, for comparison,
// an engine's native API directly, and report the latency and CPU the gateway
// adds (SPEC §12, §14).
//
// It talks HTTP only (fasthttp's client over keep-alive connections), reads
// the canonical stream with package sse, and sends traffic to loopback
// addresses only. Run drives one scenario (a direct phase, then a gateway
// phase); WriteReports writes report.json, report.md and report.svg;
// WriteSummary combines several reports into one table.
package bench
