package patroni_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/patroni"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/stack"
)

// engineFixture is one running engine over a home, shared by the subtests
// of TestEngine: each cluster start costs tens of seconds.
type engineFixture struct {
	timing   patroni.Timing // zero: FastTiming
	clusters []cluster.Spec // nil: main and counter
	home     stack.Home
	logger   *slog.Logger
	eng      *patroni.Engine
	cancel   context.CancelFunc
	done     chan struct{}
	nextID   atomic.Int64
	// acked are the rows acknowledged to every writer so far.
	ackedMu sync.Mutex
	acked   []int64
}

func (f *engineFixture) start(t *testing.T) {
	t.Helper()
	eng, err := patroni.NewEngine(patroni.EngineConfig{Home: f.home, Logger: f.logger, Timing: f.timing,
		Clusters: f.clusters, MainSharedBuffers: "32MB"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	started := time.Now()
	if err := eng.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("engine up in %v", time.Since(started).Round(time.Millisecond))
	sctx, stop := context.WithCancel(context.Background())
	f.eng, f.cancel, f.done = eng, stop, make(chan struct{})
	go func() {
		defer close(f.done)
		if err := eng.Supervise(sctx); err != nil {
			t.Errorf("supervise: %v", err)
		}
	}()
}

func (f *engineFixture) stop(t *testing.T) {
	t.Helper()
	if f.eng == nil {
		return
	}
	f.cancel()
	<-f.done
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := f.eng.Stop(ctx); err != nil {
		t.Error(err)
	}
	f.eng = nil
}

// status returns the named cluster's status.
func (f *engineFixture) status(t *testing.T, name string) cluster.Status {
	t.Helper()
	all, err := f.eng.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no cluster %s in status", name)
	return cluster.Status{}
}

func nodeOf(s cluster.Status, name string) cluster.NodeStatus {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n
		}
	}
	return cluster.NodeStatus{}
}

// topology is a cluster's roles and sync states from PostgreSQL's views:
// node -> "primary", "replica/sync", "replica/async", "down".
func topology(s cluster.Status) map[string]string {
	out := map[string]string{}
	for _, n := range s.Nodes {
		v := n.Role
		if n.Role == cluster.RoleReplica {
			v += "/" + n.SyncState
		}
		out[n.Name] = v
	}
	return out
}

// waitTopology waits until the cluster's topology is want.
func (f *engineFixture) waitTopology(t *testing.T, name string, want map[string]string, timeout time.Duration) cluster.Status {
	t.Helper()
	var st cluster.Status
	poll(t, timeout, name+" topology", func() error {
		st = f.status(t, name)
		if d := cmp.Diff(want, topology(st)); d != "" {
			return fmt.Errorf("(-want +got):\n%s", d)
		}
		return nil
	})
	return st
}

// waitSyncKey waits until Patroni names node the synchronous standby in
// etcd: only then may it be promoted, so a leader lost before that leaves
// the cluster without a leader until it returns (safe, by design).
func (f *engineFixture) waitSyncKey(t *testing.T, clusterName, node string) {
	t.Helper()
	poll(t, time.Minute, node+" sync standby in etcd", func() error {
		st, err := f.eng.Members(context.Background(), clusterName)
		if err != nil {
			return err
		}
		if m, ok := st.SyncStandby(); !ok || m.Name != node {
			return fmt.Errorf("sync standby %q", m.Name)
		}
		return nil
	})
}

// connectLeader connects to main's current leader as the administrator.
func (f *engineFixture) connectLeader(ctx context.Context) (*pgx.Conn, string, error) {
	leader, err := f.eng.Primary(ctx, "main")
	if err != nil {
		return nil, "", err
	}
	if leader == "" {
		return nil, "", fmt.Errorf("main has no leader")
	}
	cfg, err := pgx.ParseConfig(f.eng.AdminDSN("main", leader, "postgres"))
	if err != nil {
		return nil, "", err
	}
	cfg.ConnectTimeout = 2 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	return conn, leader, err
}

// writer inserts rows one by one into main's leader and records which were
// acknowledged and when.
type writer struct {
	f       *engineFixture
	mu      sync.Mutex
	acked   []int64
	ackedAt []time.Time
	// sentAt is when each acknowledged insert was sent: a commit sent
	// before a fault may be acknowledged after it.
	sentAt []time.Time
	stop   chan struct{}
	done   chan struct{}
}

func (f *engineFixture) startWriter(t *testing.T) *writer {
	t.Helper()
	w := &writer{f: f, stop: make(chan struct{}), done: make(chan struct{})}
	ctx := context.Background()
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(ctx)
			}
		}()
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if conn == nil {
				qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				c, _, err := f.connectLeader(qctx)
				cancel()
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				conn = c
			}
			id := f.nextID.Add(1) // an id whose outcome is in doubt is never reused
			sent := time.Now()
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := conn.Exec(wctx, "INSERT INTO acked VALUES ($1)", id)
			cancel()
			if err != nil {
				conn.Close(ctx)
				conn = nil
				continue
			}
			w.mu.Lock()
			w.acked, w.ackedAt, w.sentAt = append(w.acked, id), append(w.ackedAt, time.Now()), append(w.sentAt, sent)
			w.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(w.halt)
	poll(t, 60*time.Second, "writes", func() error {
		if n := w.count(); n < 30 {
			return fmt.Errorf("%d rows acknowledged", n)
		}
		return nil
	})
	return w
}

func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitAfter waits for a write sent and acknowledged after at and returns
// the time from at to the first one.
func (w *writer) waitAfter(t *testing.T, at time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	var first time.Time
	poll(t, timeout, "a write acknowledged after the fault", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for i, a := range w.ackedAt {
			if w.sentAt[i].After(at) {
				first = a
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	return first.Sub(at)
}

// checkNoneLost stops the writer and checks that every acknowledged row is
// on main's leader.
func (w *writer) checkNoneLost(t *testing.T) int {
	t.Helper()
	w.halt()
	ctx := context.Background()
	var ids []int64
	poll(t, 60*time.Second, "read the rows on the leader", func() error {
		conn, _, err := w.f.connectLeader(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, "SELECT id FROM acked")
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	have := make(map[int64]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var lost []int64
	for _, id := range w.acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged rows are missing on the leader: %v", len(lost), len(w.acked), lost)
	}
	n := len(w.acked)
	w.f.ackedMu.Lock()
	w.f.acked = append(w.f.acked, w.acked...)
	w.acked = nil // counted once in the fixture
	w.f.ackedMu.Unlock()
	return n
}

// killHost SIGKILLs node's agent and its PostgreSQL (every process of the
// server) together, and keeps the agent from being restarted.
func (f *engineFixture) killHost(t *testing.T, clusterName, node string) time.Time {
	t.Helper()
	n := nodeOf(f.status(t, clusterName), node)
	if n.AgentPid == nil || n.Pid == 0 {
		t.Fatalf("%s: agent pid %v, postmaster pid %d: want both running", node, n.AgentPid, n.Pid)
	}
	f.eng.Hold(node, true)
	if err := syscall.Kill(*n.AgentPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	at, err := pgnode.KillServer(n.Pid, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestEngine(t *testing.T) {
	requireBinaries(t)
	if testing.Short() {
		t.Skip("starts etcd and five Patroni agents")
	}
	base, err := os.MkdirTemp("", "patroni-engine-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	home, err := stack.NewHome(filepath.Join(base, "home"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(home.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := &engineFixture{home: home, logger: slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "engine"), nil))}
	t.Cleanup(func() {
		f.stop(t)
		if t.Failed() {
			entries, _ := os.ReadDir(home.Logs())
			for _, e := range entries {
				if b, err := os.ReadFile(filepath.Join(home.Logs(), e.Name())); err == nil {
					if len(b) > 3000 {
						b = b[len(b)-3000:]
					}
					t.Logf("%s tail:\n%s", e.Name(), b)
				}
			}
		}
	})
	f.start(t)
	ctx := context.Background()

	t.Run("topology", func(t *testing.T) {
		main := f.waitTopology(t, "main", map[string]string{"main-1": "primary", "main-2": "replica/sync", "main-3": "replica/async"}, 60*time.Second)
		f.waitTopology(t, "counter", map[string]string{"counter-1": "primary", "counter-2": "replica/sync"}, 60*time.Second)
		if main.Primary != "main-1" {
			t.Errorf("primary %q, want main-1", main.Primary)
		}
		for _, n := range main.Nodes {
			if n.AgentPid == nil || n.Pid == 0 || n.Timeline < 1 {
				t.Errorf("%s: agent pid %v, postmaster pid %d, timeline %d: want both pids and a timeline", n.Name, n.AgentPid, n.Pid, n.Timeline)
			}
			// The DSN is the administrator's, as under the socnet engine:
			// it connects (the stack's status document moves its password
			// into the home's passfile before printing it).
			if u, err := url.Parse(n.DSN); err != nil || u.User == nil {
				t.Errorf("%s: DSN %q: want a postgres URL with a user", n.Name, n.DSN)
			} else if conn, err := pgx.Connect(ctx, n.DSN); err != nil {
				t.Errorf("%s: status DSN does not connect: %v", n.Name, err)
			} else {
				conn.Close(ctx)
			}
		}
		// The operator's commands reach the engine through the control socket.
		engine, sts, err := stack.NewClient(home.Control()).Status(ctx)
		if err != nil {
			t.Fatalf("status through the control socket: %v", err)
		}
		if engine != stack.EnginePatroni || len(sts) != 2 || sts[0].Primary != "main-1" {
			t.Errorf("control socket status: engine %q, %d clusters, main primary %q; want patroni, 2, main-1", engine, len(sts), sts[0].Primary)
		}
		// Passwords stay in files only their owner reads.
		for _, p := range []string{home.Path("patroni/secrets.json"), home.Path("patroni/main/main-1/patroni.yml")} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %#o, want 0600", p, fi.Mode().Perm())
			}
		}
		// scram-sha-256 only, and no trust for network clients.
		conn, _, err := f.connectLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var hba []string
		rows, err := conn.Query(ctx, "SELECT type || ' ' || auth_method FROM pg_hba_file_rules")
		if err != nil {
			t.Fatal(err)
		}
		if hba, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		for _, l := range hba {
			if strings.HasPrefix(l, "host") && !strings.HasSuffix(l, "scram-sha-256") {
				t.Errorf("pg_hba rule %q: want scram-sha-256 on every host line", l)
			}
		}
		var weak int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_authid WHERE rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'").Scan(&weak); err != nil {
			t.Fatal(err)
		}
		if weak != 0 {
			t.Errorf("%d roles with a password that is not scram-sha-256", weak)
		}
		var checksums string
		if err := conn.QueryRow(ctx, "SHOW data_checksums").Scan(&checksums); err != nil {
			t.Fatal(err)
		}
		if checksums != "on" {
			t.Errorf("data_checksums %s, want on", checksums)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("etcd mutual TLS", func(t *testing.T) {
		var cfg patroni.Config
		b, err := os.ReadFile(home.Path("patroni/main/main-1/patroni.yml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Etcd3.Protocol != "https" || cfg.Etcd3.Cert == "" || cfg.Etcd3.Key == "" || cfg.Etcd3.CACert == "" {
			t.Errorf("main-1's etcd3 %+v: want https with a client certificate", cfg.Etcd3)
		}
		hc, scheme, err := patroni.EtcdHTTPClient(home)
		if err != nil {
			t.Fatal(err)
		}
		if scheme != "https" {
			t.Fatalf("scheme %s, want https", scheme)
		}
		url := "https://" + cfg.Etcd3.Hosts[0] + "/health"
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("etcd with the home's client certificate: %v", err)
		}
		resp.Body.Close()
		// The agent runs with the sitecustomize that keeps urllib3 on the
		// standard library's ssl (agentSiteCustomize).
		pid := nodeOf(f.status(t, "main"), "main-1").AgentPid
		if pid == nil {
			t.Fatal("main-1 has no agent pid")
		}
		environ, err := os.ReadFile("/proc/" + strconv.Itoa(*pid) + "/environ")
		if err != nil {
			t.Fatal(err)
		}
		pyPath := home.Path("patroni/main/main-1/python")
		if !slices.Contains(strings.Split(string(environ), "\x00"), "PYTHONPATH="+pyPath) {
			t.Errorf("main-1's agent runs without PYTHONPATH=%s", pyPath)
		}
		if b, err := os.ReadFile(filepath.Join(pyPath, "sitecustomize.py")); err != nil || !strings.Contains(string(b), "inject_into_urllib3 = lambda: None") {
			t.Errorf("sitecustomize.py: %v, want the one that disables pyOpenSSL's injection", err)
		}
		// The same CA trusted, no certificate presented: refused.
		noCert := hc.Transport.(*http.Transport).Clone()
		noCert.TLSClientConfig.Certificates = nil
		defer noCert.CloseIdleConnections()
		if resp, err := (&http.Client{Transport: noCert, Timeout: 5 * time.Second}).Get(url); err == nil {
			resp.Body.Close()
			t.Errorf("etcd answered a client without a certificate: status %d", resp.StatusCode)
		}
	})

	t.Run("dead replica", func(t *testing.T) {
		leader, syncStandby := f.settled(t)
		w := f.startWriter(t)
		f.killHost(t, "main", "main-3")
		st := f.waitTopology(t, "main", map[string]string{leader: "primary", syncStandby: "replica/sync", "main-3": "down"}, 60*time.Second)
		if n := nodeOf(st, "main-3"); n.AgentPid != nil || n.Error == "" {
			t.Errorf("main-3: agent pid %v, error %q: want no agent and an error", n.AgentPid, n.Error)
		}
		before := w.count()
		poll(t, 60*time.Second, "writes while main-3 is down", func() error {
			if n := w.count(); n < before+30 {
				return fmt.Errorf("%d more rows", n-before)
			}
			return nil
		})
		f.eng.Hold("main-3", false) // the host returns: the engine restarts its agent
		f.settled(t)
		t.Logf("dead replica: %d rows acknowledged, none lost", w.checkNoneLost(t))
	})

	t.Run("postmaster SIGKILL", func(t *testing.T) {
		leader, _ := f.settled(t)
		w := f.startWriter(t)
		n := nodeOf(f.status(t, "main"), leader)
		if n.AgentPid == nil {
			t.Fatalf("%s has no agent", leader)
		}
		at, err := pgnode.KillServer(n.Pid, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		back := w.waitAfter(t, at, 3*time.Minute)
		// Patroni restarts PostgreSQL in place; on a machine too busy for
		// the agent to renew its key within retry_timeout, the sync standby
		// takes over instead. Either way nothing acknowledged is lost.
		now, _ := f.settled(t)
		if a := nodeOf(f.status(t, "main"), leader).AgentPid; a == nil || *a != *n.AgentPid {
			t.Errorf("%s's agent is %v, want the same agent %d", leader, a, *n.AgentPid)
		}
		t.Logf("postmaster SIGKILL of the leader %s: writes back after %v, leader now %s; %d rows acknowledged, none lost",
			leader, back.Round(time.Millisecond), now, w.checkNoneLost(t))
	})

	t.Run("switchover", func(t *testing.T) {
		leader, syncStandby := f.settled(t)
		w := f.startWriter(t)
		out, err := f.eng.Switchover(ctx, "main", "")
		if err != nil {
			t.Fatal(err)
		}
		if out.Record == nil || out.Record.OldPrimary != leader || out.Record.NewPrimary != syncStandby || out.Record.Kind != "switchover" {
			t.Fatalf("outcome %+v: want a switchover record %s -> %s (the sync standby)", out, leader, syncStandby)
		}
		if p, err := f.eng.Primary(ctx, "main"); err != nil || p != syncStandby {
			t.Fatalf("primary %q (%v), want %s", p, err, syncStandby)
		}
		st := f.waitTopology(t, "main", map[string]string{syncStandby: "primary", leader: "replica/sync", "main-3": "replica/async"}, 3*time.Minute)
		if len(st.Failovers) == 0 || st.Failovers[len(st.Failovers)-1].Kind != "switchover" || st.Failovers[len(st.Failovers)-1].NewPrimary != syncStandby {
			t.Errorf("failover history %+v: want the switchover to %s last", st.Failovers, syncStandby)
		}
		if _, err := f.eng.Switchover(ctx, "main", "main-3"); err == nil {
			t.Error("switchover to the asynchronous main-3 was accepted")
		}
		t.Logf("switchover: %s; %d rows acknowledged, none lost", out.Message, w.checkNoneLost(t))
	})

	t.Run("operator commands", func(t *testing.T) {
		// On the counter cluster, which the other subtests leave alone.
		leader, err := f.eng.Primary(ctx, "counter")
		if err != nil {
			t.Fatal(err)
		}
		replica := "counter-1"
		if leader == replica {
			replica = "counter-2"
		}
		var refused *cluster.RefusedError
		if _, err := f.eng.Promote(ctx, "counter", replica, true); !errors.As(err, &refused) {
			t.Errorf("promote of %s beside the live leader %s: %v, want a refusal", replica, leader, err)
		}
		if _, err := f.eng.Rejoin(ctx, "counter", leader); !errors.As(err, &refused) {
			t.Errorf("rejoin of the leader %s: %v, want a refusal", leader, err)
		}
		if _, err := f.eng.Rejoin(ctx, "counter", "main-1"); !errors.As(err, &refused) {
			t.Errorf("rejoin of main-1 in counter: %v, want a refusal", err)
		}
		out, err := f.eng.Rejoin(ctx, "counter", replica)
		if err != nil {
			t.Fatalf("rejoin %s: %v", replica, err)
		}
		t.Log(out.Message)
		f.waitTopology(t, "counter", map[string]string{leader: "primary", replica: "replica/sync"}, 3*time.Minute)

		if _, err := f.eng.StartCluster(ctx, "counter"); !errors.As(err, &refused) {
			t.Errorf("start of the running counter cluster: %v, want a refusal", err)
		}
		if _, err := f.eng.StopCluster(ctx, "counter"); err != nil {
			t.Fatal(err)
		}
		st := f.status(t, "counter")
		if !st.Stopped {
			t.Error("status of the stopped counter cluster: not marked stopped")
		}
		for _, n := range st.Nodes {
			if n.Role != cluster.RoleDown || n.AgentPid != nil {
				t.Errorf("%s after stop: role %s, agent %v; want down without an agent", n.Name, n.Role, n.AgentPid)
			}
		}
		time.Sleep(3 * time.Second) // a few supervision rounds: nothing restarts it
		for _, n := range f.status(t, "counter").Nodes {
			if n.Role != cluster.RoleDown {
				t.Errorf("%s came back while its cluster was stopped: %s", n.Name, n.Role)
			}
		}
		if _, err := f.eng.StartCluster(ctx, "counter"); err != nil {
			t.Fatal(err)
		}
		st = f.waitTopology(t, "counter", map[string]string{leader: "primary", replica: "replica/sync"}, 3*time.Minute)
		if st.Stopped {
			t.Error("the started counter cluster is still marked stopped")
		}
		// Supervision runs all along: over a few of its rounds no node has
		// a second agent started beside the one the start made.
		for range 10 {
			for _, n := range []string{leader, replica} {
				if pids := agentPids(home.Path("patroni/counter/" + n + "/patroni.yml")); len(pids) != 1 {
					t.Fatalf("%s has %d agents after the start (pids %v), want 1", n, len(pids), pids)
				}
			}
			time.Sleep(300 * time.Millisecond)
		}
	})

	t.Run("host loss", func(t *testing.T) {
		// One of main-1 and main-2 leads, the other is its sync standby;
		// main-3 (nosync) is asynchronous.
		lost, heir := f.settled(t)
		f.waitSyncKey(t, "main", heir)
		w := f.startWriter(t)
		at := f.killHost(t, "main", lost)
		back := w.waitAfter(t, at, 3*time.Minute)
		// The lost host stays lost. The engine releases main-3's nosync tag,
		// so Patroni names it the synchronous standby: it may be promoted
		// if the new leader is lost too.
		st := f.waitTopology(t, "main", map[string]string{heir: "primary", "main-3": "replica/sync", lost: "down"}, time.Minute)
		f.waitSyncKey(t, "main", "main-3")
		total := w.checkNoneLost(t)
		t.Logf("host loss of the leader (lost host not restarted): writes back after %v on %s; %d rows acknowledged, none lost",
			back.Round(time.Millisecond), st.Primary, total)
		if last := st.Failovers[len(st.Failovers)-1]; last.Kind != "failover" || last.NewPrimary != heir || last.OldPrimary != lost {
			t.Errorf("last history entry %+v: want a failover %s -> %s", last, lost, heir)
		}

		// A second host loss: the new leader too. main-3, the synchronous
		// standby now, holds every acknowledged row and takes over; alone,
		// it commits again once a lost host returns as its standby.
		w = f.startWriter(t)
		at = f.killHost(t, "main", heir)
		poll(t, 2*time.Minute, "main-3 leads", func() error {
			p, err := f.eng.Primary(ctx, "main")
			if err != nil || p != "main-3" {
				return fmt.Errorf("primary %q (%v)", p, err)
			}
			return nil
		})
		promoted := time.Since(at)
		f.eng.Hold(lost, false)
		f.eng.Hold(heir, false)
		back = w.waitAfter(t, at, 3*time.Minute)
		poll(t, 3*time.Minute, "both hosts back as standbys of main-3", func() error {
			got := topology(f.status(t, "main"))
			if got["main-3"] != "primary" || got[lost]+got[heir] != "replica/syncreplica/async" && got[lost]+got[heir] != "replica/asyncreplica/sync" {
				return fmt.Errorf("topology %v", got)
			}
			return nil
		})
		t.Logf("second host loss: main-3 (released from nosync) led after %v, writes back after %v (once a host returned); %d rows acknowledged, none lost",
			promoted.Round(time.Millisecond), back.Round(time.Millisecond), w.checkNoneLost(t))
	})

	t.Run("resume after a failover", func(t *testing.T) {
		w := f.startWriter(t)
		w.checkNoneLost(t)
		before := topology(f.status(t, "main"))
		leader, err := f.eng.Primary(ctx, "main")
		if err != nil || leader == "" {
			t.Fatalf("main primary %q (%v)", leader, err)
		}
		f.stop(t)
		// The next `up` checks the home before anything else.
		if err := stack.CheckHome(home, stack.HomeOwners()); err != nil {
			t.Errorf("up would refuse the home the engine left: %v", err)
		}
		f.start(t)
		if p, err := f.eng.Primary(ctx, "main"); err != nil || p != leader {
			t.Fatalf("main primary %q (%v) after resume, want %s as before the stop", p, err, leader)
		}
		if p, err := f.eng.Primary(ctx, "counter"); err != nil || p != "counter-1" {
			t.Fatalf("counter primary %q (%v) after resume, want counter-1", p, err)
		}
		poll(t, time.Minute, "main streams again", func() error {
			got := topology(f.status(t, "main"))
			syncs := 0
			for n, r := range got {
				switch {
				case n == leader && r != "primary", n != leader && r != "replica/sync" && r != "replica/async":
					return fmt.Errorf("topology %v (before the stop %v)", got, before)
				case r == "replica/sync":
					syncs++
				}
			}
			if syncs != 1 {
				return fmt.Errorf("topology %v: want one sync standby", got)
			}
			return nil
		})
		// Every row acknowledged since the start of the test is still there.
		f.ackedMu.Lock()
		all := &writer{f: f, acked: f.acked, stop: make(chan struct{}), done: make(chan struct{})}
		f.ackedMu.Unlock()
		close(all.done)
		total := len(all.acked)
		all.checkNoneLost(t)
		t.Logf("resumed: %s leads again; all %d rows acknowledged since the first start are there", leader, total)
	})
}

// agentPids lists the processes running a Patroni agent with the
// configuration at path.
func agentPids(path string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 1 && slices.Contains(args[1:], path) && strings.Contains(strings.Join(args, " "), "patroni") {
			if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
