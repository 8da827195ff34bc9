package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/pgtest"
)

// testOptions are fast timings for tests: a dead primary is noticed within
// half a second of silence (at once when its process exits).
func testOptions(t *testing.T) cluster.Options {
	return cluster.Options{
		Output:         pgtest.LogWriter(t, ""),
		ProbeInterval:  100 * time.Millisecond,
		ProbeTimeout:   300 * time.Millisecond,
		DeadAfter:      time.Second,
		CatchUpTimeout: 10 * time.Second,
	}
}

// testSpec is spec with economical memory settings.
func testSpec(spec cluster.Spec) cluster.Spec {
	spec.Settings = map[string]string{"shared_buffers": "32MB", "max_connections": "50"}
	return spec
}

// testLogger sends slog records to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "slog"), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// harness is one cluster brought up in a temporary socnet home, with its
// supervisor running.
type harness struct {
	home string
	c    *cluster.Cluster
	spec cluster.Spec
	log  *slog.Logger // the cluster's logger

	supCancel context.CancelFunc
	supDone   chan struct{}
}

// mustHarness opens and brings up spec under a fresh home and starts its
// supervisor; everything is stopped in t.Cleanup.
func mustHarness(t *testing.T, spec cluster.Spec) *harness {
	t.Helper()
	return mustHarnessLogged(t, spec, testLogger(t))
}

// mustHarnessLogged is mustHarness with the cluster logging to log.
func mustHarnessLogged(t *testing.T, spec cluster.Spec, log *slog.Logger) *harness {
	t.Helper()
	h := &harness{home: t.TempDir(), spec: testSpec(spec), log: log}
	h.open(t)
	t.Cleanup(func() { h.close(t) })
	h.up(t)
	h.startSupervisor(t)
	return h
}

func (h *harness) open(t *testing.T) {
	t.Helper()
	c, err := cluster.Open(cluster.Dir(h.home, h.spec.Name), h.spec, h.log, testOptions(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	h.c = c
}

func (h *harness) up(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := h.c.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("%s up in %v", h.spec.Name, time.Since(t0).Round(time.Millisecond))
}

func (h *harness) startSupervisor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h.supCancel, h.supDone = cancel, make(chan struct{})
	go func() {
		defer close(h.supDone)
		if err := h.c.Supervise(ctx); err != nil {
			t.Errorf("supervise: %v", err)
		}
	}()
}

func (h *harness) stopSupervisor() {
	if h.supCancel != nil {
		h.supCancel()
		<-h.supDone
		h.supCancel = nil
	}
}

func (h *harness) close(t *testing.T) {
	h.stopSupervisor()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.c.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// testCtx returns a context bounded for one step of a test.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a connection to node's postgres database.
func (h *harness) connect(t *testing.T, ctx context.Context, node string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, h.c.Node(node).DSN(""))
	if err != nil {
		t.Fatalf("connect %s: %v", node, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// query returns the first column of every row of sql on node, as text.
func (h *harness) query(t *testing.T, ctx context.Context, node, sql string, args ...any) []string {
	t.Helper()
	conn := h.connect(t, ctx, node)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s on %s: %v", sql, node, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s on %s: %v", sql, node, err)
	}
	return out
}

// waitFor polls cond every 100 ms until it holds or timeout passes; cond
// returns whether it holds and what it saw.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var seen string
	for {
		var ok bool
		ok, seen = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, timeout, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// status returns the cluster's status.
func (h *harness) status(t *testing.T) cluster.Status {
	t.Helper()
	s, err := h.c.Status(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return s
}

// describe renders the roles of a status for messages.
func describe(s cluster.Status) string {
	var b strings.Builder
	for _, n := range s.Nodes {
		fmt.Fprintf(&b, "%s=%s/%s(%s,tl%d) ", n.Name, n.Role, n.SyncState, n.ReplicationState, n.Timeline)
	}
	if s.Waiting != "" {
		b.WriteString("waiting: " + s.Waiting)
	}
	return b.String()
}

// waitHealthy waits until primary is the primary and every other node
// streams from it.
func (h *harness) waitHealthy(t *testing.T, primary string, timeout time.Duration) cluster.Status {
	t.Helper()
	var s cluster.Status
	waitFor(t, timeout, "cluster healthy with primary "+primary, func() (bool, string) {
		s = h.status(t)
		for _, n := range s.Nodes {
			want := cluster.RoleReplica
			if n.Name == primary {
				want = cluster.RolePrimary
			}
			if n.Role != want || (want == cluster.RoleReplica && n.ReplicationState != "streaming") {
				return false, describe(s)
			}
		}
		return s.Primary == primary, describe(s)
	})
	return s
}

// ledger is a stream of committed inserts: each id is recorded once the
// commit is acknowledged, with the port of the node that acknowledged it.
type ledger struct {
	h      *harness
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	acked  []int64
	ackAt  []time.Time
	ackOn  []string // port
	errors int
}

const ledgerTable = "CREATE TABLE IF NOT EXISTS ledger (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"

// startLedger creates the ledger table and starts inserting rows into the
// current primary, about one every 5 ms.
func (h *harness) startLedger(t *testing.T) *ledger {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	conn := h.connect(t, ctx, h.c.Primary())
	if _, err := conn.Exec(ctx, ledgerTable); err != nil {
		t.Fatalf("create ledger: %v", err)
	}
	var next int64
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(id), 0) + 1 FROM ledger").Scan(&next); err != nil {
		t.Fatalf("ledger max: %v", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &ledger{h: h, cancel: cancel, done: make(chan struct{})}
	go l.run(lctx, next)
	t.Cleanup(l.stop)
	return l
}

func (l *ledger) run(ctx context.Context, next int64) {
	defer close(l.done)
	var conn *pgx.Conn
	var port string
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			dsn := l.h.c.PrimaryDSN("")
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			c, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				l.fail()
				time.Sleep(20 * time.Millisecond)
				continue
			}
			conn = c
			u, _ := url.Parse(dsn)
			port = u.Port()
		}
		id := next
		next++
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.Exec(ictx, "INSERT INTO ledger (id) VALUES ($1)", id)
		cancel()
		if err != nil {
			l.fail()
			conn.Close(context.Background())
			conn = nil
			continue
		}
		l.mu.Lock()
		l.acked = append(l.acked, id)
		l.ackAt = append(l.ackAt, time.Now())
		l.ackOn = append(l.ackOn, port)
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *ledger) fail() {
	l.mu.Lock()
	l.errors++
	l.mu.Unlock()
}

func (l *ledger) stop() {
	l.once.Do(func() {
		l.cancel()
		<-l.done
	})
}

// count returns how many commits were acknowledged.
func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// firstAckAfter returns when the first commit acknowledged by a node other
// than the one on port was acknowledged after t.
func (l *ledger) firstAckAfter(t time.Time, notPort string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, at := range l.ackAt {
		if at.After(t) && l.ackOn[i] != notPort {
			return at, true
		}
	}
	return time.Time{}, false
}

// waitAcks waits until n more commits are acknowledged.
func (l *ledger) waitAcks(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	want := l.count() + n
	waitFor(t, timeout, fmt.Sprintf("%d acknowledged inserts", n), func() (bool, string) {
		c := l.count()
		return c >= want, fmt.Sprintf("%d of %d", c, want)
	})
}

// verify checks that every acknowledged id is on node.
func (l *ledger) verify(t *testing.T, ctx context.Context, node string) {
	t.Helper()
	l.mu.Lock()
	acked := slices.Clone(l.acked)
	l.mu.Unlock()
	present := map[int64]bool{}
	conn := l.h.connect(t, ctx, node)
	rows, err := conn.Query(ctx, "SELECT id FROM ledger")
	if err != nil {
		t.Fatalf("read ledger on %s: %v", node, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("read ledger on %s: %v", node, err)
	}
	for _, id := range ids {
		present[id] = true
	}
	var missing []int64
	for _, id := range acked {
		if !present[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s lacks %d of %d acknowledged rows, e.g. %v", node, len(missing), len(acked), missing[:min(10, len(missing))])
	} else {
		t.Logf("%s holds all %d acknowledged rows (%d rows in all)", node, len(acked), len(ids))
	}
}

// waitCaughtUp waits until replica has replayed the primary's current WAL.
func (h *harness) waitCaughtUp(t *testing.T, replica string, timeout time.Duration) {
	t.Helper()
	ctx := testCtx(t, timeout+10*time.Second)
	var target string
	if err := h.connect(t, ctx, h.c.Primary()).QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		t.Fatalf("primary lsn: %v", err)
	}
	want, _ := cluster.ParseLSN(target)
	waitFor(t, timeout, replica+" replayed "+target, func() (bool, string) {
		conn, err := pgx.Connect(ctx, h.c.Node(replica).DSN(""))
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close(ctx)
		var s string
		if err := conn.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '')").Scan(&s); err != nil {
			return false, err.Error()
		}
		got, _ := cluster.ParseLSN(s)
		return got >= want, s
	})
}

// killPrimary SIGKILLs the primary under the ledger's writes, waits for the
// supervisor to fail over and for the old primary to rejoin, checks every
// acknowledged row on every node, and returns the time from the kill to the
// first commit acknowledged by the new primary.
func (h *harness) killPrimary(t *testing.T, l *ledger) (newPrimary string, killToWrite time.Duration) {
	t.Helper()
	old := h.c.Primary()
	oldPort := fmt.Sprint(h.c.Node(old).Config().Port)
	l.waitAcks(t, 50, 30*time.Second)
	before := len(h.c.History())
	killed := time.Now()
	if err := h.c.Node(old).Kill(); err != nil {
		t.Fatalf("kill %s: %v", old, err)
	}
	t.Logf("SIGKILL %s after %d acknowledged inserts", old, l.count())
	var first time.Time
	waitFor(t, 60*time.Second, "first commit on a new primary", func() (bool, string) {
		var ok bool
		first, ok = l.firstAckAfter(killed, oldPort)
		return ok, describe(h.status(t))
	})
	killToWrite = first.Sub(killed)
	newPrimary = h.c.Primary()
	if newPrimary == old {
		t.Fatalf("primary is still %s", old)
	}
	t.Logf("kill of %s -> first commit on %s: %v", old, newPrimary, killToWrite.Round(time.Millisecond))
	l.waitAcks(t, 50, 30*time.Second)
	h.waitHealthy(t, newPrimary, 90*time.Second)

	var rec cluster.FailoverRecord
	waitFor(t, 30*time.Second, "failover recorded with the rejoin", func() (bool, string) {
		hist := h.c.History()
		if len(hist) != before+1 {
			return false, fmt.Sprintf("%d entries, want %d", len(hist), before+1)
		}
		rec = hist[len(hist)-1]
		return rec.RejoinMS > 0, fmt.Sprintf("%+v", rec)
	})
	if rec.Kind != "failover" || rec.OldPrimary != old || rec.NewPrimary != newPrimary || rec.TotalMS <= 0 || rec.PromotionMS <= 0 {
		t.Errorf("history entry %+v", rec)
	}
	t.Logf("failover record: detection %d ms, promotion %d ms, total %d ms, rejoin %d ms; %s",
		rec.DetectionMS, rec.PromotionMS, rec.TotalMS, rec.RejoinMS, rec.Reason)

	ctx := testCtx(t, time.Minute)
	l.verify(t, ctx, newPrimary)
	for _, n := range h.c.Nodes() {
		if n != newPrimary {
			h.waitCaughtUp(t, n, 30*time.Second)
			l.verify(t, ctx, n)
		}
	}
	return newPrimary, killToWrite
}

// refused asserts that err is a refusal whose text holds want.
func refused(t *testing.T, err error, want string) {
	t.Helper()
	var r *cluster.RefusedError
	if !errors.As(err, &r) {
		t.Fatalf("got %v, want a refusal saying %q", err, want)
	}
	if !strings.Contains(r.Error(), want) {
		t.Fatalf("refusal %q does not say %q", r.Error(), want)
	}
}

// home returns the directory layout's control socket path.
