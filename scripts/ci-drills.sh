#!/usr/bin/env bash
# Short drills on real stacks, as CI runs them after `make test`: for each
# engine, a fresh `socnet up`, one failover drill with the host fault (the
# primary's postmaster and its agent SIGKILLed together), and a stop.
#   scripts/ci-drills.sh [ENGINE...]     default: patroni
# (the socnet engine's drills run inside `make test`). Exit status: the
# first failing drill's (3: a verdict FAIL), or 1 when a stack would not run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/stack-lib.sh
. scripts/stack-lib.sh

BIN=${BIN:-bin/socnet}
DUR=${DUR:-15s}
go build -o "$BIN" ./cmd/socnet

home=
cleanup() {
	stop_stack_process
	if [ -n "$home" ]; then
		rm -rf "$home" "$home.log"
		home=
	fi
}
trap cleanup EXIT

engines=("$@")
[ ${#engines[@]} -gt 0 ] || engines=(patroni)
for engine in "${engines[@]}"; do
	home=$(mktemp -d "/tmp/socnet-ci-$engine.XXXXXX")
	echo "== $engine: socnet up --engine $engine --home $home"
	start_stack "$home.log" --engine "$engine" --home "$home" --http 127.0.0.1:0
	grep '^socnet is up' "$home.log"
	echo "== $engine: socnet drill failover --fault host --duration $DUR"
	rc=0
	"$BIN" drill failover --home "$home" --fault host --duration "$DUR" --sessions 0 2>"$home.drill.log" || rc=$?
	if [ "$rc" -ne 0 ]; then
		tail -n 30 "$home.drill.log" >&2
		tail -n 30 "$home.log" >&2
		rm -f "$home.drill.log"
		exit "$rc"
	fi
	rm -f "$home.drill.log"
	cleanup
done
