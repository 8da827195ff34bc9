# socnet: `make run` starts the whole local stack, `make test` runs every test.
GO        ?= go
BIN       := bin/socnet
HOME_DIR  ?= $(HOME)/.socnet
HTTP      ?= 127.0.0.1:8080
# What runs the PostgreSQL clusters: socnet (its own supervisor) or patroni
# (Patroni + etcd, installed by `make run ENGINE=patroni` when missing).
ENGINE    ?= socnet
# Where the nodes and services run: local (127.0.0.1) or netns (each on its
# own network namespace behind HAProxy; root, see docs/HOSTS.md).
HOSTS     ?= local
PKGS      := ./...
# Packages that run goroutines, for the race detector.
RACE_PKGS ?= ./internal/load/ ./internal/dbroute/ ./internal/counter/ ./internal/cluster/ ./internal/httpapi/ \
             ./internal/drill/ ./internal/pgnode/ ./internal/seed/ ./cmd/socnet/

.PHONY: all build run test test-short test-race lint bench bench-feed mutation deps-postgres deps-run deps-test clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/socnet

# Install the servers when they are missing and we can (root or sudo):
# PostgreSQL for everything, Redis for the feed (the stack and its tests),
# Patroni and etcd for ENGINE=patroni and the tests, HAProxy for the tests.
deps-postgres:
	@scripts/ensure-deps.sh postgres

deps-run:
	@scripts/ensure-deps.sh postgres redis $(if $(filter patroni,$(ENGINE)),patroni etcd) $(if $(filter netns,$(HOSTS)),haproxy ip)

deps-test:
	@scripts/ensure-deps.sh postgres redis patroni etcd haproxy ip

run: deps-run build
	$(BIN) up --home $(HOME_DIR) --http $(HTTP) --engine $(ENGINE) --hosts $(HOSTS)

# Unit and integration tests against real PostgreSQL processes started by internal/pgtest.
test: deps-test
	$(GO) test -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -count=1 -short $(PKGS)

# The same tests under the race detector, on the packages with goroutines: several
# times slower than make test, so a target of its own. One package at a time (-p 1):
# each starts PostgreSQL clusters, and two cores cannot run two such packages raced.
test-race: deps-postgres
	$(GO) test -race -count=1 -p 1 -timeout 60m $(RACE_PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

# Benchmarks with a million users; figures go to docs/BENCHMARKS.md.
bench: deps-postgres build
	scripts/bench.sh

# The feed's figures (Redis against the SQL fan-in, freshness, celebrities, memory).
bench-feed: deps-run build
	scripts/bench.sh feed

# Mutation testing of the failover decision, the "primary is dead" rule and the
# counter's apply logic; prints a score per file (docs/TESTING.md). Not part
# of `test`: it takes minutes.
mutation: deps-postgres
	scripts/mutation.sh

clean:
	rm -rf bin
