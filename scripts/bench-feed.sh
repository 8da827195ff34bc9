#!/usr/bin/env bash
# scripts/bench.sh feed: the feed's figures of docs/BENCHMARKS.md ("The feed")
# in one run on a fresh stack: throughput of /post/feed (Redis timelines)
# against the SQL fan-in on a replica for users following 3,000-5,000
# authors; freshness (post create -> seen in a follower's feed) under a
# steady post rate; a post by an author with ~100,000 followers; Redis
# memory per full timeline and the rebuild rate after FLUSHALL.
# Results go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1

BIN=${BIN:-bin/socnet}
USERS=${USERS:-100000}  # also the celebrity's followers (everyone follows one author)
HEAVY=${HEAVY:-100}     # readers following ~FOLLOWS authors each
FOLLOWS=${FOLLOWS:-4000}
POSTS=${POSTS:-4}       # posts per seeded user
DUR=${DUR:-20s}
CONNS=${CONNS:-32}
POST_RATE=${POST_RATE:-20} # background posts per second during the freshness run
OUT=${OUT:-bench-results/feed-$(date -u +%Y%m%dT%H%M%SZ)}
HOME_DIR=${BENCH_HOME:-$(mktemp -d /tmp/socnet-feedbench.XXXXXX)}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=127.0.0.1:$(free_port)
log() { printf '\n== %s\n' "$*" | tee -a "$OUT/summary.txt"; }
up_pid=
cleanup() {
	if [ -n "$up_pid" ]; then
		kill -INT "$up_pid" 2>/dev/null || true
		wait "$up_pid" 2>/dev/null || true
	fi
	[ -n "${BENCH_HOME:-}" ] || rm -rf "$HOME_DIR"
}
trap cleanup EXIT

{
	echo "socnet feed benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(go version | cut -d' ' -f3), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $(redis-server --version | awk '{print $3}')"
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (shared machine)"
	echo "command: scripts/bench.sh feed (USERS=$USERS HEAVY=$HEAVY FOLLOWS=$FOLLOWS POSTS=$POSTS DUR=$DUR CONNS=$CONNS POST_RATE=$POST_RATE)"
} | tee "$OUT/summary.txt"

log "stack: socnet up --home $HOME_DIR --http $API"
"$BIN" up --home "$HOME_DIR" --http "$API" >"$OUT/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do curl -fs "http://$API/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://$API/healthz" >/dev/null

status_json() { "$BIN" status --home "$HOME_DIR" --json; }
node_field() { # node_field ROLE FIELD: FIELD of the first main node with ROLE
	status_json | python3 -c "import json,sys; d=json.load(sys.stdin); print([n['$2'] for c in d['clusters'] if c['name']=='main' for n in c['nodes'] if n['role']=='$1'][0])"
}
with_db() { python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path='/socnet')))" "$1"; }
port_of() { python3 -c "import json,sys; v=str(json.load(open(sys.argv[1]))[sys.argv[2]]); print(v.rsplit(':',1)[-1])" "$HOME_DIR/ports.json" "$1"; }
# The primary, whichever node it is: a loaded machine can provoke a failover
# mid-run, and the probes must follow it (libpq tries the hosts in turn).
any_primary() {
	status_json | python3 -c "
import json, sys, urllib.parse as u
d = json.load(sys.stdin)
ps = [u.urlsplit(n['dsn']) for c in d['clusters'] if c['name'] == 'main' for n in c['nodes']]
user = ps[0].netloc.rsplit('@', 1)[0]
hosts = ','.join(p.netloc.rsplit('@', 1)[-1] for p in ps)
print(u.urlunsplit(ps[0]._replace(netloc=user + '@' + hosts, path='/socnet', query=ps[0].query + '&target_session_attrs=read-write')))"
}
PRIMARY_DSN=$(any_primary)
REPLICA_DSN=$(with_db "$(node_field replica dsn)")
REDIS_PORT=$(port_of redis)
WORKER_PORT=$(port_of feed_worker)
rcli() { REDISCLI_AUTH=$(cat "$HOME_DIR/redis/password") redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
psql_p() { psql -qAtX "$PRIMARY_DSN" -v ON_ERROR_STOP=1 "$@"; }

log "seed: socnet seed --users $USERS --friends 3 --posts $POSTS"
start=$(date +%s.%N)
"$BIN" seed --home "$HOME_DIR" --users "$USERS" --friends 3 --posts "$POSTS" 2>"$OUT/seed.log" | tee -a "$OUT/summary.txt"
echo "seed wall time: $(python3 -c "print(round($(date +%s.%N)-$start,1))") s" | tee -a "$OUT/summary.txt"

log "graph: $HEAVY readers follow ~$FOLLOWS authors each; one author followed by everyone (SQL, no events: rebuilt on read)"
start=$(date +%s.%N)
psql_p <<SQL
DROP TABLE IF EXISTS bench_feed_users;
CREATE TABLE bench_feed_users AS
  SELECT row_number() OVER () AS n, id, first_name, second_name
  FROM (SELECT id, first_name, second_name FROM users TABLESAMPLE SYSTEM (5) LIMIT $HEAVY) s;
ALTER TABLE bench_feed_users ADD PRIMARY KEY (n);
INSERT INTO friends (user_id, friend_id)
  SELECT h.id, u.id FROM bench_feed_users h CROSS JOIN users u
  WHERE u.id <> h.id AND abs(hashtext(h.id::text || u.id::text)) % ($USERS / $FOLLOWS) = 0
  ON CONFLICT DO NOTHING;
DROP TABLE IF EXISTS bench_celebrity;
CREATE TABLE bench_celebrity AS
  SELECT id FROM users WHERE id NOT IN (SELECT id FROM bench_feed_users) ORDER BY id LIMIT 1;
INSERT INTO friends (user_id, friend_id)
  SELECT u.id, c.id FROM users u, bench_celebrity c WHERE u.id <> c.id ON CONFLICT DO NOTHING;
VACUUM ANALYZE friends;
VACUUM ANALYZE posts;
ANALYZE bench_feed_users;
SQL
echo "graph wall time: $(python3 -c "print(round($(date +%s.%N)-$start,1))") s" | tee -a "$OUT/summary.txt"
psql_p -c "SELECT 'readers: ' || count(*) || ', follows min/avg/max ' || min(c) || '/' || round(avg(c)) || '/' || max(c) || ', posts in their fan-in avg ' || round(avg(p)) FROM (SELECT h.id, count(*) c, sum((SELECT count(*) FROM posts WHERE author_user_id = f.friend_id)) p FROM bench_feed_users h JOIN friends f ON f.user_id = h.id GROUP BY h.id) x" | tee -a "$OUT/summary.txt"
psql_p -c "SELECT 'celebrity followers: ' || count(*) FROM friends WHERE friend_id = (SELECT id FROM bench_celebrity)" | tee -a "$OUT/summary.txt"
psql_p -c "SELECT 'friends rows: ' || count(*) FROM friends" | tee -a "$OUT/summary.txt"
sleep 2 # let the replicas replay

log "GET /post/feed through the API (Redis timelines), $HEAVY readers, $CONNS connections: 5 s warm-up (rebuilds), then $DUR"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --scenario feed --users-table bench_feed_users --users "$HEAVY" \
	--connections "$CONNS" --duration 5s --quiet --label "API feed warm-up" | tee -a "$OUT/summary.txt"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --scenario feed --users-table bench_feed_users --users "$HEAVY" \
	--connections "$CONNS" --duration "$DUR" --quiet --label "API feed (Redis)" --json "$OUT/api-feed.json" | tee -a "$OUT/summary.txt"

log "SQL fan-in (the feed's SQL, newest 10 as the API's page) on a replica: pgbench, same readers, $CONNS connections, $DUR"
cat >"$OUT/feed.sql" <<SQL
\set n random(1, $HEAVY)
SELECT p.id, p.text, p.author_user_id, p.created_at
FROM (
  SELECT newest.id, newest.created_at
  FROM friends f
  CROSS JOIN LATERAL (
    SELECT id, created_at FROM posts WHERE author_user_id = f.friend_id
    ORDER BY created_at DESC, id DESC LIMIT 10
  ) newest
  WHERE f.user_id = (SELECT id FROM bench_feed_users WHERE n = :n)
  ORDER BY newest.created_at DESC, newest.id DESC
  LIMIT 10 OFFSET 0
) page
JOIN posts p USING (id)
ORDER BY page.created_at DESC, page.id DESC;
SQL
"$PGBIN/pgbench" -n -M prepared -c "$CONNS" -j 2 -T "${DUR%s}" -P 5 \
	--log --log-prefix "$OUT/pgbench-feed-log" -f "$OUT/feed.sql" "$REPLICA_DSN" 2>&1 | tee "$OUT/pgbench-feed.txt" | grep -E "^(tps|latency|number of failed)" | tee -a "$OUT/summary.txt"
python3 scripts/feedprobe.py pgbench-log "$OUT"/pgbench-feed-log.* | tee -a "$OUT/summary.txt"
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, re, sys
out = sys.argv[1]
txt = open(out + "/pgbench-feed.txt").read()
pg = float(re.search(r"tps = ([0-9.]+)", txt).group(1))
api = json.load(open(out + "/api-feed.json"))
rps = api["throughput_rps"]
print(f"feed: API {rps:.0f} req/s vs SQL fan-in {pg:.1f} tps: ratio {rps/pg:.1f}x (target >= 10x)")
PY

log "freshness, celebrity post, memory and rebuild (scripts/feedprobe.py)"
"$BIN" load --home "$HOME_DIR" --url "http://$API" --scenario post --rate "$POST_RATE" --users 50 \
	--duration 40s --quiet --label "background posts" --json "$OUT/bg-posts.json" >"$OUT/bg-posts.txt" 2>&1 &
bg=$!
curl -fs "http://127.0.0.1:$WORKER_PORT/metrics" >"$OUT/worker-metrics-before.txt"
REDISCLI_AUTH=$(cat "$HOME_DIR/redis/password") python3 scripts/feedprobe.py fresh \
	--api "http://$API" --dsn "$PRIMARY_DSN" --samples 100 --interval 0.25 | tee -a "$OUT/summary.txt"
wait "$bg" || true
curl -fs "http://127.0.0.1:$WORKER_PORT/metrics" >"$OUT/worker-metrics-after.txt"
grep -E "^(socnet load|  mix|requests|latency)" "$OUT/bg-posts.txt" | tee -a "$OUT/summary.txt"
python3 scripts/feedprobe.py histogram "$OUT/worker-metrics-before.txt" "$OUT/worker-metrics-after.txt" | tee -a "$OUT/summary.txt"

REDISCLI_AUTH=$(cat "$HOME_DIR/redis/password") python3 scripts/feedprobe.py celebrity \
	--api "http://$API" --dsn "$PRIMARY_DSN" --posts 6 | tee -a "$OUT/summary.txt"

REDISCLI_AUTH=$(cat "$HOME_DIR/redis/password") python3 scripts/feedprobe.py memory \
	--api "http://$API" --dsn "$PRIMARY_DSN" --redis "127.0.0.1:$REDIS_PORT" --workers 8 | tee -a "$OUT/summary.txt"

log "feed check --sample 300"
"$BIN" feed check --home "$HOME_DIR" --sample 300 2>&1 | grep -v ' level=' | tail -12 | tee -a "$OUT/summary.txt" || true
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/summary.txt"

echo
echo "results in $OUT"
