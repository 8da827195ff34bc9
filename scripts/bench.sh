#!/usr/bin/env bash
# make bench: the benchmarks of docs/BENCHMARKS.md in one run on this machine.
# Starts a fresh stack, seeds a million users, and measures: the seed time;
# GET /user/get through the API against pgbench on the same SQL; search p99;
# the primary's share of read work with reads on the primary and on the
# replicas; the load generator's own ceiling and CPU per request; the
# router's fail-fast and stuck-commit figures; failover unavailability over
# repeated SIGKILLs. Results (text, JSON, HTML, PNG) go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
# scripts/bench.sh feed: the feed's figures alone (scripts/bench-feed.sh).
if [ "${1:-}" = feed ]; then exec scripts/bench-feed.sh; fi
# scripts/bench.sh engines: the failover drill on each engine, side by side
# (scripts/bench-engines.sh).
if [ "${1:-}" = engines ]; then exec scripts/bench-engines.sh; fi

BIN=${BIN:-bin/socnet}
USERS=${USERS:-1000000}
DUR=${DUR:-20s}
CONNS=${CONNS:-32}
FAILOVERS=${FAILOVERS:-20}
OUT=${OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
HOME_DIR=${BENCH_HOME:-$(mktemp -d /tmp/socnet-bench.XXXXXX)}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=127.0.0.1:$(free_port)
API_PRIMARY=127.0.0.1:$(free_port)
log() { printf '\n== %s\n' "$*" | tee -a "$OUT/summary.txt"; }
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

{
	echo "socnet benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(go version | cut -d' ' -f3), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
	echo "command: make bench (USERS=$USERS DUR=$DUR CONNS=$CONNS FAILOVERS=$FAILOVERS)"
} | tee "$OUT/summary.txt"

log "stack: socnet up --home $HOME_DIR --http $API"
"$BIN" up --home "$HOME_DIR" --http "$API" --counter-http "127.0.0.1:$(free_port)" >"$OUT/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do curl -fs "http://$API/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://$API/healthz" >/dev/null

status_json() { "$BIN" status --home "$HOME_DIR" --json; }
node_field() { # node_field ROLE FIELD: FIELD of the first main node with ROLE
	status_json | python3 -c "import json,sys; d=json.load(sys.stdin); print([n['$2'] for c in d['clusters'] if c['name']=='main' for n in c['nodes'] if n['role']=='$1'][0])"
}
with_db() { python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path='/socnet')))" "$1"; }
PRIMARY_DSN=$(with_db "$(node_field primary dsn)")
REPLICA_DSN=$(with_db "$(node_field replica dsn)")

log "seed: socnet seed --users $USERS"
start=$(date +%s.%N)
"$BIN" seed --home "$HOME_DIR" --users "$USERS" 2>"$OUT/seed.log" | tee -a "$OUT/summary.txt"
echo "seed wall time: $(python3 -c "print(round($(date +%s.%N)-$start,1))") s" | tee -a "$OUT/summary.txt"
psql -q "$PRIMARY_DSN" -c "VACUUM ANALYZE users" >/dev/null
psql -q "$PRIMARY_DSN" -c "DROP TABLE IF EXISTS bench_ids; CREATE TABLE bench_ids AS SELECT row_number() OVER () AS n, id FROM (SELECT id FROM users TABLESAMPLE SYSTEM (2) LIMIT 10000) s; ALTER TABLE bench_ids ADD PRIMARY KEY (n); ANALYZE bench_ids" >/dev/null
sleep 2 # let the replicas replay

log "GET /user/get/{id}: pgbench on a replica, same SQL, $CONNS connections, $DUR"
cat >"$OUT/get.sql" <<'SQL'
\set n random(1, 10000)
SELECT id, first_name, second_name, birthdate, biography, city FROM users WHERE id = (SELECT id FROM bench_ids WHERE n = :n);
SQL
"$PGBIN/pgbench" -n -M prepared -c "$CONNS" -j 2 -T "${DUR%s}" -f "$OUT/get.sql" "$REPLICA_DSN" 2>&1 | tee "$OUT/pgbench-get.txt" | grep -E "^(tps|latency)" | tee -a "$OUT/summary.txt"

log "GET /user/get/{id} through the API (reads on the replicas), $CONNS connections, $DUR"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --scenario get --connections "$CONNS" --duration "$DUR" --quiet \
	--label "API get" --json "$OUT/api-get.json" | tee -a "$OUT/summary.txt"
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, re, sys
out = sys.argv[1]
pg = float(re.search(r"tps = ([0-9.]+)", open(out + "/pgbench-get.txt").read()).group(1))
api = json.load(open(out + "/api-get.json"))
rps = api["throughput_rps"]
print(f"get: API {rps:.0f} req/s vs pgbench {pg:.0f} tps: ratio {rps/pg:.2f} (target >= 0.5)")
PY

log "GET /user/search with 2-4 letter prefix pairs from the data, $CONNS connections, $DUR"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --scenario search --connections "$CONNS" --duration "$DUR" --quiet \
	--label "API search" --json "$OUT/api-search.json" | tee -a "$OUT/summary.txt"

log "routing before/after: get+search with reads on the primary vs on the replicas, $DUR each"
SOCNET_DB="$PRIMARY_DSN" "$BIN" serve --http "$API_PRIMARY" --key-file "$HOME_DIR/token.key" >"$OUT/serve-primary.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://$API_PRIMARY/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" load --home "$HOME_DIR" --url "http://$API_PRIMARY" --mix get=50,search=50 --connections "$CONNS" --duration "$DUR" --quiet \
	--label "reads on the primary" --json "$OUT/reads-primary.json" | tee -a "$OUT/summary.txt"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --mix get=50,search=50 --connections "$CONNS" --duration "$DUR" --quiet \
	--label "reads on the replicas" --json "$OUT/reads-replicas.json" | tee -a "$OUT/summary.txt"
mkdir -p "$OUT/png"
"$BIN" load --compare "$OUT/reads-primary.json" "$OUT/reads-replicas.json" --html "$OUT/routing.html" --png "$OUT/png" | tee -a "$OUT/summary.txt"

log "load generator ceiling: GET /healthz with one core"
"$BIN" load --url "http://$API" --scenario healthz --cpus 1 --connections 64 --duration 10s --quiet \
	--label "healthz, 1 core" --json "$OUT/healthz.json" | tee -a "$OUT/summary.txt"

log "load generator's own cost on one core, against /healthz of another process (Go benchmark)"
go test -run '^$' -bench Healthz -benchtime 200000x ./internal/load/ 2>&1 | grep -E "^Benchmark|FAIL" | tee -a "$OUT/summary.txt"

log "router: a write with no primary known; a stuck synchronous commit past WriteTimeout (Go benchmarks)"
go test -run '^$' -bench TransactNoPrimary ./internal/dbroute/ 2>&1 | grep -E "^Benchmark|FAIL" | tee -a "$OUT/summary.txt"
go test -run '^$' -bench StuckCommitOvershoot -benchtime 20x ./internal/dbroute/ 2>&1 | grep -E "^Benchmark|FAIL" | tee -a "$OUT/summary.txt"

log "unread counters: dialogs for $DUR to fill the counters, then GET /dialog/unread, $CONNS connections, $DUR"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --scenario dialog --users 200 --connections "$CONNS" --duration "$DUR" --quiet \
	--label "dialogs" --json "$OUT/dialog.json" | tee -a "$OUT/summary.txt"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --scenario unread --users 200 --connections "$CONNS" --duration "$DUR" --quiet \
	--label "GET /dialog/unread" --json "$OUT/unread.json" | tee -a "$OUT/summary.txt"
"$BIN" reconcile --home "$HOME_DIR" --check 2>/dev/null | tee -a "$OUT/summary.txt"

log "counter delivery latency (commit -> counter applied) and outbox backlog"
go test -run '^$' -bench 'Delivery' -benchtime 30000x ./internal/counter/ 2>&1 | grep -E "Benchmark|p50|p99|backlog|ok" | tee -a "$OUT/summary.txt"

log "failover: socnet drill failover --repeat $FAILOVERS"
"$BIN" drill failover --home "$HOME_DIR" --repeat "$FAILOVERS" --duration 6s --kill-after random \
	--json "$OUT/failover.json" --html "$OUT/failover.html" 2>"$OUT/drill.log" | tee -a "$OUT/summary.txt"

echo
echo "results in $OUT"
