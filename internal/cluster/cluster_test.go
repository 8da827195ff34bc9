package cluster_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/cluster"
)

// TestMainCluster builds the main topology and takes it through the failures
// and operations of its life, in order: the topology as PostgreSQL reports
// it, the loss of the synchronous replica, two failovers under a stream of
// commits, a planned switchover over the control socket, operators'
// refusals, and resuming the persisted roles in a new Cluster.
func TestMainCluster(t *testing.T) {
	h := mustHarness(t, cluster.MainSpec())

	t.Run("topology", func(t *testing.T) {
		ctx := testCtx(t, time.Minute)
		type repl struct{ App, State, Sync string }
		var got []repl
		conn := h.connect(t, ctx, "main-1")
		rows, err := conn.Query(ctx, "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY application_name")
		if err != nil {
			t.Fatal(err)
		}
		got, err = pgx.CollectRows(rows, pgx.RowToStructByPos[repl])
		if err != nil {
			t.Fatal(err)
		}
		want := []repl{{"main_2", "streaming", "sync"}, {"main_3", "streaming", "potential"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("pg_stat_replication (-want +got):\n%s", diff)
		}

		settings := map[string]string{}
		for _, name := range []string{"wal_level", "max_wal_senders", "max_replication_slots", "wal_keep_size",
			"hot_standby", "hot_standby_feedback", "synchronous_commit", "synchronous_standby_names",
			"shared_buffers", "data_checksums", "password_encryption"} {
			var v string
			if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
				t.Fatal(err)
			}
			settings[name] = v
		}
		wantSettings := map[string]string{"wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "10",
			"wal_keep_size": "256MB", "hot_standby": "on", "hot_standby_feedback": "on", "synchronous_commit": "on",
			"synchronous_standby_names": "FIRST 1 (main_2, main_3)", "shared_buffers": "32MB", "data_checksums": "on",
			"password_encryption": "scram-sha-256"}
		if diff := cmp.Diff(wantSettings, settings); diff != "" {
			t.Errorf("settings (-want +got):\n%s", diff)
		}

		slots := h.query(t, ctx, "main-1", "SELECT slot_name || ':' || active FROM pg_replication_slots ORDER BY 1")
		if diff := cmp.Diff([]string{"main_2:true", "main_3:true"}, slots); diff != "" {
			t.Errorf("slots (-want +got):\n%s", diff)
		}
		roles := h.query(t, ctx, "main-1", "SELECT rolname || ' super=' || rolsuper || ' repl=' || rolreplication || ' pw=' || left(rolpassword, 14) FROM pg_authid WHERE rolname = 'replicator'")
		if diff := cmp.Diff([]string{"replicator super=false repl=true pw=SCRAM-SHA-256$"}, roles); diff != "" {
			t.Errorf("replicator (-want +got):\n%s", diff)
		}
		for _, n := range []string{"main-2", "main-3"} {
			conninfo := h.query(t, ctx, n, "SELECT current_setting('primary_conninfo')")[0]
			if !strings.Contains(conninfo, "application_name="+cluster.AppName(n)) || !strings.Contains(conninfo, "user=replicator") {
				t.Errorf("%s primary_conninfo lacks its application_name or user", n)
			}
		}

		// The replicator logs in with its password and with no other.
		port := h.c.Node("main-1").Config().Port
		sec := readSecrets(t, h)
		good, err := pgx.Connect(ctx, dsn("replicator", sec.ReplicatorPassword, port))
		if err != nil {
			t.Fatalf("replicator with its password: %v", err)
		}
		var super string
		if err := good.QueryRow(ctx, "SHOW is_superuser").Scan(&super); err != nil || super != "off" {
			t.Errorf("replicator is_superuser = %q, %v", super, err)
		}
		good.Close(ctx)
		_, err = pgx.Connect(ctx, dsn("replicator", "wrong-password", port))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28P01" {
			t.Errorf("replicator with a wrong password: got %v, want invalid_password (28P01)", err)
		}

		s := h.waitHealthy(t, "main-1", 10*time.Second)
		if s.Nodes[1].SyncState != "sync" || s.Nodes[2].SyncState != "potential" {
			t.Errorf("status sync states: %s", describe(s))
		}
		if fi, err := os.Stat(filepath.Join(cluster.Dir(h.home, "main"), "secrets.json")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("secrets.json: %v %v", fi.Mode(), err)
		}
		if _, err := os.Stat(filepath.Join(h.home, "logs", "main-1.log")); err != nil {
			t.Errorf("node log: %v", err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	l := h.startLedger(t)

	t.Run("sync replica killed", func(t *testing.T) {
		// Without the supervisor main-2 stays down, so what PostgreSQL does
		// meanwhile is observable.
		h.stopSupervisor()
		if err := h.c.Node("main-2").Kill(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "main_3 synchronous", func() (bool, string) {
			s := h.status(t)
			return s.Nodes[2].SyncState == "sync" && s.Nodes[1].Role == cluster.RoleDown, describe(s)
		})
		l.waitAcks(t, 50, 10*time.Second) // writes go on with main_3 as the synchronous standby
		h.startSupervisor(t)
		h.waitHealthy(t, "main-1", 30*time.Second)
		waitFor(t, 10*time.Second, "main_2 synchronous again", func() (bool, string) {
			s := h.status(t)
			return s.Nodes[1].SyncState == "sync", describe(s)
		})
		h.waitCaughtUp(t, "main-2", 20*time.Second)
		l.verify(t, testCtx(t, time.Minute), "main-2")
	})

	var times []time.Duration
	t.Run("failover", func(t *testing.T) {
		p, d := h.killPrimary(t, l)
		times = append(times, d)
		if p == "main-1" {
			t.Fatalf("promoted the old primary")
		}
		// The list is FIRST 1 again once the old primary streams.
		waitFor(t, 20*time.Second, "FIRST 1 restored", func() (bool, string) {
			s := h.status(t)
			return strings.HasPrefix(s.SynchronousStandbyNames, "FIRST 1"), s.SynchronousStandbyNames
		})
	})
	t.Run("failover back", func(t *testing.T) {
		_, d := h.killPrimary(t, l)
		times = append(times, d)
	})
	t.Logf("kill -> first committed write on the new primary: %v", times)

	t.Run("operators", func(t *testing.T) {
		ctx := testCtx(t, time.Minute)
		prim := h.c.Primary()
		_, err := h.c.Switchover(ctx, prim)
		refused(t, err, prim+" is already primary")
		_, err = h.c.Promote(ctx, prim, false)
		refused(t, err, prim+" is already primary")
		var replica string
		for _, n := range h.c.Nodes() {
			if n != prim {
				replica = n
			}
		}
		_, err = h.c.Promote(ctx, replica, false)
		refused(t, err, "is the running primary; use switchover")
		_, err = h.c.Rejoin(ctx, prim)
		refused(t, err, prim+" is the primary")
		_, err = h.c.Switchover(ctx, "main-9")
		refused(t, err, "main-9 is not a node")
		if got := h.c.Primary(); got != prim {
			t.Errorf("primary changed to %s by refused operations", got)
		}
	})

	t.Run("switchover", func(t *testing.T) {
		old := h.c.Primary()
		target := "main-3"
		if old == target {
			target = "main-1"
		}
		l.waitAcks(t, 20, 10*time.Second)
		out, err := h.c.Switchover(testCtx(t, 2*time.Minute), target)
		if err != nil {
			t.Fatalf("switchover: %v", err)
		}
		t.Logf("switchover: %s", out.Message)
		if out.Record == nil || out.Record.Kind != "switchover" || out.Record.RejoinMS == 0 {
			t.Errorf("record %+v", out.Record)
		}
		_, err = h.c.Switchover(testCtx(t, time.Minute), target)
		refused(t, err, target+" is already primary")
		h.waitHealthy(t, target, 30*time.Second)
		l.waitAcks(t, 20, 10*time.Second)
		st, err := h.c.Status(testCtx(t, time.Minute))
		if err != nil || st.Primary != target {
			t.Fatalf("status: %v %+v", err, st)
		}
		l.verify(t, testCtx(t, time.Minute), target)
	})

	t.Run("resume persisted roles", func(t *testing.T) {
		l.stop()
		prim := h.c.Primary()
		wantHistory := h.c.History()
		h.stopSupervisor()
		ctx := testCtx(t, time.Minute)
		if err := h.c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		s := h.status(t)
		for _, n := range s.Nodes {
			if n.Role != cluster.RoleDown || n.Pid != 0 {
				t.Errorf("%s after stop: %s pid %d", n.Name, n.Role, n.Pid)
			}
		}
		h.open(t)
		h.up(t)
		h.startSupervisor(t)
		h.waitHealthy(t, prim, 30*time.Second)
		if diff := cmp.Diff(wantHistory, h.c.History()); diff != "" {
			t.Errorf("history after resume (-want +got):\n%s", diff)
		}
		l.verify(t, testCtx(t, time.Minute), prim)
	})

	t.Run("forced promotion", func(t *testing.T) {
		// The primary and its synchronous replica die together; the
		// supervisor is off so that the operator decides.
		prim := h.c.Primary()
		var sync, async string
		waitFor(t, 10*time.Second, "a sync and a potential replica", func() (bool, string) {
			s := h.status(t)
			sync, async = "", ""
			for _, n := range s.Nodes {
				switch n.SyncState {
				case "sync":
					sync = n.Name
				case "potential":
					async = n.Name
				}
			}
			return sync != "" && async != "", describe(s)
		})
		h.stopSupervisor()
		for _, n := range []string{prim, sync} {
			if err := h.c.Node(n).Kill(); err != nil {
				t.Fatal(err)
			}
		}
		ctx := testCtx(t, 2*time.Minute)
		_, err := h.c.Promote(ctx, async, false)
		refused(t, err, sync+" (last seen sync at")
		t.Logf("refused: %v", err)
		if got := h.c.Primary(); got != prim {
			t.Fatalf("primary changed to %s by a refused promotion", got)
		}
		out, err := h.c.Promote(ctx, async, true)
		if err != nil {
			t.Fatalf("forced promotion: %v", err)
		}
		t.Logf("forced: %s", out.Message)
		if out.Record == nil || out.Record.Kind != "promote" || out.Record.NewPrimary != async {
			t.Errorf("record %+v", out.Record)
		}
		h.startSupervisor(t)
		h.waitHealthy(t, async, 90*time.Second)
	})
}

// TestCounterCluster builds the counter topology (one synchronous replica)
// and fails it over under a stream of commits.
func TestCounterCluster(t *testing.T) {
	h := mustHarness(t, cluster.CounterSpec())
	ctx := testCtx(t, time.Minute)
	got := h.query(t, ctx, "counter-1", "SELECT application_name || ':' || state || ':' || sync_state FROM pg_stat_replication")
	if diff := cmp.Diff([]string{"counter_2:streaming:sync"}, got); diff != "" {
		t.Errorf("pg_stat_replication (-want +got):\n%s", diff)
	}
	if got := h.query(t, ctx, "counter-1", "SHOW synchronous_standby_names"); got[0] != "FIRST 1 (counter_2)" {
		t.Errorf("synchronous_standby_names = %q", got[0])
	}
	l := h.startLedger(t)
	p, d := h.killPrimary(t, l)
	if p != "counter-2" {
		t.Fatalf("new primary %s", p)
	}
	t.Logf("counter: kill -> first committed write on the new primary: %v", d)
	if got := h.query(t, testCtx(t, time.Minute), "counter-2", "SELECT application_name || ':' || sync_state FROM pg_stat_replication"); len(got) != 1 || got[0] != "counter_1:sync" {
		t.Errorf("after failover pg_stat_replication = %v", got)
	}

	t.Run("unresponsive primary", func(t *testing.T) {
		// A frozen primary keeps its process but answers nothing: it is
		// declared dead after DeadAfter, killed and failed over.
		before := len(h.c.History())
		freeze(t, h.c.Node("counter-2").Pid())
		waitFor(t, 30*time.Second, "failover from the frozen counter-2", func() (bool, string) {
			return h.c.Primary() == "counter-1", describe(h.status(t))
		})
		h.waitHealthy(t, "counter-1", 60*time.Second)
		hist := h.c.History()
		if len(hist) != before+1 {
			t.Fatalf("history has %d entries, want %d", len(hist), before+1)
		}
		rec := hist[len(hist)-1]
		t.Logf("frozen primary: detection %d ms, promotion %d ms, total %d ms; %s", rec.DetectionMS, rec.PromotionMS, rec.TotalMS, rec.Reason)
		// Declared dead for its silence, not for an exit (which is
		// detection 0, as the kill above shows); how long the silence
		// took to notice depends on the machine's load, so it is not timed.
		if rec.DetectionMS <= 0 || !strings.Contains(rec.Reason, "did not answer as a primary") {
			t.Errorf("record %+v: want a detection after a silence, not an exit", rec)
		}
		l.waitAcks(t, 20, 30*time.Second)
		l.verify(t, testCtx(t, time.Minute), "counter-1")
		h.waitCaughtUp(t, "counter-2", 30*time.Second)
		l.verify(t, testCtx(t, time.Minute), "counter-2")
	})

	t.Run("operator rejoin", func(t *testing.T) {
		out, err := h.c.Rejoin(testCtx(t, 2*time.Minute), "counter-2")
		if err != nil {
			t.Fatalf("rejoin: %v", err)
		}
		t.Logf("rejoin: %s", out.Message)
		if !strings.Contains(out.Message, "streaming from counter-1") {
			t.Errorf("rejoin said %q", out.Message)
		}
		h.waitHealthy(t, "counter-1", 30*time.Second)
		l.waitAcks(t, 20, 30*time.Second)
	})

	parent := t
	t.Run("rebuild a lost replica", func(t *testing.T) {
		// The replica's data is gone: pg_rewind cannot work, a fresh base
		// backup replaces it.
		h.stopSupervisor()
		defer h.startSupervisor(parent)
		if err := h.c.Node("counter-2").Kill(); err != nil {
			t.Fatal(err)
		}
		dataDir := h.c.Node("counter-2").Config().DataDir
		for _, f := range []string{"PG_VERSION", "base", "global"} {
			if err := os.RemoveAll(filepath.Join(dataDir, f)); err != nil {
				t.Fatal(err)
			}
		}
		out, err := h.c.Rejoin(testCtx(t, 2*time.Minute), "counter-2")
		if err != nil {
			t.Fatalf("rejoin: %v", err)
		}
		t.Logf("rejoin: %s", out.Message)
		if !strings.Contains(out.Message, "rebuilt from a base backup") {
			t.Errorf("rejoin said %q", out.Message)
		}
		h.waitHealthy(t, "counter-1", 30*time.Second)
		l.waitAcks(t, 20, 30*time.Second)
		h.waitCaughtUp(t, "counter-2", 30*time.Second)
		l.verify(t, testCtx(t, time.Minute), "counter-2")
	})
}

// freeze stops (SIGSTOP) a postmaster and its children, as a hung machine
// would: the processes live, the sockets stay open, nothing answers.
func freeze(t *testing.T, pid int) {
	t.Helper()
	if pid == 0 {
		t.Fatal("no process to freeze")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			_ = syscall.Kill(child, syscall.SIGSTOP)
			n++
		}
	}
	t.Logf("froze postmaster %d and %d children", pid, n)
}

// secretsFile mirrors secrets.json for tests that log in as the replicator.
type secretsFile struct {
	ReplicatorPassword string `json:"replicator_password"`
}

func readSecrets(t *testing.T, h *harness) secretsFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cluster.Dir(h.home, h.spec.Name), "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s secretsFile
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func dsn(user, password string, port int) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: net.JoinHostPort(cluster.Host, strconv.Itoa(port)),
		Path: "/postgres", RawQuery: "sslmode=disable"}
	return u.String()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
