package dbroute_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
)

// TestFailoverBySupervisor: the main cluster (primary, sync and async
// replica) under internal/cluster's supervisor; the router is given the
// cluster's multi-host DSN only. The primary is SIGKILLed under mixed load;
// the supervisor promotes a replica. Writes fail only with unavailable
// errors and succeed on the new primary (whose promotion an independent
// poller sees), without a restart of the router; once one has succeeded
// there, none fails.
func TestFailoverBySupervisor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := cluster.MainSpec()
	spec.Settings = map[string]string{"shared_buffers": "32MB", "max_connections": "50"}
	log := slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "cluster:"), nil))
	c, err := cluster.Open(cluster.Dir(t.TempDir(), spec.Name), spec, log, cluster.Options{
		Output:        pgtest.LogWriter(t, ""),
		ProbeInterval: 100 * time.Millisecond,
		ProbeTimeout:  300 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("open cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		c.Close()
	})
	if err := c.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	supCtx, stopSup := context.WithCancel(ctx)
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		if err := c.Supervise(supCtx); err != nil {
			t.Errorf("supervise: %v", err)
		}
	}()
	t.Cleanup(func() { stopSup(); <-supDone })

	oldPrimary := c.Primary()
	setup, err := pgx.Connect(ctx, c.PrimaryDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Exec(ctx, "CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	var target int64
	if err := setup.QueryRow(ctx, "SELECT pg_current_wal_lsn() - '0/0'").Scan(&target); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)
	// Replica reads may be up to MaxReplicaLag stale: let the replicas
	// replay the table before reading it there.
	for _, name := range c.Nodes() {
		if name == oldPrimary {
			continue
		}
		waitFor(t, ctx, 30*time.Second, name+" replayed the table", func() bool {
			conn, err := pgx.Connect(ctx, c.Node(name).DSN(""))
			if err != nil {
				return false
			}
			defer conn.Close(context.Background())
			var pos int64
			return conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() - '0/0'").Scan(&pos) == nil && pos >= target
		})
	}

	db := mustOpen(t, dbroute.Config{Name: "main", Primary: c.FailoverDSN(""), MaxConns: 4})

	// An independent poller notes when each replica leaves recovery.
	promoted := make(chan time.Time, 1)
	pollCtx, stopPoll := context.WithCancel(ctx)
	var pollers sync.WaitGroup
	for _, name := range c.Nodes() {
		if name == oldPrimary {
			continue
		}
		pollers.Go(func() {
			conn, err := pgx.Connect(pollCtx, c.Node(name).DSN(""))
			if err != nil {
				t.Errorf("poller %s: %v", name, err)
				return
			}
			defer conn.Close(context.Background())
			for pollCtx.Err() == nil {
				var rec bool
				if err := conn.QueryRow(pollCtx, "SELECT pg_is_in_recovery()").Scan(&rec); err == nil && !rec {
					select {
					case promoted <- time.Now():
					default:
					}
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	defer func() { stopPoll(); pollers.Wait() }()

	loadCtx, stopLoad := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		writes  []writeResult
		readErr errCounter
	)
	for w := range 2 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				start := time.Now()
				id, err := insertItem(loadCtx, db, fmt.Sprintf("w%d-%d", w, i))
				if err != nil && loadCtx.Err() != nil {
					return // stopped by the test itself (a context error or the server's 57014)
				}
				mu.Lock()
				writes = append(writes, writeResult{id: id, start: start, end: time.Now(), err: err})
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	wg.Go(func() {
		for loadCtx.Err() == nil {
			var n int64
			err := db.ReadReplica(loadCtx, func(q dbroute.Querier) error {
				return q.QueryRow(loadCtx, "SELECT count(*) FROM items").Scan(&n)
			})
			mu.Lock()
			readErr.add(err)
			mu.Unlock()
		}
	})
	waitFor(t, ctx, 30*time.Second, "writes before the kill", func() bool { return countWrites(&mu, &writes, time.Time{}) >= 100 })

	if err := c.Node(oldPrimary).Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	var promotedAt time.Time
	select {
	case promotedAt = <-promoted:
	case <-time.After(60 * time.Second):
		t.Fatalf("no replica promoted within 60s of the kill")
	}
	firstOK := waitFirstWrite(t, ctx, &mu, &writes, promotedAt)
	waitFor(t, ctx, 30*time.Second, "load on the new primary", func() bool { return countWrites(&mu, &writes, firstOK.end) >= 50 })
	stopLoad()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var failed int
	var acked []int64
	for _, w := range writes {
		switch {
		case w.err == nil:
			acked = append(acked, w.id)
		case !dbroute.IsUnavailable(w.err):
			t.Errorf("write failed with a non-unavailable error: %v", w.err)
		default:
			failed++
			if w.start.After(firstOK.end) {
				t.Errorf("write started %v after the first acknowledged write on the new primary failed: %v",
					w.start.Sub(firstOK.end), w.err)
			}
		}
	}
	for _, err := range readErr.other {
		t.Errorf("read failed with a non-unavailable error: %v", err)
	}
	t.Logf("kill to promotion %v (supervisor); promotion to first write through the router %v; %d writes acknowledged, %d unavailable; %d reads unavailable",
		promotedAt.Sub(killedAt).Round(time.Millisecond), firstOK.end.Sub(promotedAt).Round(time.Millisecond), len(acked), failed, readErr.unavailable)
	newPrimary := c.Primary()
	if newPrimary == oldPrimary {
		t.Fatalf("cluster still names %s primary", oldPrimary)
	}
	if st := nodeStatus(t, db, c.Node(newPrimary)); !st.Elected {
		t.Errorf("router did not elect the new primary %s: %+v", newPrimary, db.Snapshot())
	}
	var missing int64
	err = db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, "SELECT count(*) FROM unnest($1::bigint[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = a.id)", acked).Scan(&missing)
	})
	if err != nil || missing != 0 {
		t.Errorf("acknowledged writes missing on the new primary: %d (err %v)", missing, err)
	}
}
