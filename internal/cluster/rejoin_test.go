package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"socnet/internal/cluster"
)

// TestRejoin takes a two-node cluster under a stream of commits through the
// ways a node comes back after it failed, in order:
//
//   - the primary is killed with SIGKILL: the old primary is rewound with
//     pg_rewind and streams from the new one;
//   - the primary, cut off from its replica, commits on its own and
//     checkpoints before it is killed: pg_rewind undoes those commits;
//   - the same, but the primary recycled the WAL of the divergence before it
//     was killed: pg_rewind runs and fails, and the node is rebuilt from a
//     fresh base backup;
//   - a replica with a setting it cannot start with dies (SIGKILL, then
//     SIGINT): after RestartAttempts failed restarts it is rebuilt from a
//     base backup.
//
// Each time every acknowledged commit is on every node afterwards.
func TestRejoin(t *testing.T) {
	logs := &logRecorder{}
	h := mustHarnessLogged(t, cluster.CounterSpec(), logs.logger(testLogger(t)))
	l := h.startLedger(t)

	t.Run("rewind after SIGKILL", func(t *testing.T) {
		old := h.c.Primary()
		mark, logMark := logs.mark(), h.nodeLogSize(t, old)
		h.killPrimary(t, l)
		h.wantRejoined(t, logs, mark, old, "rewound")
		out := h.nodeLogSince(t, old, logMark)
		for _, want := range []string{"pg_rewind: servers diverged at WAL location", "pg_rewind: Done!"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s's log since the kill lacks %q", old, want)
			}
		}
	})

	t.Run("rewind undoes commits made alone", func(t *testing.T) {
		h.divergeAndRejoin(t, logs, l, "diverged_kept", false)
	})

	t.Run("rewind fails, base backup", func(t *testing.T) {
		h.divergeAndRejoin(t, logs, l, "diverged_recycled", true)
	})

	// Operators' mistakes that a restart does not survive, then the
	// replica's death. A hot standby refuses to recover with fewer
	// connections than its primary allows: the failed starts leave it in
	// archive recovery, which cannot be rewound. A value the server cannot
	// parse stops it before recovery: it stays cleanly shut down, pg_rewind
	// finds nothing to do, and the rewound node still does not start.
	for _, tc := range []replicaFault{
		{name: "fewer connections than the primary, SIGKILL", signal: syscall.SIGKILL,
			sql: "ALTER SYSTEM SET max_connections = 20", says: "insufficient parameter settings",
			why: "rewind failed; rebuilding from a base backup"},
		{name: "invalid postgresql.auto.conf, SIGINT", signal: syscall.SIGINT,
			autoConf: "max_connections = 'many'\n", says: `invalid value for parameter "max_connections"`,
			why: "rewound node does not start; rebuilding from a base backup"},
	} {
		t.Run("replica that cannot start: "+tc.name, func(t *testing.T) {
			h.replicaCannotStart(t, logs, l, tc)
		})
	}
}

// replicaFault is a configuration a replica cannot start with and the
// signal that then stops it.
type replicaFault struct {
	name     string
	sql      string // run on the replica, or
	autoConf string // appended to its postgresql.auto.conf
	signal   syscall.Signal
	says     string // what the replica's log says when it does not start
	why      string // what the rejoin logs before it rebuilds
}

func (h *harness) replicaCannotStart(t *testing.T, logs *logRecorder, l *ledger, f replicaFault) {
	t.Helper()
	prim := h.c.Primary()
	replica := h.c.Nodes()[0]
	if replica == prim {
		replica = h.c.Nodes()[1]
	}
	h.waitHealthy(t, prim, 30*time.Second)
	ctx := testCtx(t, time.Minute)
	primConns := h.query(t, ctx, prim, "SHOW max_connections")[0]
	if f.sql != "" {
		if _, err := h.connect(t, ctx, replica).Exec(ctx, f.sql); err != nil {
			t.Fatalf("%s on %s: %v", f.sql, replica, err)
		}
	}
	if f.autoConf != "" {
		path := filepath.Join(h.c.Node(replica).Config().DataDir, "postgresql.auto.conf")
		file, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = file.WriteString(f.autoConf)
		if cerr := file.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mark, logMark := logs.mark(), h.nodeLogSize(t, replica)
	if f.signal == syscall.SIGKILL {
		if err := h.c.Node(replica).Kill(); err != nil {
			t.Fatal(err)
		}
	} else if err := syscall.Kill(h.c.Node(replica).Pid(), f.signal); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s to replica %s (%s)", f.signal, replica, f.name)
	waitFor(t, 3*time.Minute, replica+" rejoined", func() (bool, string) {
		got := logs.since(mark, "rejoined", "node", replica)
		return len(got) > 0, describe(h.status(t))
	})
	h.waitHealthy(t, prim, time.Minute)

	recs := logs.since(mark, "", "node", replica)
	first := slices.IndexFunc(recs, func(r logRecord) bool { return r.Msg == "rejoining replica" })
	if first < 0 {
		t.Fatalf("no rejoin of %s logged", replica)
	}
	failed := 0
	for i, r := range recs {
		if r.Msg == "restart replica" {
			failed++
			if i > first {
				t.Errorf("restart of %s after the rejoin started: %v", replica, r.Attrs)
			}
		}
	}
	if failed != cluster.RestartAttempts {
		t.Errorf("%d failed restarts of %s before the rejoin, want %d", failed, replica, cluster.RestartAttempts)
	}
	if got := recs[first].Attrs["why"]; got != "it waits to rejoin" {
		t.Errorf("rejoin of %s because %q", replica, got)
	}
	if len(logs.since(mark, f.why, "node", replica)) != 1 {
		t.Errorf("%q not logged once for %s", f.why, replica)
	}
	h.wantRejoined(t, logs, mark, replica, "rebuilt from a base backup")
	if out := h.nodeLogSince(t, replica, logMark); !strings.Contains(out, f.says) {
		t.Errorf("%s's log does not say %q", replica, f.says)
	}
	// The rebuilt node has its primary's settings, not the mistake.
	if got := h.query(t, ctx, replica, "SHOW max_connections")[0]; got != primConns {
		t.Errorf("%s max_connections = %s after the rebuild, want the primary's %s", replica, got, primConns)
	}
	l.waitAcks(t, 50, 30*time.Second)
	h.waitCaughtUp(t, replica, 30*time.Second)
	l.verify(t, ctx, replica)
}

// divergeAndRejoin makes the primary diverge from its replicas and die, then
// checks that the supervisor fails over and brings the old primary back as
// a streaming replica of the new one, with every acknowledged commit and
// without the commits only it had.
//
// The replicas are stopped first, as a partition would cut them off. Alone,
// the primary commits rows into table (synchronous_commit = local: no
// standby acknowledges them, no client was told they are safe), switches to
// a new WAL segment and checkpoints; then it is killed with SIGKILL and the
// replicas start again. The new primary's timeline branches off at the end
// of the WAL the replicas received, which lies in a segment before the one
// of the old primary's last checkpoint.
//
// With recycle, the old primary keeps no WAL for its absent replica
// (wal_keep_size = 0, max_slot_wal_keep_size = 0, which invalidates the
// replica's slot), so its checkpoint removes the segments before its redo
// point, among them the one of the branch point. Its crash recovery needs
// only WAL from that checkpoint on and succeeds; pg_rewind must read the old
// primary's WAL from the last checkpoint before the branch point to find the
// blocks it changed since, and fails. Without recycle, the same history is
// rewound.
func (h *harness) divergeAndRejoin(t *testing.T, logs *logRecorder, l *ledger, table string, recycle bool) {
	t.Helper()
	old := h.c.Primary()
	h.waitHealthy(t, old, 30*time.Second)
	l.waitAcks(t, 50, 30*time.Second)
	replicas := slices.DeleteFunc(h.c.Nodes(), func(n string) bool { return n == old })
	h.stopSupervisor()
	ctx := testCtx(t, 3*time.Minute)
	for _, r := range replicas {
		if err := h.c.Node(r).Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	conn := h.connect(t, ctx, old)
	var branchSeg string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&branchSeg); err != nil {
		t.Fatal(err)
	}
	stmts := []string{
		"SET synchronous_commit = local",
		"CREATE TABLE " + table + " (id int PRIMARY KEY)",
		"INSERT INTO " + table + " SELECT generate_series(1, 1000)",
	}
	ackedAlone := l.count()
	if recycle {
		stmts = append(stmts, "ALTER SYSTEM SET wal_keep_size = 0", "ALTER SYSTEM SET max_slot_wal_keep_size = 0",
			"SELECT pg_reload_conf()")
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s on %s: %v", s, old, err)
		}
	}
	// The checkpointer may read the new settings after the first
	// checkpoint: switch and checkpoint until the segment is gone.
	checkpoint := func() (bool, string) {
		var oldest string
		for _, s := range []string{"SELECT pg_switch_wal()", "CHECKPOINT"} {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s on %s: %v", s, old, err)
			}
		}
		if err := conn.QueryRow(ctx, "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'").Scan(&oldest); err != nil {
			t.Fatal(err)
		}
		return oldest > branchSeg, fmt.Sprintf("oldest WAL segment %s, branch in %s", oldest, branchSeg)
	}
	if recycle {
		waitFor(t, 30*time.Second, old+" removed the WAL segment of the branch point", checkpoint)
	} else if gone, seen := checkpoint(); gone {
		t.Fatalf("%s removed the WAL of the branch point: %s", old, seen)
	}
	if l.count() != ackedAlone {
		t.Fatalf("%d commits acknowledged while %s was alone", l.count()-ackedAlone, old)
	}

	mark, logMark := logs.mark(), h.nodeLogSize(t, old)
	before := len(h.c.History())
	if err := h.c.Node(old).Kill(); err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		if err := h.c.Node(r).Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("SIGKILL %s after it committed %s alone; replicas %v started", old, table, replicas)
	h.startSupervisor(t)

	var rec cluster.FailoverRecord
	waitFor(t, time.Minute, "failover from "+old, func() (bool, string) {
		hist := h.c.History()
		if len(hist) <= before {
			return false, describe(h.status(t))
		}
		rec = hist[len(hist)-1]
		return true, ""
	})
	if rec.OldPrimary != old || rec.NewPrimary == old {
		t.Fatalf("failover record %+v", rec)
	}
	h.waitHealthy(t, rec.NewPrimary, 3*time.Minute)
	waitFor(t, 30*time.Second, old+" rejoined", func() (bool, string) {
		return len(logs.since(mark, "rejoined", "node", old)) > 0, describe(h.status(t))
	})
	out := h.nodeLogSince(t, old, logMark)
	if recycle {
		h.wantRejoined(t, logs, mark, old, "rebuilt from a base backup")
		failed := logs.since(mark, "rewind failed; rebuilding from a base backup", "node", old)
		if len(failed) == 0 || !strings.Contains(failed[0].Attrs["err"], "pg_rewind") {
			t.Errorf("no failure of pg_rewind logged for %s: %v", old, failed)
		}
		// pg_rewind itself ran and failed: it could not read the WAL.
		if !strings.Contains(out, "pg_rewind: error: could not find previous WAL record") {
			t.Errorf("%s's log lacks pg_rewind's error about the missing WAL", old)
		}
	} else {
		h.wantRejoined(t, logs, mark, old, "rewound")
		if !strings.Contains(out, "pg_rewind: Done!") {
			t.Errorf("%s's log lacks pg_rewind's Done!", old)
		}
	}

	l.waitAcks(t, 50, 30*time.Second)
	h.waitCaughtUp(t, old, 30*time.Second)
	ctx = testCtx(t, time.Minute)
	for _, n := range h.c.Nodes() {
		l.verify(t, ctx, n)
		if got := h.query(t, ctx, n, "SELECT coalesce(to_regclass($1)::text, '')", table)[0]; got != "" {
			t.Errorf("%s holds table %s, committed only by %s while it was alone", n, table, old)
		}
	}
}

// wantRejoined checks that node rejoined (since mark) as how says, and only
// once.
func (h *harness) wantRejoined(t *testing.T, logs *logRecorder, mark int, node, how string) {
	t.Helper()
	var got []string
	for _, r := range logs.since(mark, "rejoined", "node", node) {
		got = append(got, r.Attrs["how"])
	}
	if len(got) != 1 || got[0] != how {
		t.Errorf("%s rejoined: %q, want [%q]", node, got, how)
	}
}

// nodeLogSize returns the size of node's log file (0 when there is none).
func (h *harness) nodeLogSize(t *testing.T, node string) int64 {
	t.Helper()
	fi, err := os.Stat(h.c.Node(node).Config().LogPath)
	if err != nil {
		if os.IsNotExist(err) {
			return 0
		}
		t.Fatal(err)
	}
	return fi.Size()
}

// nodeLogSince returns what node's log file received after offset: the
// server's output and that of the programs run on its data directory.
func (h *harness) nodeLogSince(t *testing.T, node string, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(h.c.Node(node).Config().LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[min(offset, int64(len(b))):])
}

// logRecord is one slog record with its attributes as text, those given to
// the logger's With included.
type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// logRecorder keeps the records logged through its loggers, so that a test
// can assert what the cluster did and in which order.
type logRecorder struct {
	mu   sync.Mutex
	recs []logRecord
}

// logger returns a logger that records into r and passes records on to
// next.
func (r *logRecorder) logger(next *slog.Logger) *slog.Logger {
	return slog.New(recordingHandler{rec: r, next: next.Handler()})
}

// mark returns a position for since.
func (r *logRecorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recs)
}

// since returns the records after mark with message msg ("" for any) and
// the attribute key = value, in order.
func (r *logRecorder) since(mark int, msg, key, value string) []logRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logRecord
	for _, rec := range r.recs[mark:] {
		if (msg == "" || rec.Msg == msg) && rec.Attrs[key] == value {
			out = append(out, rec)
		}
	}
	return out
}

type recordingHandler struct {
	rec   *logRecorder
	next  slog.Handler
	attrs []slog.Attr
}

func (h recordingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	lr := logRecord{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		lr.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		lr.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.rec.mu.Lock()
	h.rec.recs = append(h.rec.recs, lr)
	h.rec.mu.Unlock()
	return h.next.Handle(ctx, r)
}

func (h recordingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return recordingHandler{rec: h.rec, next: h.next.WithAttrs(attrs), attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h recordingHandler) WithGroup(name string) slog.Handler {
	return recordingHandler{rec: h.rec, next: h.next.WithGroup(name), attrs: h.attrs}
}
