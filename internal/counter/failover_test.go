package counter_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/pgtest"
)

// TestCounterPrimaryKilled SIGKILLs the primary of the counter cluster (a
// primary and a synchronous replica run by internal/cluster's supervisor)
// while messages flow. The supervisor fails over to the replica, counterd's
// router finds the new primary, the relay retries what was not
// acknowledged, and the counts end exact.
func TestCounterPrimaryKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := cluster.CounterSpec()
	spec.Settings = map[string]string{"shared_buffers": "32MB", "max_connections": "50"}
	c, err := cluster.Open(cluster.Dir(t.TempDir(), spec.Name), spec, testLogger(t, "cluster:"), cluster.Options{
		Output:         pgtest.LogWriter(t, ""),
		ProbeInterval:  100 * time.Millisecond,
		ProbeTimeout:   300 * time.Millisecond,
		DeadAfter:      time.Second,
		CatchUpTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Up(ctx); err != nil {
		t.Fatalf("counter cluster up: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(sctx); err != nil {
			t.Errorf("stop counter cluster: %v", err)
		}
	})
	supCtx, stopSup := context.WithCancel(context.Background())
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		if err := c.Supervise(supCtx); err != nil {
			t.Errorf("supervise: %v", err)
		}
	}()
	t.Cleanup(func() { stopSup(); <-supDone })

	conn, err := pgx.Connect(ctx, c.PrimaryDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE counter`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	var dsns []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, c.Node(n).DSN("counter"))
	}

	s := mustStack(t, stackOptions{counterDSNs: dsns})
	ids := s.mustUsers(t, 4)
	var sent atomic.Int64
	stop := startTraffic(t, 3, func(w, i int) error {
		from, to := ids[(w+i)%4], ids[(w+i+1+w%3)%4]
		if err := s.send(from, to); err != nil {
			return err
		}
		sent.Add(1)
		if i%10 == 9 {
			_, err := s.dialogs.MarkRead(context.Background(), to, from)
			return err
		}
		return nil
	})
	waitFor(t, 30*time.Second, "messages flowing", func() error {
		if sent.Load() < 150 {
			return context.DeadlineExceeded
		}
		return nil
	})
	old := c.Primary()
	if err := c.Node(old).Kill(); err != nil {
		t.Fatalf("kill %s: %v", old, err)
	}
	t.Logf("killed the counter primary %s after %d sends", old, sent.Load())
	waitFor(t, 60*time.Second, "a new counter primary", func() error {
		if p := c.Primary(); p == old || p == "" {
			return context.DeadlineExceeded
		}
		return nil
	})
	t.Logf("counter primary is now %s", c.Primary())
	at := sent.Load()
	waitFor(t, 30*time.Second, "messages flowing after the failover", func() error {
		if sent.Load() < at+150 {
			return context.DeadlineExceeded
		}
		return nil
	})
	stop()
	s.mustConverge(t, 90*time.Second)
}
