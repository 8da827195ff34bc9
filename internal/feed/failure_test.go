package feed_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"socnet/internal/feed"
	"socnet/internal/pgtest"
)

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mustGraph inserts users following each other at random (follows each),
// with posts posts each, straight into PostgreSQL without events, as a seed
// or a restore would.
func (e *env) mustGraph(t testing.TB, users []uuid.UUID, follows, posts int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var us, fs []uuid.UUID
	for i, u := range users {
		for _, j := range rng.Perm(len(users) - 1)[:follows] {
			us, fs = append(us, u), append(fs, users[(i+1+j)%len(users)])
		}
	}
	ctx := testCtx(t, time.Minute)
	if _, err := e.admin.Exec(ctx, `INSERT INTO friends (user_id, friend_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])`, us, fs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Exec(ctx, `INSERT INTO posts (id, author_user_id, text, created_at)
		SELECT gen_random_uuid(), u, 'seeded', now() - n * interval '1 minute'
		FROM unnest($1::uuid[]) u, generate_series(1, $2) n`, users, posts); err != nil {
		t.Fatal(err)
	}
}

// Redis SIGKILLed under feed load: no read fails, pages come from
// PostgreSQL meanwhile, and after Redis returns empty the rebuilt timelines
// equal the SQL feed.
func TestRedisKilledUnderLoad(t *testing.T) {
	e := mustEnv(t, 0)
	users := e.mustUsers(t, 40)
	e.mustGraph(t, users, 8, 3, 1)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() {
		if err := e.worker.Run(ctx); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	var served [3]atomic.Int64 // redis, rebuilt, postgres
	index := map[feed.Served]int{feed.ServedRedis: 0, feed.ServedRebuilt: 1, feed.ServedPostgres: 2}
	var failed atomic.Value
	for r := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for i := 0; i < 200000 && ctx.Err() == nil; i++ {
				u := users[rng.IntN(len(users))]
				posts, s, err := e.reader.Page(ctx, u.String(), rng.IntN(10), 10)
				if err != nil {
					if ctx.Err() == nil {
						failed.CompareAndSwap(nil, fmt.Sprintf("Page(%s): %v", u, err))
					}
					return
				}
				seen := map[string]bool{}
				for _, p := range posts {
					if seen[p.ID] {
						failed.CompareAndSwap(nil, fmt.Sprintf("Page(%s) from %s has %s twice", u, s, p.ID))
					}
					seen[p.ID] = true
				}
				served[index[s]].Add(1)
			}
		})
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(5, 6))
		for i := 0; i < 5000 && ctx.Err() == nil; i++ {
			e.post(t, users[rng.IntN(len(users))])
			time.Sleep(5 * time.Millisecond)
		}
	})
	check := func() {
		if f := failed.Load(); f != nil {
			t.Fatal(f)
		}
	}
	atLeast := func(i int, n int64) func() bool {
		return func() bool { check(); return served[i].Load() >= n }
	}
	waitFor(t, time.Minute, "reads from redis", atLeast(0, served[0].Load()+200))
	e.redis.Kill(t)
	waitFor(t, time.Minute, "reads from PostgreSQL while Redis is down", atLeast(2, served[2].Load()+200))
	rebuilt, fromRedis := served[1].Load(), served[0].Load()
	e.redis.Start(t) // empty
	waitFor(t, time.Minute, "rebuilds after Redis returned", atLeast(1, rebuilt+20))
	waitFor(t, time.Minute, "reads from the new Redis", atLeast(0, fromRedis+200))
	stop()
	wg.Wait()
	check()
	t.Logf("pages served: redis %d, rebuilt %d, postgres %d", served[0].Load(), served[1].Load(), served[2].Load())
	for s, i := range index {
		if got := pagesServed(t, e, s); got != float64(served[i].Load()) {
			t.Errorf("socnet_feed_pages_total{served=%q} = %v, want %d", s, got, served[i].Load())
		}
	}

	e.drain(t)
	rep := e.mustCheck(t, users)
	if rep.Checked < len(users)/2 {
		t.Fatalf("only %d of %d timelines cached after the load", rep.Checked, len(users))
	}
	t.Logf("check: %d timelines equal the SQL feed, %d not cached", rep.Checked, rep.Uncached)
}

// pagesServed returns the reader's socnet_feed_pages_total of one source.
func pagesServed(t *testing.T, e *env, s feed.Served) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "socnet_feed_pages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == string(s) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no socnet_feed_pages_total{served=%q}", s)
	return 0
}

// A worker SIGKILLed in the middle of its fan-out leaves its batch to the
// next worker: afterwards every follower's timeline has every post, once.
func TestWorkerKilledMidFanOut(t *testing.T) {
	e := mustEnv(t, 0)
	authors := e.mustUsers(t, 5)
	followers := e.mustUsers(t, 400)
	var us, fs []uuid.UUID
	for _, f := range followers {
		for _, a := range authors {
			us, fs = append(us, f), append(fs, a)
		}
	}
	ctx := testCtx(t, 2*time.Minute)
	if _, err := e.admin.Exec(ctx, `INSERT INTO friends (user_id, friend_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])`, us, fs); err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		if _, served := e.page(t, f, 0, 1); served != feed.ServedRebuilt {
			t.Fatalf("first read served from %s", served)
		}
	}
	const posts = 150
	var ids []uuid.UUID
	for i := range posts {
		ids = append(ids, e.post(t, authors[i%len(authors)]))
	}
	pending := func() int {
		var n int
		if err := e.admin.QueryRow(ctx, `SELECT count(*) FROM feed_outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Kill the worker once it has applied part of a batch it has not
	// committed: the third event of the batch after the committed ones has
	// reached a follower, the outbox still holds the whole batch.
	const batch = 10
	w := startWorker(t, e, batch)
	var left, applied int
	waitFor(t, time.Minute, "the worker in the middle of a batch", func() bool {
		left = pending()
		applied = posts - left
		if left < 2*batch {
			t.Fatalf("the worker got to the last batches before it was caught mid-batch")
		}
		return applied > 0 && contains(e.timeline(t, followers[0]), ids[applied+2]) && pending() == left
	})
	w.kill(t)
	if got := pending(); got != left {
		t.Fatalf("outbox changed from %d to %d events while the worker was killed", left, got)
	}
	reached := func(id uuid.UUID) (n int) {
		for _, f := range followers {
			if contains(e.timeline(t, f), id) {
				n++
			}
		}
		return n
	}
	t.Logf("killed with %d of %d events left; of its uncommitted batch, event 3 reached %d followers, event %d reached %d",
		left, posts, reached(ids[applied+2]), batch, reached(ids[applied+batch-1]))

	w2 := startWorker(t, e, 10)
	waitFor(t, time.Minute, "the second worker to drain the outbox", func() bool { return pending() == 0 })
	w2.stop(t)

	all := append(append([]uuid.UUID(nil), followers...), authors...)
	rep := e.mustCheck(t, all)
	if rep.Uncached != len(authors) {
		t.Fatalf("%d timelines not cached, want only the %d authors'", rep.Uncached, len(authors))
	}
	for _, f := range followers {
		tl := e.timeline(t, f)
		if len(tl) != posts {
			t.Fatalf("timeline of %s has %d posts, want %d", f, len(tl), posts)
		}
		for _, id := range ids {
			if !contains(tl, id) {
				t.Fatalf("timeline of %s misses post %s", f, id)
			}
		}
		got, served := e.page(t, f, 0, posts)
		seen := map[string]bool{}
		for _, id := range got {
			if seen[id] {
				t.Fatalf("page of %s has %s twice", f, id)
			}
			seen[id] = true
		}
		if served != feed.ServedRedis || len(got) != posts {
			t.Fatalf("page of %s: %d posts from %s", f, len(got), served)
		}
	}
}

// worker is a feed worker in a child process (the test binary, started
// again with roleEnv).
type worker struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startWorker(t *testing.T, e *env, batch int) *worker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=worker", envDB+"="+e.dsn, envRedisAddr+"="+e.redis.Addr,
		envRedisPassword+"="+e.redis.Password, fmt.Sprintf("%s=%d", envBatch, batch))
	out := pgtest.LogWriter(t, "worker |")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &worker{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() { w.kill(t) })
	return w
}

func (w *worker) kill(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

func (w *worker) stop(t *testing.T) {
	t.Helper()
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
		if code := w.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("worker exited with %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("worker did not stop on SIGTERM")
		w.kill(t)
	}
}
