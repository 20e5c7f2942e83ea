// Package features holds orchd's BDD suite: Gherkin scenarios (*.feature)
// that cite SPEC requirement IDs, run by `go test ./features/` with godog.
// Each scenario starts its own gateway in front of in-process llama.cpp
// fakes (engines/fake) on loopback and talks to it only over HTTP, as a
// client that knows SPEC §3 and nothing of the gateway's internals.
package features
