package dbroute_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
)

// TestReplicaKilled: a replica SIGKILLed under read load drops out of
// rotation; reads move to the other replica with no failures beyond the
// reads in flight on the killed node at that moment.
func TestReplicaKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "")
	mustExec(t, ctx, c.primary, "INSERT INTO items (v) SELECT 'x' || g FROM generate_series(1, 100) g")
	c.waitReplayed(t, ctx)
	r1, r2 := c.replicas[0], c.replicas[1]
	db := mustOpen(t, dbroute.Config{Nodes: c.dsns(), MaxConns: 4})
	waitFor(t, ctx, 30*time.Second, "replicas healthy", func() bool {
		return nodeStatus(t, db, r1).Healthy && nodeStatus(t, db, r2).Healthy
	})

	const workers = 4
	var (
		ok, okAfterKill atomic.Int64
		killed          atomic.Bool
		mu              sync.Mutex
		errs            errCounter
		portsAfterKill  = map[int]int{}
	)
	loadCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				after := killed.Load()
				var n int64
				var port int
				err := db.ReadReplica(loadCtx, func(q dbroute.Querier) error {
					return q.QueryRow(loadCtx, "SELECT count(*), inet_server_port() FROM items").Scan(&n, &port)
				})
				mu.Lock()
				errs.add(err)
				if err == nil && after {
					portsAfterKill[port]++
				}
				mu.Unlock()
				if err == nil {
					ok.Add(1)
					if after {
						okAfterKill.Add(1)
					}
				}
			}
		})
	}
	waitFor(t, ctx, 30*time.Second, "reads before the kill", func() bool { return ok.Load() >= 300 })
	if err := r1.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	killed.Store(true)
	waitFor(t, ctx, 30*time.Second, "r1 down", func() bool { return nodeStatus(t, db, r1).Role == dbroute.RoleDown })
	t.Logf("router saw r1 down %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	waitFor(t, ctx, 30*time.Second, "reads after the kill", func() bool { return okAfterKill.Load() >= 500 })
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("reads: %d ok (%d after the kill), %d unavailable, ports after the kill %v", ok.Load(), okAfterKill.Load(), errs.unavailable, portsAfterKill)
	for _, err := range errs.other {
		t.Errorf("read failed with a non-unavailable error: %v", err)
	}
	if errs.unavailable > workers {
		t.Errorf("%d reads failed, want at most the %d in flight at the kill", errs.unavailable, workers)
	}
	if n := portsAfterKill[r1.Config().Port]; n != 0 {
		t.Errorf("%d reads started after the kill were served by r1", n)
	}
	if portsAfterKill[r2.Config().Port] < 400 {
		t.Errorf("r2 served %d reads after the kill, want nearly all of them: %v", portsAfterKill[r2.Config().Port], portsAfterKill)
	}
	if !nodeStatus(t, db, r2).Healthy {
		t.Errorf("r2 unhealthy: %+v", nodeStatus(t, db, r2))
	}
}

// writeResult is one write of a load: when it started and ended, its error.
type writeResult struct {
	id         int64
	start, end time.Time
	err        error
}

// waitFirstWrite waits (30 s at most) for a write that started after since
// and succeeded, and returns the first one to end.
func waitFirstWrite(t *testing.T, ctx context.Context, mu *sync.Mutex, writes *[]writeResult, since time.Time) writeResult {
	t.Helper()
	var first writeResult
	waitFor(t, ctx, 30*time.Second, "a write on the new primary", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range *writes {
			if w.err == nil && w.start.After(since) && (first.end.IsZero() || w.end.Before(first.end)) {
				first = w
			}
		}
		return !first.end.IsZero()
	})
	return first
}

// countWrites counts the writes, successful or not, that started after since.
func countWrites(mu *sync.Mutex, writes *[]writeResult, since time.Time) int {
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, w := range *writes {
		if w.start.After(since) {
			n++
		}
	}
	return n
}

// TestPrimaryKilledAndReplicaPromoted: the primary is SIGKILLed under mixed
// load and the synchronous replica promoted; writes fail with unavailable
// errors only (at once, not after WriteTimeout, while no primary is known),
// reach the new primary without a restart, and once one has succeeded there
// none fails; no acknowledged write is missing there. Reads are served by the
// replicas only while they are shown fresh: once MaxReplicaLag has passed with
// no primary known they are refused, and served again after the promotion.
func TestPrimaryKilledAndReplicaPromoted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "FIRST 1 (r1, r2)")
	r1 := c.replicas[0]
	const writeTimeout = 5 * time.Second
	db := mustOpen(t, dbroute.Config{Nodes: c.dsns(), MaxConns: 4, WriteTimeout: writeTimeout})

	loadCtx, stop := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		writes  []writeResult
		readErr errCounter
		reads   atomic.Int64
		// killedAt (unix nanos) and what reads did after it: a read may be
		// served with no primary known only until MaxReplicaLag after the
		// last probe of the old primary, which came before the kill.
		killedAtNs   atomic.Int64
		lateReads    atomic.Int64 // served, started over MaxReplicaLag after the kill
		refusedReads atomic.Int64 // refused with no primary known, after the kill
		promoted     atomic.Bool
	)
	for w := range 2 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				start := time.Now()
				id, err := insertItem(loadCtx, db, fmt.Sprintf("w%d-%d", w, i))
				if err != nil && loadCtx.Err() != nil {
					// Stopped by the test itself: the server may report the
					// cancel as 57014 rather than a context error.
					return
				}
				mu.Lock()
				writes = append(writes, writeResult{id: id, start: start, end: time.Now(), err: err})
				mu.Unlock()
				if err != nil {
					// A client backs off before retrying.
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				var n int64
				start := time.Now()
				err := db.ReadReplica(loadCtx, func(q dbroute.Querier) error {
					return q.QueryRow(loadCtx, "SELECT count(*) FROM items").Scan(&n)
				})
				mu.Lock()
				readErr.add(err)
				mu.Unlock()
				killed := killedAtNs.Load()
				switch {
				case err == nil:
					reads.Add(1)
					if killed != 0 && start.UnixNano()-killed > int64(dbroute.DefaultMaxReplicaLag) && !promoted.Load() {
						lateReads.Add(1)
					}
				case killed != 0 && errors.Is(err, dbroute.ErrNoPrimary):
					refusedReads.Add(1)
				}
				if err != nil {
					// A client backs off before retrying.
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	okWrites := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, w := range writes {
			if w.err == nil {
				n++
			}
		}
		return n
	}
	waitFor(t, ctx, 30*time.Second, "writes before the kill", func() bool { return okWrites() >= 100 })

	if err := c.primary.Kill(); err != nil {
		t.Fatal(err)
	}
	// Taken once the primary is dead: until then a probe may still reach it
	// and make the replicas fresh as of that probe.
	killedAt := time.Now()
	killedAtNs.Store(killedAt.UnixNano())
	waitFor(t, ctx, 30*time.Second, "old primary seen down", func() bool {
		return nodeStatus(t, db, c.primary).Role == dbroute.RoleDown
	})
	// With no primary, no replica can be shown to hold the writes
	// acknowledged in the last MaxReplicaLag: past it, reads are refused
	// (503 through the API), never served stale, until a promotion.
	waitFor(t, ctx, 30*time.Second, "reads refused with no primary known", func() bool {
		return time.Since(killedAt) > 2*dbroute.DefaultMaxReplicaLag && refusedReads.Load() > 0
	})
	if n := lateReads.Load(); n > 0 {
		t.Errorf("%d reads served over MaxReplicaLag after the primary was killed, with no primary known", n)
	}
	readsBefore := reads.Load()
	if err := r1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promotedAt := time.Now()
	promoted.Store(true)
	waitFor(t, ctx, 30*time.Second, "reads served again after the promotion", func() bool {
		return reads.Load() > readsBefore
	})
	firstOK := waitFirstWrite(t, ctx, &mu, &writes, promotedAt)
	// Keep the load on for a while on the new primary.
	waitFor(t, ctx, 30*time.Second, "writes after the first on the new primary", func() bool {
		return countWrites(&mu, &writes, firstOK.end) >= 50
	})
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var failed, noPrimary int
	var acked []int64
	for _, w := range writes {
		switch {
		case w.err == nil:
			acked = append(acked, w.id)
		case !dbroute.IsUnavailable(w.err):
			t.Errorf("write failed with a non-unavailable error: %v", w.err)
		default:
			failed++
			if errors.Is(w.err, dbroute.ErrNoPrimary) {
				// Nothing known to write to: fail without waiting, where a
				// write to an unreachable node would wait out WriteTimeout.
				noPrimary++
				if d := w.end.Sub(w.start); d >= writeTimeout {
					t.Errorf("a write with no primary known took %v to fail, want it at once (WriteTimeout %v)", d, writeTimeout)
				}
			}
			if w.start.After(firstOK.end) {
				t.Errorf("write started %v after the first acknowledged write on the new primary failed: %v",
					w.start.Sub(firstOK.end), w.err)
			}
		}
	}
	for _, err := range readErr.other {
		t.Errorf("read failed with a non-unavailable error: %v", err)
	}
	t.Logf("kill to promotion %v; promotion to first write on the new primary %v; %d writes acknowledged, %d failed as unavailable (%d with no primary known); %d reads ok, %d unavailable",
		promotedAt.Sub(killedAt).Round(time.Millisecond), firstOK.end.Sub(promotedAt).Round(time.Millisecond), len(acked), failed, noPrimary, reads.Load(), readErr.unavailable)
	if noPrimary == 0 {
		t.Errorf("no write met the gap with no primary; the test did not exercise it")
	}
	if !nodeStatus(t, db, r1).Elected {
		t.Errorf("r1 not elected: %+v", db.Snapshot())
	}
	port, err := serverPort(ctx, db.Primary())
	if err != nil || port != r1.Config().Port {
		t.Errorf("Primary() reaches port %d (err %v), want r1's %d", port, err, r1.Config().Port)
	}
	// Synchronous replication: every acknowledged write is on the new primary.
	var missing int64
	err = db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, "SELECT count(*) FROM unnest($1::bigint[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = a.id)", acked).Scan(&missing)
	})
	if err != nil || missing != 0 {
		t.Errorf("acknowledged writes missing on the new primary: %d (err %v)", missing, err)
	}
}

// TestStuckCommitTimesOut: with synchronous_standby_names set and both
// replicas down, COMMIT waits for a standby; WriteTimeout ends the wait with
// ErrCommitUnconfirmed (the rows are committed locally), no goroutine or
// connection is leaked, and writes work again once a standby is back. The
// writes run under a context of a minute: without WriteTimeout they would
// wait for all of it.
func TestStuckCommitTimesOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "FIRST 1 (r1, r2)")
	const writeTimeout = time.Second
	const maxConns = 4
	db := mustOpen(t, dbroute.Config{Nodes: c.dsns(), WriteTimeout: writeTimeout, MaxConns: maxConns})
	if _, err := insertItem(ctx, db, "before"); err != nil {
		t.Fatalf("write with standbys up: %v", err)
	}
	for _, r := range c.replicas {
		if err := r.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, 30*time.Second, "replicas seen down", func() bool {
		return nodeStatus(t, db, c.replicas[0]).Role == dbroute.RoleDown && nodeStatus(t, db, c.replicas[1]).Role == dbroute.RoleDown
	})
	baseline := runtime.NumGoroutine()

	// More writers than connections: some wait for a connection, not a
	// standby; all must end within the timeout.
	const writers = maxConns + 2
	type outcome struct {
		elapsed time.Duration
		err     error
	}
	const callerWait = time.Minute
	writeCtx, cancelWrites := context.WithTimeout(ctx, callerWait)
	defer cancelWrites()
	results := make([]outcome, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			start := time.Now()
			_, err := insertItem(writeCtx, db, fmt.Sprint("stuck", i))
			results[i] = outcome{time.Since(start), err}
		})
	}
	wg.Wait()
	unconfirmed := 0
	for i, r := range results {
		t.Logf("stuck write %d: %v after %v", i, r.err, r.elapsed.Round(time.Millisecond))
		if r.err == nil || !dbroute.IsUnavailable(r.err) {
			t.Errorf("write %d: err = %v, want an unavailable error", i, r.err)
		}
		// Ended by WriteTimeout, not by the caller's minute; an unconfirmed
		// commit waited for all of WriteTimeout first.
		if r.elapsed >= callerWait/2 || errors.Is(r.err, context.DeadlineExceeded) && writeCtx.Err() != nil {
			t.Errorf("write %d took %v (%v): want it ended by WriteTimeout %v, not by the caller's %v", i, r.elapsed, r.err, writeTimeout, callerWait)
		}
		if errors.Is(r.err, dbroute.ErrCommitUnconfirmed) {
			unconfirmed++
			if r.elapsed < writeTimeout {
				t.Errorf("write %d: unconfirmed after %v, before WriteTimeout %v", i, r.elapsed, writeTimeout)
			}
		}
	}
	if unconfirmed == 0 {
		t.Errorf("no write reached a stuck COMMIT")
	}

	// The server released the waiting backends (cancelled, not abandoned),
	// and each unconfirmed commit is there, committed locally.
	waitFor(t, ctx, 30*time.Second, "no backend waiting for a standby", func() bool {
		return queryInt(t, ctx, c.primary, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == 0
	})
	if n := queryInt(t, ctx, c.primary, "SELECT count(*) FROM items WHERE v LIKE 'stuck%'"); n != int64(unconfirmed) {
		t.Errorf("%d stuck rows committed locally, want one per unconfirmed commit (%d)", n, unconfirmed)
	}
	// No leaks: every connection is back in the pool or destroyed, and the
	// goroutines are as before.
	if st := db.Primary().Stat(); st.AcquiredConns() != 0 || st.TotalConns() > maxConns {
		t.Errorf("pool after the stuck writes: acquired %d, total %d; want 0 and at most %d", st.AcquiredConns(), st.TotalConns(), maxConns)
	}
	waitFor(t, ctx, 30*time.Second, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseline
	})
	// The pool still works for reads.
	var n int64
	if err := db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n)
	}); err != nil {
		t.Errorf("read after the stuck writes: %v", err)
	}

	// A standby back: writes are confirmed again.
	r1 := c.replicas[0]
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, ctx, c.primary, r1.Name())
	if _, err := insertItem(ctx, db, "after"); err != nil {
		t.Errorf("write with r1 back: %v", err)
	}
}

// TestTwoPrimariesHigherTimelineWins: a replica promoted while the old
// primary still runs (a switchover in progress, or split brain) takes the
// writes, since its timeline is higher; a second promotion onto the same
// timeline does not move them again.
func TestTwoPrimariesHigherTimelineWins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "")
	r1, r2 := c.replicas[0], c.replicas[1]
	db := mustOpen(t, dbroute.Config{Nodes: c.dsns(), HealthInterval: 100 * time.Millisecond})
	waitPrimary(t, ctx, db, c.primary, 30*time.Second)
	writePort := func() int {
		t.Helper()
		var port int
		err := db.Transact(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO items (v) VALUES ('x')"); err != nil {
				return err
			}
			return tx.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
		})
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		return port
	}
	if got := writePort(); got != c.primary.Config().Port {
		t.Fatalf("write went to port %d, want the primary's %d", got, c.primary.Config().Port)
	}

	if err := r1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitPrimary(t, ctx, db, r1, 30*time.Second)
	if got := writePort(); got != r1.Config().Port {
		t.Errorf("write went to port %d, want r1's %d (timeline 2)", got, r1.Config().Port)
	}
	old := nodeStatus(t, db, c.primary)
	if old.Role != dbroute.RolePrimary || old.Elected || old.Timeline != 1 {
		t.Errorf("old primary status %+v: want role primary, timeline 1, not elected", old)
	}
	if st := nodeStatus(t, db, r1); st.Timeline != 2 {
		t.Errorf("r1 timeline %d, want 2", st.Timeline)
	}

	if err := r2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, 30*time.Second, "r2 seen as primary", func() bool { return nodeStatus(t, db, r2).Role == dbroute.RolePrimary })
	// Several probes of both later (counted, not timed), r1 is still the
	// one elected.
	seen := map[string]time.Time{"r1": nodeStatus(t, db, r1).CheckedAt, "r2": nodeStatus(t, db, r2).CheckedAt}
	probes := map[string]int{}
	waitFor(t, ctx, 30*time.Second, "5 probes of r1 and r2 with both primary", func() bool {
		for name, n := range map[string]*pgnode.Node{"r1": r1, "r2": r2} {
			st := nodeStatus(t, db, n)
			if st.Role != dbroute.RolePrimary || st.Timeline != 2 {
				t.Fatalf("%s: %+v, want primary on timeline 2", name, st)
			}
			if st.CheckedAt.After(seen[name]) {
				seen[name] = st.CheckedAt
				probes[name]++
			}
		}
		if !nodeStatus(t, db, r1).Elected {
			t.Fatalf("the elected primary moved off r1 on a timeline tie: %+v", db.Snapshot())
		}
		return probes["r1"] >= 5 && probes["r2"] >= 5
	})
	if got := writePort(); got != r1.Config().Port {
		t.Errorf("write went to port %d, want r1's %d", got, r1.Config().Port)
	}
}

// TestWritesOnAReplacedPrimaryEnd: a write still running on the primary
// when another node is elected (a primary cut off from the network answers
// nothing, and its writes would wait out WriteTimeout) ends at once as
// unavailable, and nothing of it commits there.
func TestWritesOnAReplacedPrimaryEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := mustCluster(t, 1, "")
	r1 := c.replicas[0]
	const writeTimeout = 2 * time.Minute
	db := mustOpen(t, dbroute.Config{Nodes: c.dsns(), HealthInterval: 100 * time.Millisecond, WriteTimeout: writeTimeout})
	waitPrimary(t, ctx, db, c.primary, 30*time.Second)

	done := make(chan error, 1)
	go func() {
		done <- db.Transact(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO items (v) VALUES ('abandoned')"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "SELECT pg_sleep(600)")
			return err
		})
	}()
	waitFor(t, ctx, 30*time.Second, "the write sleeping on the primary", func() bool {
		return queryInt(t, ctx, c.primary, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%' AND state = 'active'") == 1
	})
	if err := r1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(writeTimeout / 2):
		t.Fatalf("the write on the replaced primary still runs %v after r1's promotion (write timeout %v)", writeTimeout/2, writeTimeout)
	}
	if !dbroute.IsUnavailable(err) || !errors.Is(err, dbroute.ErrUnavailable) {
		t.Fatalf("write on the replaced primary: %v; want ErrUnavailable", err)
	}
	if st := nodeStatus(t, db, r1); !st.Elected {
		t.Fatalf("r1 not elected after the write ended: %+v", st)
	}
	waitFor(t, ctx, 30*time.Second, "the abandoned transaction gone from the old primary", func() bool {
		return queryInt(t, ctx, c.primary, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%'") == 0
	})
	if n := queryInt(t, ctx, c.primary, "SELECT count(*) FROM items WHERE v = 'abandoned'"); n != 0 {
		t.Errorf("the abandoned write committed on the old primary (%d rows)", n)
	}
	// Writes go on, on the new primary.
	if _, err := insertItem(ctx, db, "after"); err != nil {
		t.Fatalf("write after the election: %v", err)
	}
}
