#!/usr/bin/env bash
# scripts/bench.sh engines: the failover drill on each engine, N runs with
# --fault postmaster and N with --fault host, each engine on a fresh stack,
# one after the other on this machine; then `socnet drill compare` puts
# every report into one table (printed, written between the markers of
# docs/BENCHMARKS.md, and as HTML and JSON in $OUT).
#
#   ENGINES="socnet patroni"  engines, in the table's order
#   N=10                      runs per engine and fault
#   FAULTS="postmaster host"  faults
#   CUTS=N                    partition runs per engine: the primary's host cut
#                             off (`socnet drill partition --repeat`) on a fresh
#                             `up --hosts netns` stack; needs root; 0 for none
#                             (default N when root, else 0)
#   DUR=6s                    writing per run (the kill at a random 20-80%)
#   SESSIONS=0                the drill's history sessions (see below)
#   DOC=docs/BENCHMARKS.md    where the table goes ("" for nowhere)
#   KEEP_HOMES=1              keep each stack's home (its logs) after it stops
#
# The history check of reads through the API is off by default (SESSIONS=0):
# it judges the router, not the engine, and it reports the known stale reads
# between a kill and the promotion (docs/DRILLS.md), which would count as
# failed runs here. Every run still verifies every write on every node.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/stack-lib.sh
. scripts/stack-lib.sh

BIN=${BIN:-bin/socnet}
ENGINES=${ENGINES:-socnet patroni}
N=${N:-10}
FAULTS=${FAULTS:-postmaster host}
if [ "$(id -u)" -eq 0 ]; then CUTS=${CUTS:-$N}; else CUTS=${CUTS:-0}; fi
DUR=${DUR:-6s}
SESSIONS=${SESSIONS:-0}
DOC=${DOC-docs/BENCHMARKS.md}
OUT=${OUT:-bench-results/engines-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
COMMAND="scripts/bench.sh engines (ENGINES=\"$ENGINES\" N=$N CUTS=$CUTS DUR=$DUR SESSIONS=$SESSIONS)"

up_pid=
home=
stop_stack() {
	stop_stack_process
	if [ -n "$home" ]; then
		if [ -n "${KEEP_HOMES:-}" ]; then
			echo "kept the home $home"
		else
			rm -rf "$home"
		fi
		home=
	fi
}
trap stop_stack EXIT
log() { printf '\n== %s\n' "$*" | tee -a "$OUT/summary.txt"; }

# engine_flags E: the flags of `socnet up` that select engine E. A socnet
# without --engine runs its own engine only.
engine_flags() {
	local help
	help=$("$BIN" up -h 2>&1 || true)
	if [[ "$help" == *"-engine"* ]]; then
		echo "--engine $1"
	elif [ "$1" = socnet ]; then
		echo ""
	else
		echo "$BIN up has no --engine flag: cannot run engine $1" >&2
		return 1
	fi
}

failed=0
reports=()
# run_drill NAME DRILL ARGS...: `socnet drill DRILL ARGS` on the running
# stack, its report as $OUT/NAME.{txt,json,html}, its log as
# $OUT/drill-NAME.log; the JSON report joins the comparison, and a drill
# that fails marks the whole run failed.
run_drill() {
	local name=$1 drill=$2
	shift 2
	log "${name%%-*}: socnet drill $drill $*"
	local rc=0
	"$BIN" drill "$drill" --home "$home" "$@" --json "$OUT/$name.json" --html "$OUT/$name.html" \
		>"$OUT/$name.txt" 2>"$OUT/drill-$name.log" || rc=$?
	tail -n 6 "$OUT/$name.txt" | tee -a "$OUT/summary.txt"
	if [ "$rc" -ne 0 ]; then
		failed=1
		echo "drill exited $rc (3: a verdict FAIL; 1: it could not run, see $OUT/drill-$name.log)" | tee -a "$OUT/summary.txt"
	fi
	if [ -s "$OUT/$name.json" ]; then
		reports+=("$OUT/$name.json")
	fi
}

{
	echo "socnet failover drill, engines compared, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "command: $COMMAND"
} | tee "$OUT/summary.txt"

for engine in $ENGINES; do
	flags=$(engine_flags "$engine")
	home=$(mktemp -d "/tmp/socnet-engines-$engine.XXXXXX")
	log "stack: socnet up $flags --home $home --http 127.0.0.1:0"
	# shellcheck disable=SC2086 # flags is empty or two words
	start_stack "$OUT/up-$engine.log" $flags --home "$home" --http 127.0.0.1:0
	grep '^socnet is up' "$OUT/up-$engine.log" | tee -a "$OUT/summary.txt"
	for fault in $FAULTS; do
		run_drill "$engine-$fault" failover --fault "$fault" --repeat "$N" --duration "$DUR" --kill-after random \
			--sessions "$SESSIONS"
	done
	log "$engine: stopping the stack"
	stop_stack

	if [ "$CUTS" -gt 0 ]; then
		# The partition: every node and service on a host of its own.
		# Patroni's primary is cut for 15 s (its leader key lasts ttl 10 s),
		# socnet's for 5 s; each run writes 5 s longer than the cut.
		cut_for=5s write_for=10s
		if [ "$engine" = patroni ]; then cut_for=15s write_for=20s; fi
		home=$(mktemp -d "/tmp/socnet-engines-$engine-hosts.XXXXXX")
		log "stack: socnet up $flags --hosts netns --home $home --http 127.0.0.1:0"
		# shellcheck disable=SC2086 # flags is empty or two words
		start_stack "$OUT/up-$engine-hosts.log" $flags --hosts netns --home "$home" --http 127.0.0.1:0
		grep '^socnet is up' "$OUT/up-$engine-hosts.log" | tee -a "$OUT/summary.txt"
		run_drill "$engine-cut-primary" partition --target primary --repeat "$CUTS" --cut-for "$cut_for" --duration "$write_for"
		log "$engine: stopping the hosts stack"
		stop_stack
	fi
done

log "comparison"
if [ "${#reports[@]}" -eq 0 ]; then
	echo "no drill report was written" >&2
	exit 1
fi
compare=(--command "$COMMAND" --json "$OUT/engines.json" --html "$OUT/engines.html")
if [ -n "$DOC" ]; then compare+=(--markdown-into "$DOC"); fi
rc=0
"$BIN" drill compare "${compare[@]}" "${reports[@]}" | tee -a "$OUT/summary.txt" || rc=$?
echo
echo "results in $OUT"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
