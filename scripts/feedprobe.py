#!/usr/bin/env python3
"""Probes of the feed for scripts/bench-feed.sh, through the API as seeded users.

fresh      a poster followed by a cached reader creates posts at a fixed interval;
           the reader polls its feed: create -> seen, p50/p99/max.
celebrity  the author of bench_celebrity (followed by everyone) posts; a sampled
           follower polls its feed; create latency against an ordinary author's.
memory     FLUSHALL, then one feed read per bench_feed_users reader, in parallel:
           the rebuild rate and Redis memory per full timeline (used_memory and
           MEMORY USAGE), with the stack's zset-max-listpack-entries and with
           Redis's default (128), which makes every full timeline a skiplist.
histogram  p50/p99 of socnet_feed_delivery_latency_seconds between two scrapes.
pgbench-log  p50/p99 of the transactions in pgbench --log files.
Every loop is bounded in count and time.
"""
import argparse
import concurrent.futures as cf
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

PASSWORD = "socnet-seed"  # seed.Password


def sql(dsn, query):
    out = subprocess.run(["psql", "-qAtX", dsn, "-c", query], check=True, capture_output=True, text=True)
    return [line.split("|") for line in out.stdout.splitlines() if line]


def call(api, method, path, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def login(api, uid):
    """Logs in, waiting out the login rate limit (429) a bounded number of times."""
    for attempt in range(30):
        try:
            return call(api, "POST", "/login", body={"id": uid, "password": PASSWORD})["token"]
        except urllib.error.HTTPError as e:
            if e.code != 429 or attempt == 29:
                raise
            time.sleep(min(5.0, float(e.headers.get("Retry-After") or 1)))


def feed_ids(api, token, limit=10):
    return [p["id"] for p in call(api, "GET", f"/post/feed?offset=0&limit={limit}", token)]


def create(api, token, text):
    t0 = time.monotonic()
    pid = call(api, "POST", "/post/create", token, {"text": text})
    return pid, t0, time.monotonic() - t0


def wait_seen(api, token, pid, t0, deadline_s):
    while time.monotonic() - t0 < deadline_s:
        if pid in feed_ids(api, token):
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def ms(x):
    return f"{x * 1000:.0f} ms" if x is not None else "not seen"


def fresh(a):
    reader, poster = sql(a.dsn, """SELECT h.id, f.friend_id FROM bench_feed_users h
        JOIN friends f ON f.user_id = h.id WHERE h.n = 1 ORDER BY f.friend_id LIMIT 1""")[0]
    rt, pt = login(a.api, reader), login(a.api, poster)
    feed_ids(a.api, rt)  # cached (rebuilt if missing)
    lat, creates, missed = [], [], 0
    for i in range(a.samples):
        pid, t0, c = create(a.api, pt, f"freshness probe {i}")
        creates.append(c)
        seen = wait_seen(a.api, rt, pid, t0, 10)
        if seen is None:
            missed += 1
        else:
            lat.append(seen)
        time.sleep(max(0, a.interval - (time.monotonic() - t0)))
    print(f"freshness: {a.samples} posts every {a.interval}s, reader follows the poster and polls every 10 ms: "
          f"create -> seen p50 {ms(pct(lat, .5))}, p99 {ms(pct(lat, .99))}, max {ms(max(lat) if lat else None)}; "
          f"not seen within 10 s: {missed}; create p50 {ms(pct(creates, .5))}")


def celebrity(a):
    celeb = sql(a.dsn, "SELECT id FROM bench_celebrity")[0][0]
    nfol = sql(a.dsn, f"SELECT count(*) FROM friends WHERE friend_id = '{celeb}'")[0][0]
    follower = sql(a.dsn, f"""SELECT user_id FROM friends WHERE friend_id = '{celeb}'
        AND user_id NOT IN (SELECT id FROM bench_feed_users) ORDER BY user_id DESC LIMIT 1""")[0][0]
    ordinary = sql(a.dsn, """SELECT friend_id FROM friends WHERE friend_id NOT IN (SELECT id FROM bench_celebrity)
        GROUP BY friend_id HAVING count(*) BETWEEN 3 AND 50 ORDER BY friend_id LIMIT 1""")[0][0]
    ct, ft, ot = login(a.api, celeb), login(a.api, follower), login(a.api, ordinary)
    feed_ids(a.api, ft)
    ord_creates = []
    for i in range(a.posts):
        _, _, c = create(a.api, ot, f"ordinary probe {i}")
        ord_creates.append(c)
        time.sleep(0.2)
    print(f"celebrity: author with {nfol} followers; ordinary author's create: "
          + ", ".join(ms(c) for c in ord_creates))
    for i in range(a.posts):
        pid, t0, c = create(a.api, ct, f"celebrity probe {i}")
        seen = wait_seen(a.api, ft, pid, t0, 30)
        note = " (first post: promotion pass over the followers)" if i == 0 else ""
        print(f"  celebrity post {i}: create {ms(c)}, seen by a sampled follower after {ms(seen)}{note}")
        time.sleep(0.5)
    rows = sql(a.dsn, f"SELECT count(*) FROM feed_celebrities WHERE author_id = '{celeb}'") \
        if sql(a.dsn, "SELECT count(*) FROM information_schema.columns WHERE table_name='feed_celebrities' AND column_name='author_id'")[0][0] != "0" else [["?"]]
    print(f"  recorded in feed_celebrities: {rows[0][0]}")


def redis(a, *args):
    host, port = a.redis.rsplit(":", 1)
    out = subprocess.run(["redis-cli", "-h", host, "-p", port, *args], check=True, capture_output=True, text=True)
    return out.stdout


def used_memory(a):
    return int(re.search(r"used_memory:(\d+)", redis(a, "INFO", "memory")).group(1))


def memory_pass(a, tokens, label):
    """FLUSHALL, one feed read per token by a.workers clients, then what the timelines take."""
    redis(a, "FLUSHALL")
    time.sleep(0.5)
    before = used_memory(a)
    redis(a, "CONFIG", "RESETSTAT")
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(a.workers) as ex:
        list(ex.map(lambda t: feed_ids(a.api, t), tokens))
    rebuild = time.monotonic() - t0
    after = used_memory(a)
    m = re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+)", redis(a, "INFO", "commandstats"))
    scripts = f"{int(m.group(1))} scripts took {int(m.group(2)) / 1000:.0f} ms of Redis's time" if m else "no scripts"
    timelines = [k for k in redis(a, "--scan", "--pattern", "feed:v2:{u:*}:t").split() if k]
    user_keys = [k for k in redis(a, "--scan", "--pattern", "feed:v2:{u:*").split() if k]
    sizes = [int(redis(a, "ZCARD", k).strip()) for k in timelines]
    full = sum(1 for s in sizes if s >= 1000)
    encodings = {}
    for k in timelines:
        e = redis(a, "OBJECT", "ENCODING", k).strip()
        encodings[e] = encodings.get(e, 0) + 1
    usage = sum(int(redis(a, "MEMORY", "USAGE", k, "SAMPLES", "0").strip() or 0) for k in user_keys)
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(a.workers) as ex:
        list(ex.map(lambda t: feed_ids(a.api, t), tokens))
    cached = time.monotonic() - t0
    n = max(1, len(timelines))
    per_used, per_usage = (after - before) / n, usage / n
    print(f"{label}: rebuild after FLUSHALL: {len(tokens)} readers' timelines read once by {a.workers} clients in "
          f"{rebuild:.2f} s: {len(tokens) / rebuild:.0f} timelines/s (the same reads cached: {len(tokens) / cached:.0f}/s); "
          f"in Redis, {scripts} (the stores of the rebuilt lists)")
    print(f"  {len(timelines)} timelines cached ({full} with 1,000 ids; encodings {encodings}); "
          f"used_memory {before} -> {after}: {per_used:,.0f} bytes per timeline; MEMORY USAGE of the users' "
          f"{len(user_keys)} keys (exact): {per_usage:,.0f} bytes per timeline; 1,000,000 full timelines: "
          f"{per_used * 1e6 / 1e9:.1f} GB (used_memory) / {per_usage * 1e6 / 1e9:.1f} GB (MEMORY USAGE)")


def memory(a):
    users = [r[0] for r in sql(a.dsn, "SELECT id FROM bench_feed_users ORDER BY n")]
    tokens = [login(a.api, u) for u in users]
    setting = redis(a, "CONFIG", "GET", "zset-max-listpack-entries").split()[-1]
    memory_pass(a, tokens, f"zset-max-listpack-entries {setting} (the stack's redis.conf)")
    redis(a, "CONFIG", "SET", "zset-max-listpack-entries", "128")
    try:
        memory_pass(a, tokens, "zset-max-listpack-entries 128 (Redis's default)")
    finally:
        redis(a, "CONFIG", "SET", "zset-max-listpack-entries", setting)


def pgbench_log(*paths):
    lat = []
    for path in paths:
        for line in open(path):
            f = line.split()
            if len(f) >= 3:
                lat.append(int(f[2]) / 1e6)
    print(f"SQL fan-in per transaction (pgbench --log, {len(lat)} transactions): p50 {ms(pct(lat, .5))}, "
          f"p99 {ms(pct(lat, .99))}, max {ms(max(lat))}")


def histogram(before, after):
    def buckets(path):
        out = {}
        for line in open(path):
            m = re.match(r'socnet_feed_delivery_latency_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out
    b, c = buckets(before), buckets(after)
    les = sorted(c, key=lambda k: float("inf") if k == "+Inf" else float(k))
    diff = [(le, c[le] - b.get(le, 0)) for le in les]
    total = diff[-1][1] if diff else 0
    def q(p):
        for le, n in diff:
            if n >= p * total:
                return le
        return "?"
    print(f"worker delivery latency (event's transaction -> batch commit), events in the window: {total:.0f}; "
          f"p50 <= {q(.5)} s, p99 <= {q(.99)} s (bucket bounds)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["fresh", "celebrity", "memory", "histogram", "pgbench-log"])
    p.add_argument("files", nargs="*")
    p.add_argument("--api")
    p.add_argument("--dsn")
    p.add_argument("--redis")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--posts", type=int, default=5)
    p.add_argument("--workers", type=int, default=8)
    a = p.parse_args()
    if a.what == "histogram":
        histogram(*a.files)
    elif a.what == "pgbench-log":
        pgbench_log(*a.files)
    else:
        {"fresh": fresh, "celebrity": celebrity, "memory": memory}[a.what](a)


if __name__ == "__main__":
    sys.exit(main())
