# llama-orch: `make run` starts orchd on its embedded demo; `make test` runs every test.
GO      ?= go
BIN     ?= bin
# go test -race needs cgo.
export CGO_ENABLED ?= 1

.PHONY: run test build lint bench bench-peers bench-go fuzz clean deps browser openai-client

run: ## orchd on the embedded demo (two in-process llama.cpp fakes, key sk-demo)
	$(GO) run ./cmd/orchd

test: deps ## go vet + every test (unit, fuzz seeds, godog features) with the race detector
	$(GO) vet ./...
	GO=$(GO) bash scripts/gotest.sh -race -count=1 -timeout 9m ./...

deps: browser openai-client ## what the tests need beyond Go: Chromium (ops page test) and the openai npm client

browser: ## Debian's Chromium for the headless ops-page test (gateway/ui), if missing
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  { echo "installing chromium (apt-get)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

openai-client: ## the official openai npm client for the OpenAI front-door test, from the lockfile
	@[ -d scripts/openai-client/node_modules/openai ] || (cd scripts/openai-client && npm ci --no-audit --no-fund --loglevel=error)

build: ## all binaries into ./bin
	$(GO) build -o $(BIN)/ ./cmd/...

lint: ## formatting and vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## orch-bench's standard scenarios: fakes + orchd on loopback → bench/results/ (about 3 min)
	BIN=$(BIN) GO=$(GO) bash scripts/bench.sh

bench-peers: ## nginx (proxy_buffering off, installed from Debian if missing) as a reference next to orchd, c=512 unpaced
	BIN=$(BIN) GO=$(GO) bash scripts/bench.sh a-unpaced-c512 nginx-a-unpaced-c512

bench-go: ## hot-path Go benchmarks (allocs/op, ns/op)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./sse/ ./engines/... ./gateway/...

FUZZTIME ?= 30s
fuzz: ## run each fuzz target for FUZZTIME
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN)
