package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"socnet/internal/feed/feedtest"
	"socnet/internal/pgtest"
	"socnet/internal/stack"
)

// TestServeFeedFromRedis runs `serve` and `feed work` against a real
// database and a real redis-server: a follower's feed shows a new post
// served from Redis; with Redis SIGKILLed the feed is still served, from
// PostgreSQL; with Redis back (empty) timelines are rebuilt and `feed
// check` finds no difference, and it does find one planted in Redis.
func TestServeFeedFromRedis(t *testing.T) {
	dsn := pgtest.MustDatabase(t)
	rs := feedtest.MustRedis(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pwFile, []byte(rs.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "addr")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	noEnv := func(string) string { return "" }
	redisFlags := []string{"--redis-addr", rs.Addr, "--redis-password-file", pwFile}

	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"socnet", "serve", "--http", "127.0.0.1:0", "--db", dsn, "--admin-db", dsn,
			"--key-file", filepath.Join(dir, "token.key"), "--addr-file", addrFile, "--bcrypt-cost", "4",
			"--metrics-addr", "127.0.0.1:0"}, redisFlags...), noEnv, &stdout, &stderr)
	}()
	base := "http://" + waitAddrFile(t, addrFile, done, 30*time.Second)
	waitHealthy(t, base, 10*time.Second)
	m := regexp.MustCompile(`metrics listening on (http://\S+)`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("stdout does not announce the metrics listener: %q", stdout.String())
	}
	pages := func(served string) int {
		t.Helper()
		resp, err := http.Get(m[1] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mm := regexp.MustCompile(`socnet_feed_pages_total\{served="` + served + `"\} (\d+)`).FindSubmatch(body)
		if mm == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(mm[1]))
		return n
	}

	// The worker: serve migrated the database before it listened.
	var wout syncBuffer
	workerDone := make(chan error, 1)
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	go func() {
		workerDone <- run(wctx, append([]string{"socnet", "feed", "work", "--main-db", dsn}, redisFlags...), noEnv, &wout, &wout)
	}()

	c := &client{t: t, base: base}
	alice := c.register("Алиса", "Лисицына", "pw-alice")
	bob := c.register("Борис", "Бобров", "pw-bob")
	token, bobToken := c.login(alice, "pw-alice"), c.login(bob, "pw-bob")
	c.do("PUT", "/friend/set/"+bob, token, nil, 200, nil)
	feedIDs := func() []string {
		var page []map[string]any
		c.do("GET", "/post/feed?offset=0&limit=10", token, nil, 200, &page)
		var ids []string
		for _, p := range page {
			ids = append(ids, p["id"].(string))
		}
		return ids
	}
	if ids := feedIDs(); len(ids) != 0 {
		t.Fatalf("feed before any post = %v", ids)
	}
	// The follow's event applied first, so that only the post's own event
	// can bring the post into the cached timeline.
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	waitFor(t, 30*time.Second, "empty feed_outbox", func() bool {
		var n int
		return admin.QueryRow(ctx, `SELECT count(*) FROM feed_outbox`).Scan(&n) == nil && n == 0
	})
	var first string
	c.do("POST", "/post/create", bobToken, map[string]any{"text": "hello from bob"}, 200, &first)
	waitFor(t, 30*time.Second, "bob's post in alice's feed", func() bool { return slices.Contains(feedIDs(), first) })
	before := pages("redis")
	if ids := feedIDs(); !slices.Equal(ids, []string{first}) {
		t.Fatalf("feed = %v, want [%s]", ids, first)
	}
	if pages("redis") <= before {
		t.Fatalf("the feed page was not served from Redis (socnet_feed_pages_total{served=\"redis\"} stayed %d)", before)
	}

	// Redis SIGKILLed: the feed is served by PostgreSQL, and a new post
	// still shows (the SQL feed is the truth).
	rs.Kill(t)
	var second string
	c.do("POST", "/post/create", bobToken, map[string]any{"text": "while redis is down"}, 200, &second)
	before = pages("postgres")
	if ids := feedIDs(); !slices.Equal(ids, []string{second, first}) {
		t.Fatalf("feed without Redis = %v, want [%s %s]", ids, second, first)
	}
	if pages("postgres") <= before {
		t.Fatal("the feed without Redis was not counted as served by postgres")
	}

	// Redis back, empty: the next read rebuilds, and the check is clean.
	rs.Start(t)
	waitFor(t, 30*time.Second, "a page served from Redis again", func() bool {
		before := pages("redis") + pages("rebuilt")
		ids := feedIDs()
		return slices.Equal(ids, []string{second, first}) && pages("redis")+pages("rebuilt") > before
	})
	check := func() (string, error) {
		var out bytes.Buffer
		err := run(ctx, append([]string{"socnet", "feed", "check", "--main-db", dsn, "--users", "10"}, redisFlags...), noEnv, &out, &out)
		return out.String(), err
	}
	waitFor(t, 30*time.Second, "feed check without differences", func() bool {
		out, err := check()
		t.Logf("feed check: %v\n%s", err, out)
		return err == nil && strings.Contains(out, "checked 1 cached timelines")
	})

	// A post planted in alice's timeline (not in the SQL feed) is found.
	rc := rs.Client(t)
	if err := rc.ZAdd(ctx, "feed:{u:"+alice+"}:t", redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMicro()), Member: "01a2343a-0000-7000-8000-000000000000"}).Err(); err != nil {
		t.Fatal(err)
	}
	out, err := check()
	if err == nil || exitCode(err) != 1 || !strings.Contains(out, "user "+alice+": 0 missing, 1 extra") {
		t.Fatalf("feed check of a planted post: err %v (exit %d), output:\n%s", err, exitCode(err), out)
	}

	stopWorker()
	cancel()
	for name, ch := range map[string]chan error{"serve": done, "feed work": workerDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s returned %v; stderr:\n%s", name, err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not stop within 15s of cancellation", name)
		}
	}
}

// TestFeedCommandsRefuseBadInput: missing settings are usage errors.
func TestFeedCommandsRefuseBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"feed"},
		{"feed", "nope"},
		{"feed", "work"},
		{"feed", "work", "--main-db", "postgres://x@127.0.0.1:1/x"},
		{"feed", "check", "--home", t.TempDir()},
		{"feed", "check", "--main-db", "postgres://x@127.0.0.1:1/x", "--redis-addr", "127.0.0.1:1", "--users", "0"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"socnet"}, args...), func(string) string { return "" }, &out, &out)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("socnet %v: err = %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}

// TestFeedOnStack runs `up` and follows a post through the stack's feed: a
// follower sees it in /post/feed, read from the Redis timeline; with
// redis-server SIGKILLed the feed is still 200 (from PostgreSQL); `up`
// restarts Redis, the timelines are rebuilt and `feed check` finds no
// difference; a graph seeded straight into PostgreSQL is served and checked
// the same way; Redis stops with the stack.
func TestFeedOnStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five PostgreSQL nodes and Redis")
	}
	t.Setenv(beMainEnv, "1")
	home := filepath.Join(t.TempDir(), "home")
	apiAddr := freeAddr(t)
	getenv := warnLogs
	stop := startUp(t, home, apiAddr, getenv)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	h := stack.Home{Dir: home}
	running := map[string]bool{}
	for _, s := range mustStatus(t, home, getenv).Services {
		running[s.Name] = stack.ProcessAlive(s.Pid)
	}
	if !running["redis"] || !running["feed-worker"] {
		t.Fatalf("services = %v, want a live redis and feed-worker", running)
	}
	st, err := readStack(home)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := os.ReadFile(h.RedisPassword())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(h.RedisPassword()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("redis password file: %v, mode %v; want 0600", err, fi.Mode())
	}
	rc := newRedisClient(&redis.Options{Addr: st.Redis, Password: strings.TrimSpace(string(pw)), MaxRetries: -1})
	defer rc.Close()
	ctx := context.Background()
	redisPid := func() int {
		data, err := os.ReadFile(redisPidFile(h))
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		return pid
	}

	c := &client{t: t, base: "http://" + apiAddr}
	alice := c.register("Алиса", "Лисицына", "pw-alice")
	bob := c.register("Борис", "Бобров", "pw-bob")
	token, bobToken := c.login(alice, "pw-alice"), c.login(bob, "pw-bob")
	c.do("PUT", "/friend/set/"+bob, token, nil, 200, nil)
	feedIDs := func() []string {
		var page []map[string]any
		c.do("GET", "/post/feed?offset=0&limit=10", token, nil, 200, &page)
		var ids []string
		for _, p := range page {
			ids = append(ids, p["id"].(string))
		}
		return ids
	}
	var first string
	c.do("POST", "/post/create", bobToken, map[string]any{"text": "hello from bob"}, 200, &first)
	waitFor(t, 60*time.Second, "bob's post in alice's feed", func() bool { return slices.Contains(feedIDs(), first) })
	// The page is read from alice's Redis timeline, which holds the post.
	timeline := "feed:{u:" + alice + "}:t"
	waitFor(t, 30*time.Second, "bob's post in alice's Redis timeline", func() bool {
		_ = feedIDs() // rebuilds the timeline if it raced the fan-out
		return rc.ZScore(ctx, timeline, first).Err() == nil
	})
	hits := func() int {
		info, err := rc.Info(ctx, "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`keyspace_hits:(\d+)`).FindStringSubmatch(info)
		n, _ := strconv.Atoi(m[1])
		return n
	}
	before := hits()
	if ids := feedIDs(); !slices.Equal(ids, []string{first}) {
		t.Fatalf("feed = %v, want [%s]", ids, first)
	}
	if hits() <= before {
		t.Fatal("a feed read did not read Redis (keyspace_hits unchanged)")
	}

	// Redis SIGKILLed: every read is still 200 and holds the post.
	oldPid := redisPid()
	if oldPid == 0 || !stack.ProcessAlive(oldPid) {
		t.Fatalf("redis-server pid %d from %s is not alive", oldPid, redisPidFile(h))
	}
	if err := syscall.Kill(oldPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var second string
	c.do("POST", "/post/create", bobToken, map[string]any{"text": "while redis is down"}, 200, &second)
	for range 10 {
		if ids := feedIDs(); !slices.Contains(ids, first) {
			t.Fatalf("feed right after the SIGKILL of Redis = %v, want %s in it", ids, first)
		}
	}
	// `up` restarts Redis (empty): the timeline is rebuilt with both posts.
	waitFor(t, 60*time.Second, "a new redis-server", func() bool {
		pid := redisPid()
		return pid != oldPid && stack.ProcessAlive(pid) && rc.Ping(ctx).Err() == nil
	})
	waitFor(t, 60*time.Second, "alice's timeline rebuilt in Redis with both posts", func() bool {
		ids := feedIDs()
		return slices.Equal(ids, []string{second, first}) && rc.ZScore(ctx, timeline, second).Err() == nil
	})
	var out string
	waitFor(t, 60*time.Second, "feed check without differences", func() bool {
		var b bytes.Buffer
		err := run(ctx, []string{"socnet", "feed", "check", "--home", home, "--users", "10"}, getenv, &b, &b)
		out = b.String()
		return err == nil && regexp.MustCompile(`checked [1-9]\d* cached timelines .*, 0 differ; feed_outbox backlog 0`).MatchString(out)
	})
	t.Logf("feed check: %s", out)

	// A graph seeded straight into PostgreSQL reaches the feeds through
	// rebuilds: the feed scenario reads the feeds of seeded users without
	// an error, and their timelines agree with the SQL feed.
	var b syncBuffer
	if err := run(ctx, []string{"socnet", "seed", "--home", home, "--users", "300", "--friends", "5", "--posts", "3"},
		getenv, &b, &b); err != nil || !strings.Contains(b.String(), "graph: 1500 follows and 900 posts written now") {
		t.Fatalf("seed --friends --posts: %v\n%s", err, b.String())
	}
	result := filepath.Join(t.TempDir(), "load.json")
	b = syncBuffer{}
	if err := run(ctx, []string{"socnet", "load", "--home", home, "--url", "http://" + apiAddr, "--scenario", "feed",
		"--users", "10", "--connections", "4", "--requests", "400", "--quiet", "--json", result}, getenv, &b, &b); err != nil {
		t.Fatalf("load --scenario feed: %v\n%s", err, b.String())
	}
	var res struct {
		Requests, Errors int64
	}
	mustReadJSON(t, result, &res)
	if res.Requests != 400 || res.Errors != 0 {
		t.Fatalf("load --scenario feed: %d requests, %d errors; want 400 without errors", res.Requests, res.Errors)
	}
	waitFor(t, 60*time.Second, "feed check of the seeded users without differences", func() bool {
		var b bytes.Buffer
		err := run(ctx, []string{"socnet", "feed", "check", "--home", home, "--users", "400"}, getenv, &b, &b)
		out = b.String()
		m := regexp.MustCompile(`checked (\d+) cached timelines .*, 0 differ; feed_outbox backlog 0`).FindStringSubmatch(out)
		n := 0
		if m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		return err == nil && n >= 5
	})
	t.Logf("feed check after seeding: %s", out)

	pid := redisPid()
	stopped = true
	stop()
	if stack.ProcessAlive(pid) {
		t.Errorf("redis-server (pid %d) still runs after up stopped", pid)
	}
}
