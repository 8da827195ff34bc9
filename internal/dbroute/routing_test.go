package dbroute_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
	"socnet/internal/social"
)

// xactCommits returns pg_stat_database.xact_commit of database postgres on
// every node.
func xactCommits(t *testing.T, ctx context.Context, nodes []*pgnode.Node) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, n := range nodes {
		out[n.Name()] = queryInt(t, ctx, n, "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
	}
	return out
}

// counterValue sums the counter name's series whose labels include want.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, want) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			found++
		}
	}
	return found == len(want)
}

// gaugeValue returns the gauge name's series with labels want.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, want) {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no gauge %s%v", name, want)
	return 0
}

// TestReadsGoToReplicas: under read load through ReadReplica the replicas'
// commit counters grow by the number of reads while the primary's grows only
// by the router's probes (one per HealthInterval) and the test's own queries,
// and the reads are spread over both replicas.
func TestReadsGoToReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "")
	mustExec(t, ctx, c.primary, "INSERT INTO items (v) SELECT 'x' || g FROM generate_series(1, 1000) g")
	c.waitReplayed(t, ctx)
	reg := prometheus.NewRegistry()
	const healthInterval = 100 * time.Millisecond
	db := mustOpen(t, dbroute.Config{
		Name:           "main",
		Primary:        c.multiHostDSN(),
		HealthInterval: healthInterval,
		MaxConns:       4,
		Registry:       reg,
	})
	for _, r := range c.replicas {
		waitFor(t, ctx, 30*time.Second, r.Name()+" healthy", func() bool { return nodeStatus(t, db, r).Healthy })
	}
	if !nodeStatus(t, db, c.primary).Elected {
		t.Fatalf("primary %s not elected: %+v", c.primary.Name(), db.Snapshot())
	}

	probing := time.Now()
	before := xactCommits(t, ctx, c.nodes())
	const workers, perWorker = 4, 400
	const reads = workers * perWorker
	var wg sync.WaitGroup
	var failures atomic.Int64
	for range workers {
		wg.Go(func() {
			for range perWorker {
				var n int64
				err := db.ReadReplica(ctx, func(q dbroute.Querier) error {
					return q.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n)
				})
				if err != nil || n != 1000 {
					failures.Add(1)
					t.Errorf("read: n=%d err=%v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.FailNow()
	}
	snap := db.Snapshot()
	if got := counterValue(t, reg, "socnet_db_routing_decisions_total", map[string]string{"decision": dbroute.DecisionReplica, "db": "main"}); got != reads {
		t.Errorf("decision=replica counted %v, want %d", got, reads)
	}
	if got := counterValue(t, reg, "socnet_db_queries_total", map[string]string{"role": dbroute.RoleReplica}); got != reads {
		t.Errorf("queries with role=replica counted %v, want %d", got, reads)
	}
	// Closing the pools ends their backends, which flush their statistics,
	// and stops the probes.
	db.Close()
	probed := time.Since(probing)

	var after map[string]int64
	queries := 1 // xactCommits calls: the one before, and the polls
	waitFor(t, ctx, 30*time.Second, "replica statistics", func() bool {
		queries++
		after = xactCommits(t, ctx, c.nodes())
		sum := int64(0)
		for _, r := range c.replicas {
			sum += after[r.Name()] - before[r.Name()]
		}
		return sum >= reads
	})
	primaryDelta := after[c.primary.Name()] - before[c.primary.Name()]
	// On the primary: a probe every HealthInterval while the router was open
	// (a transaction each, counted twice for the ones a busy machine runs
	// late and then back to back), each statistics query of this test with
	// its connection's start, and up to 20 of autovacuum's and the
	// statistics collector's, whatever the reads' speed. Reads sent there
	// would add one each: a few percent of them exceed this.
	most := 2*(int64(probed/healthInterval)+1) + int64(2*queries) + 20
	t.Logf("xact_commit growth over %d replica reads in %v: primary %d (at most %d), r1 %d, r2 %d", reads,
		probed.Round(time.Millisecond), primaryDelta, most, after["r1"]-before["r1"], after["r2"]-before["r2"])
	if primaryDelta > most {
		t.Errorf("primary committed %d transactions during %d replica reads in %v, want at most %d (probes and statistics queries only)",
			primaryDelta, reads, probed.Round(time.Millisecond), most)
	}
	for _, r := range c.replicas {
		if d := after[r.Name()] - before[r.Name()]; d < reads/4 {
			t.Errorf("%s committed %d of %d reads, want at least a quarter: reads not spread", r.Name(), d, reads)
		}
	}
	for _, s := range snap {
		t.Logf("snapshot: %+v", s)
	}
}

// TestLaggingReplicaGetsNoReads pauses replay on r1 under a trickle of
// writes: once its lag passes MaxReplicaLag it gets no reads, r2 serves
// them, and after replay resumes r1 serves again.
func TestLaggingReplicaGetsNoReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "")
	r1, r2 := c.replicas[0], c.replicas[1]
	reg := prometheus.NewRegistry()
	db := mustOpen(t, dbroute.Config{
		Nodes:          c.dsns(),
		HealthInterval: 100 * time.Millisecond,
		MaxReplicaLag:  time.Second,
		Registry:       reg,
	})
	waitFor(t, ctx, 30*time.Second, "replicas healthy", func() bool {
		return nodeStatus(t, db, r1).Healthy && nodeStatus(t, db, r2).Healthy
	})

	writeCtx, stopWrites := context.WithCancel(ctx)
	var writes sync.WaitGroup
	writes.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-writeCtx.Done():
				return
			case <-tick.C:
			}
			if _, err := insertItem(writeCtx, db, fmt.Sprint("w", i)); err != nil && writeCtx.Err() == nil {
				t.Errorf("write: %v", err)
			}
		}
	})
	defer func() { stopWrites(); writes.Wait() }()

	paused := time.Now()
	mustExec(t, ctx, r1, "SELECT pg_wal_replay_pause()")
	waitFor(t, ctx, 30*time.Second, "r1 out of rotation", func() bool { return !nodeStatus(t, db, r1).Healthy })
	st := nodeStatus(t, db, r1)
	t.Logf("r1 left rotation %v after pause with lag %v (%d bytes)", time.Since(paused).Round(time.Millisecond), st.Lag, st.LagBytes)
	if st.Lag <= time.Second && st.Role == dbroute.RoleReplica {
		t.Errorf("r1 unhealthy with lag %v: want lag over the bound", st.Lag)
	}
	r1Label := map[string]string{"node": st.Name}
	if g := gaugeValue(t, reg, "socnet_db_node_healthy", r1Label); g != 0 {
		t.Errorf("health gauge of r1 = %v, want 0", g)
	}
	if g := gaugeValue(t, reg, "socnet_db_replica_lag_seconds", r1Label); g <= 1 {
		t.Errorf("lag gauge of r1 = %v, want over 1", g)
	}
	// Staleness is known to within the probes of the primary that bound it:
	// r1 cannot leave before MaxReplicaLag less two health intervals.
	if early := time.Second - 2*100*time.Millisecond; time.Since(paused) < early {
		t.Errorf("r1 left rotation %v after pause, before its lag could pass 1s (want at least %v)", time.Since(paused), early)
	}

	r1Port, r2Port := r1.Config().Port, r2.Config().Port
	r1Reads := nodeStatus(t, db, r1).Reads
	for i := range 200 {
		var port int
		err := db.ReadReplica(ctx, func(q dbroute.Querier) (err error) {
			port, err = serverPort(ctx, q)
			return err
		})
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if port == r1Port {
			t.Fatalf("read %d went to the paused replica r1", i)
		}
		if port != r2Port {
			t.Errorf("read %d went to port %d, want r2 (%d)", i, port, r2Port)
		}
	}
	if got := nodeStatus(t, db, r1).Reads; got != r1Reads {
		t.Errorf("r1 served %d reads while lagging", got-r1Reads)
	}

	mustExec(t, ctx, r1, "SELECT pg_wal_replay_resume()")
	waitFor(t, ctx, 30*time.Second, "r1 back in rotation", func() bool { return nodeStatus(t, db, r1).Healthy })
	waitFor(t, ctx, 30*time.Second, "reads on r1 again", func() bool {
		var port int
		err := db.ReadReplica(ctx, func(q dbroute.Querier) (err error) {
			port, err = serverPort(ctx, q)
			return err
		})
		return err == nil && port == r1Port
	})
}

// TestReadYourWrites: with replay paused on both replicas (and a lag bound
// they stay within), a session's read after its write goes to the primary
// and sees the write, while a read outside the session goes to a stale
// replica; once the replicas replay the write, the session reads from them.
func TestReadYourWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 2, "")
	reg := prometheus.NewRegistry()
	db := mustOpen(t, dbroute.Config{
		Nodes:          c.dsns(),
		HealthInterval: 100 * time.Millisecond,
		MaxReplicaLag:  time.Minute,
		Registry:       reg,
	})
	waitFor(t, ctx, 30*time.Second, "replicas healthy", func() bool {
		return nodeStatus(t, db, c.replicas[0]).Healthy && nodeStatus(t, db, c.replicas[1]).Healthy
	})
	for _, r := range c.replicas {
		mustExec(t, ctx, r, "SELECT pg_wal_replay_pause()")
	}
	alice := dbroute.WithSession(ctx, "alice")
	bob := dbroute.WithSession(ctx, "bob")

	var ids []int64
	for i := range 20 {
		id, err := insertItem(alice, db, fmt.Sprint("alice", i))
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		ids = append(ids, id)
		for _, who := range []struct {
			name     string
			ctx      context.Context
			wantSeen bool
		}{{"alice", alice, true}, {"bob", bob, false}, {"no session", ctx, false}} {
			var seen bool
			var port int
			err := db.ReadReplica(who.ctx, func(q dbroute.Querier) error {
				if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM items WHERE id = $1), inet_server_port()", id).Scan(&seen, &port); err != nil {
					return err
				}
				return nil
			})
			if err != nil {
				t.Fatalf("read by %s: %v", who.name, err)
			}
			if seen != who.wantSeen {
				t.Errorf("write %d: %s saw it = %v (read on port %d), want %v", i, who.name, seen, port, who.wantSeen)
			}
		}
	}
	ryw := counterValue(t, reg, "socnet_db_routing_decisions_total", map[string]string{"decision": dbroute.DecisionRYWPrimary})
	if ryw < 20 {
		t.Errorf("ryw_primary decisions = %v, want at least 20", ryw)
	}

	for _, r := range c.replicas {
		mustExec(t, ctx, r, "SELECT pg_wal_replay_resume()")
	}
	last := ids[len(ids)-1]
	// Once the health loop has seen the replicas replay the write, the
	// session reads from a replica again, and sees the write there.
	waitFor(t, ctx, 30*time.Second, "session read served by a replica", func() bool {
		var seen bool
		var port int
		err := db.ReadReplica(alice, func(q dbroute.Querier) error {
			return q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM items WHERE id = $1), inet_server_port()", last).Scan(&seen, &port)
		})
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !seen {
			t.Fatalf("session read on port %d does not see its write %d", port, last)
		}
		return port != c.primary.Config().Port
	})
}

// TestNoReplicaPolicy: with every replica down, ReadReplica fails with
// ErrNoReplica (EUNAVAILABLE) under NoReplicaFail and reads the primary by
// default.
func TestNoReplicaPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mustCluster(t, 1, "")
	strict := mustOpen(t, dbroute.Config{Nodes: c.dsns(), HealthInterval: 100 * time.Millisecond, NoReplica: dbroute.NoReplicaFail})
	lenient := mustOpen(t, dbroute.Config{Nodes: c.dsns(), HealthInterval: 100 * time.Millisecond})
	read := func(db *dbroute.DB) (int, error) {
		var port int
		err := db.ReadReplica(ctx, func(q dbroute.Querier) (err error) {
			port, err = serverPort(ctx, q)
			return err
		})
		return port, err
	}
	if port, err := read(strict); err != nil || port != c.replicas[0].Config().Port {
		t.Fatalf("read with the replica up: port %d, err %v; want the replica's port %d", port, err, c.replicas[0].Config().Port)
	}
	if err := c.replicas[0].Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, 30*time.Second, "replica down", func() bool {
		return nodeStatus(t, strict, c.replicas[0]).Role == dbroute.RoleDown
	})
	// The first read after the kill may have been routed before the probe
	// noticed; from now on the answer is fixed.
	_, err := read(strict)
	if !errors.Is(err, dbroute.ErrNoReplica) || social.ErrorCode(err) != social.EUNAVAILABLE || !dbroute.IsUnavailable(err) {
		t.Errorf("strict read with no replica: err = %v, want ErrNoReplica (unavailable)", err)
	}
	waitFor(t, ctx, 30*time.Second, "replica down for the lenient router", func() bool {
		return nodeStatus(t, lenient, c.replicas[0]).Role == dbroute.RoleDown
	})
	if port, err := read(lenient); err != nil || port != c.primary.Config().Port {
		t.Errorf("lenient read with no replica: port %d, err %v; want the primary's port %d", port, err, c.primary.Config().Port)
	}
	// Writes are unaffected.
	if _, err := insertItem(ctx, strict, "x"); err != nil {
		t.Errorf("write: %v", err)
	}
}
