package counter_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/counter"
	"socnet/internal/drill"
	"socnet/internal/pgtest"
)

// TestCounterPrimaryKilled SIGKILLs the primary of the counter cluster (a
// primary and a synchronous replica run by internal/cluster's supervisor)
// while messages flow and dialogs are marked read. The supervisor fails over
// to the replica, counterd's router finds the new primary and the relay
// retries what was not acknowledged. Then every event counterd acknowledged
// (to the relay, through an ackTap, and to the read marks applied as the API
// does) must be in the inbox of the node that replaced the killed primary,
// with its direction's counter at least at its state: final counts alone
// would not see a lost event that a later one of its dialog overtook. Only
// after that check does each dialog get one more message, and the counts
// must end exact.
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

	s := mustStack(t, stackOptions{counterDSNs: dsns, noRelay: true})
	tap := s.startTappedRelay(t)
	ids := s.mustUsers(t, 4)
	var sent, reads atomic.Int64
	stop := startTraffic(t, 3, func(w, i int) error {
		from, to := ids[(w+i)%4], ids[(w+i+1+w%3)%4]
		if err := s.send(from, to); err != nil {
			return err
		}
		sent.Add(1)
		if i%10 == 9 {
			// As the API: commit the read, then apply it; a read counterd
			// did not acknowledge (503 while it fails over) is not
			// acknowledged to the user either, the relay delivers it later.
			r, err := s.dialogs.MarkRead(context.Background(), to, from)
			if err != nil {
				return err
			}
			if err := s.client.ApplyRead(context.Background(), r); err == nil {
				tap.add(counter.EventFromReceipt(r))
				reads.Add(1)
			}
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
	s.waitDrained(t, 90*time.Second)
	now := c.Primary()
	if now == old || now == "" {
		t.Fatalf("the counter primary is %q after the failover from %s", now, old)
	}
	acked := tap.events()
	in := nodeInbox(t, c.Node(now).DSN("counter"))
	if lost := drill.JudgeAcknowledged(acked, in); len(lost) != 0 {
		t.Fatalf("%d of %d acknowledged events are not on the new counter primary %s:\n%s",
			len(lost), len(acked), now, describeLost(lost))
	}
	if n := reads.Load(); n == 0 {
		t.Error("no read mark was acknowledged: the check saw none")
	}
	t.Logf("%d acknowledged events, %d of them read marks applied directly, all on %s", len(acked), reads.Load(), now)

	// The last messages come after the check, which they would mask.
	dialogs := map[direction]bool{}
	for _, e := range acked {
		dialogs[direction{e.UserID, e.PeerID}] = true
	}
	for d := range dialogs {
		s.mustSend(t, d.peer, d.user)
	}
	s.mustConverge(t, 90*time.Second)
}

// nodeInbox reads the inbox and counters on one node of the counter
// database, whatever its role.
func nodeInbox(t testing.TB, dsn string) drill.Inbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to the counter node: %v", err)
	}
	defer conn.Close(context.Background())
	in, err := drill.ReadInbox(ctx, conn, nil)
	if err != nil {
		t.Fatalf("counter node: %v", err)
	}
	return in
}
