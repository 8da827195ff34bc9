# socnet: `make run` starts the whole local stack, `make test` runs every test.
GO        ?= go
BIN       := bin/socnet
HOME_DIR  ?= $(HOME)/.socnet
HTTP      ?= 127.0.0.1:8080
PKGS      := ./...

.PHONY: all build run test test-short lint bench mutation deps-postgres deps-run deps-test clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/socnet

# Install the servers when they are missing and we can (root or sudo):
# PostgreSQL for everything, Redis for the feed (the stack and its tests).
deps-postgres:
	@scripts/ensure-deps.sh postgres

deps-run:
	@scripts/ensure-deps.sh postgres redis

deps-test:
	@scripts/ensure-deps.sh postgres redis

run: deps-run build
	$(BIN) up --home $(HOME_DIR) --http $(HTTP)

# Unit and integration tests against real PostgreSQL processes started by internal/pgtest.
test: deps-test
	$(GO) test -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -count=1 -short $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

# Benchmarks with a million users; figures go to docs/BENCHMARKS.md.
bench: deps-postgres build
	scripts/bench.sh

# Mutation testing of the failover decision, the "primary is dead" rule and the
# counter's apply logic; prints a score per file (docs/TESTING.md). Not part
# of `test`: it takes minutes.
mutation: deps-postgres
	scripts/mutation.sh

clean:
	rm -rf bin
