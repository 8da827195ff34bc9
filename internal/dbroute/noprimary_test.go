package dbroute_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"socnet/internal/dbroute"
	"socnet/internal/drill"
	"socnet/internal/pgnode"
)

// staleRead is one ReadReplica call of the staleness tests.
type staleRead struct {
	invoke time.Time
	port   int
	maxID  int64 // the highest items.id the read saw
	err    error
}

// readMaxID reads the highest items.id through ReadReplica, on a context
// bounded well above any wait dbroute may do, so that a hang shows as a
// context error rather than a stuck test.
func readMaxID(ctx context.Context, db *dbroute.DB) staleRead {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r := staleRead{invoke: time.Now()}
	r.err = db.ReadReplica(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, "SELECT coalesce(max(id), 0), inet_server_port() FROM items").Scan(&r.maxID, &r.port)
	})
	return r
}

// holdBack stops the primary's WAL sender to replica (as the failover drill
// does), so that the replica receives nothing more while the primary
// commits. The hold ends in t.Cleanup at the latest, before the nodes stop.
func holdBack(t *testing.T, ctx context.Context, c *testCluster, replica *pgnode.Node) *drill.Hold {
	t.Helper()
	nodes := []drill.Node{
		{Name: c.primary.Name(), Role: drill.RolePrimary, DSN: c.primary.DSN("")},
		{Name: replica.Name(), Role: drill.RoleReplica, DSN: replica.DSN("")},
	}
	hold, err := drill.HoldBack(ctx, nodes, replica.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hold.Release(); err != nil {
			t.Errorf("release the hold on %s: %v", replica.Name(), err)
		}
	})
	return hold
}

// TestNoPrimaryReadsOnlyWithinTheBound: r2 is held back (its WAL sender
// stopped) and misses a write that r1 replays; then the primary dies. While
// no primary is known, no read invoked more than MaxReplicaLag after the
// write was acknowledged may miss it: r1, caught up, serves reads at first,
// r2 serves none that miss it, and once the router cannot vouch for any
// replica, reads fail at once as unavailable (ErrNoPrimary with the default
// policy, ErrNoReplica with NoReplicaFail) and keep failing until a replica
// is promoted.
func TestNoPrimaryReadsOnlyWithinTheBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "")
	r1, r2 := c.replicas[0], c.replicas[1]
	const bound = 3 * time.Second
	cfg := dbroute.Config{Nodes: c.dsns(), HealthInterval: 100 * time.Millisecond, MaxReplicaLag: bound}
	lenient := mustOpen(t, cfg)
	cfg.NoReplica = dbroute.NoReplicaFail
	strict := mustOpen(t, cfg)
	routers := []struct {
		name string
		db   *dbroute.DB
		want error // the error of a read no replica may serve
	}{
		{"default policy", lenient, dbroute.ErrNoPrimary},
		{"NoReplicaFail", strict, dbroute.ErrNoReplica},
	}
	for _, r := range routers {
		waitFor(t, ctx, 30*time.Second, r.name+": replicas healthy", func() bool {
			return nodeStatus(t, r.db, r1).Healthy && nodeStatus(t, r.db, r2).Healthy
		})
	}

	holdBack(t, ctx, c, r2)
	id, err := insertItem(ctx, lenient, "missed by r2")
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	acked := time.Now()
	waitFor(t, ctx, 30*time.Second, "r1 replayed the write", func() bool {
		return queryInt(t, ctx, r1, "SELECT count(*) FROM items WHERE id = $1", id) == 1
	})
	if n := queryInt(t, ctx, r2, "SELECT count(*) FROM items WHERE id = $1", id); n != 0 {
		t.Fatalf("r2 has the write made while it was held back")
	}

	if err := c.primary.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, r := range routers {
		waitFor(t, ctx, 30*time.Second, r.name+": primary seen down", func() bool {
			return nodeStatus(t, r.db, c.primary).Role == dbroute.RoleDown
		})
	}
	downAt := time.Now()

	// Read through both routers until each has refused 5 reads in a row.
	reads := make([][]staleRead, len(routers))
	refusedInARow := make([]int, len(routers))
	done := func() bool {
		for _, n := range refusedInARow {
			if n < 5 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for !done() && time.Now().Before(deadline) {
		for i, r := range routers {
			rd := readMaxID(ctx, r.db)
			reads[i] = append(reads[i], rd)
			if rd.err != nil {
				refusedInARow[i]++
			} else {
				refusedInARow[i] = 0
			}
		}
		time.Sleep(10 * time.Millisecond)
	}

	r1Port, r2Port := r1.Config().Port, r2.Config().Port
	for i, r := range routers {
		var r1Reads, r2Reads, refused, stale int
		for _, rd := range reads[i] {
			switch {
			case rd.err != nil:
				refused++
				if !errors.Is(rd.err, r.want) || !dbroute.IsUnavailable(rd.err) {
					t.Errorf("%s: read with no primary failed with %v, want %v (unavailable)", r.name, rd.err, r.want)
				}
			case refused > 0:
				t.Errorf("%s: a read %v after the primary was seen down succeeded on port %d after reads had been refused: no replica can become fresher while no primary is known",
					r.name, rd.invoke.Sub(downAt).Round(time.Millisecond), rd.port)
			case rd.invoke.Sub(acked) > bound && rd.maxID < id:
				if stale++; stale > 3 {
					continue
				}
				t.Errorf("%s: a read invoked %v after the write was acknowledged (bound %v) missed it, served by port %d",
					r.name, rd.invoke.Sub(acked).Round(time.Millisecond), bound, rd.port)
			case rd.port == r1Port:
				r1Reads++
			case rd.port == r2Port:
				r2Reads++
			}
		}
		t.Logf("%s: %d reads with no primary known: %d on r1, %d on r2, %d refused, %d stale", r.name, len(reads[i]), r1Reads, r2Reads, refused, stale)
		if !done() {
			t.Errorf("%s: reads still served %v after the primary was seen down (%d refused in a row), want them refused past the lag bound",
				r.name, time.Since(downAt).Round(time.Millisecond), refusedInARow[i])
		}
		if r1Reads == 0 {
			t.Errorf("%s: caught-up r1 served no read after the primary was seen down, want reads within the lag bound", r.name)
		}
	}

	// A promotion brings reads back.
	if err := r1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, 30*time.Second, "reads after the promotion", func() bool {
		rd := readMaxID(ctx, lenient)
		return rd.err == nil && rd.maxID >= id
	})
}

// TestCutReplicaLeavesRotationInTime: with the primary up and writing, a
// replica whose WAL sender is stopped has replayed all it received, so its
// replay-timestamp lag is 0; still, no read invoked more than MaxReplicaLag
// after a write was acknowledged may miss that write, whichever node serves
// it. The replica leaves the rotation, and returns once it streams again.
// The health interval is half the bound, so that a router measuring lag
// only at its probes would be late by up to two intervals.
func TestCutReplicaLeavesRotationInTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := mustCluster(t, 1, "")
	r1 := c.replicas[0]
	const bound = time.Second
	db := mustOpen(t, dbroute.Config{Nodes: c.dsns(), HealthInterval: 500 * time.Millisecond, MaxReplicaLag: bound})
	waitFor(t, ctx, 30*time.Second, "r1 healthy", func() bool { return nodeStatus(t, db, r1).Healthy })

	type write struct {
		id    int64
		acked time.Time
	}
	var (
		mu     sync.Mutex
		writes []write
		reads  []staleRead
	)
	loadCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// One writer, so that ids are acknowledged in order.
	wg.Go(func() {
		for i := 0; loadCtx.Err() == nil; i++ {
			id, err := insertItem(loadCtx, db, fmt.Sprint("w", i))
			if loadCtx.Err() != nil {
				return
			}
			if err != nil {
				t.Errorf("write: %v", err)
				return
			}
			mu.Lock()
			writes = append(writes, write{id: id, acked: time.Now()})
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})
	wg.Go(func() {
		for loadCtx.Err() == nil {
			rd := readMaxID(loadCtx, db)
			if loadCtx.Err() != nil {
				return
			}
			mu.Lock()
			reads = append(reads, rd)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	})
	defer func() { stop(); wg.Wait() }()
	r1Port := r1.Config().Port
	readsOn := func(port int, since time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, rd := range reads {
			if rd.err == nil && rd.port == port && rd.invoke.After(since) {
				n++
			}
		}
		return n
	}
	waitFor(t, ctx, 30*time.Second, "reads on r1 before the cut", func() bool { return readsOn(r1Port, time.Time{}) >= 20 })

	hold := holdBack(t, ctx, c, r1)
	cutAt := time.Now()
	waitFor(t, ctx, 30*time.Second, "r1 out of rotation", func() bool { return !nodeStatus(t, db, r1).Healthy })
	out := time.Now()
	t.Logf("r1 left the rotation %v after the cut", out.Sub(cutAt).Round(time.Millisecond))
	waitFor(t, ctx, 30*time.Second, "reads on the primary after r1 left", func() bool {
		return readsOn(c.primary.Config().Port, out) >= 20
	})
	if n := queryInt(t, ctx, r1, "SELECT count(*) FROM items"); n >= queryInt(t, ctx, c.primary, "SELECT count(*) FROM items") {
		t.Fatalf("r1 has every row of the primary: the hold did not cut it off")
	}
	if err := hold.Release(); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	waitFor(t, ctx, 30*time.Second, "reads on r1 after the release", func() bool { return readsOn(r1Port, released) >= 5 })
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	stale := 0
	for _, rd := range reads {
		if rd.err != nil {
			t.Errorf("read: %v", rd.err)
			continue
		}
		// The newest write acknowledged more than the bound before the read.
		var need write
		for _, w := range writes {
			if rd.invoke.Sub(w.acked) > bound {
				need = w
			}
		}
		if rd.maxID < need.id {
			stale++
			if stale <= 3 {
				t.Errorf("a read invoked %v after the cut, on port %d, saw id %d; write %d was acknowledged %v before the read (bound %v)",
					rd.invoke.Sub(cutAt).Round(time.Millisecond), rd.port, rd.maxID, need.id, rd.invoke.Sub(need.acked).Round(time.Millisecond), bound)
			}
		}
	}
	t.Logf("%d writes, %d reads, %d stale", len(writes), len(reads), stale)
}
