package patroni_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"socnet/internal/patroni"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// requireBinaries skips without patroni or etcd, except under CI, where a
// missing binary fails the test.
func requireBinaries(t *testing.T) {
	t.Helper()
	for bin, pkg := range map[string]string{"patroni": "patroni", "etcd": "etcd-server"} {
		if _, err := exec.LookPath(bin); err != nil {
			msg := fmt.Sprintf("%s not found: install the Debian package %s", bin, pkg)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// poll calls ok every 200 ms until it returns nil or timeout passes.
func poll(t *testing.T, timeout time.Duration, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testCluster is a running etcd with three agents over a spec.
type testCluster struct {
	spec   patroni.Spec
	cfgs   []patroni.Config
	agents map[string]*patroni.Process
	logger *slog.Logger
	osUser string
}

func (c *testCluster) client(name string) *patroni.Client {
	for _, n := range c.spec.Nodes {
		if n.Name == name {
			return patroni.NewClient("http://127.0.0.1:" + strconv.Itoa(n.RESTPort))
		}
	}
	panic("no node " + name)
}

func (c *testCluster) node(name string) (patroni.NodeSpec, patroni.Config) {
	for i, n := range c.spec.Nodes {
		if n.Name == name {
			return n, c.cfgs[i]
		}
	}
	panic("no node " + name)
}

func (c *testCluster) startAgent(t *testing.T, name string) {
	t.Helper()
	n, cfg := c.node(name)
	p, err := patroni.StartAgent(c.logger, n, cfg, c.osUser)
	if err != nil {
		t.Fatal(err)
	}
	c.agents[name] = p
}

// roles asks the agents other than skip for the cluster's roles.
func (c *testCluster) roles(ctx context.Context, skip string) (map[string]string, error) {
	var lastErr error
	for _, n := range c.spec.Nodes {
		if n.Name == skip {
			continue
		}
		st, err := c.client(n.Name).Cluster(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		got := map[string]string{}
		for _, m := range st.Members {
			if m.State == "running" || m.State == "streaming" {
				got[m.Name] = m.Role
			}
		}
		return got, nil
	}
	return nil, lastErr
}

func connect(ctx context.Context, spec patroni.Spec, port int) (*pgx.Conn, error) {
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres connect_timeout=2",
		port, spec.Superuser.Username, spec.Superuser.Password)
	return pgx.Connect(ctx, dsn)
}

func TestHostLossKeepsAcknowledgedWritesThenSwitchover(t *testing.T) {
	requireBinaries(t)
	if testing.Short() {
		t.Skip("starts etcd and three Patroni agents")
	}
	ctx := context.Background()
	bin, err := pgnode.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "patroni-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil { // the postgres user must reach its node dirs
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "patroni"), nil))

	etcdSpec := patroni.EtcdSpec{Dir: filepath.Join(base, "etcd"), ClientPort: freePort(t), PeerPort: freePort(t)}
	etcd, err := patroni.StartEtcd(ctx, logger, etcdSpec)
	if err != nil {
		t.Fatal(err)
	}
	spec := patroni.Spec{
		Cluster:     "main",
		BinDir:      bin,
		Etcd:        []string{etcdSpec.Endpoint()},
		Superuser:   patroni.Credential{Username: "postgres", Password: "su-" + strconv.Itoa(freePort(t))},
		Replication: patroni.Credential{Username: "replicator", Password: "repl-" + strconv.Itoa(freePort(t))},
		Rewind:      patroni.Credential{Username: "rewinder", Password: "rw-" + strconv.Itoa(freePort(t))},
	}
	for i, name := range []string{"n1", "n2", "n3"} {
		spec.Nodes = append(spec.Nodes, patroni.NodeSpec{
			Name: name, Port: freePort(t), RESTPort: freePort(t),
			Dir: filepath.Join(base, name), NoSync: i == 2,
		})
	}
	cfgs, err := patroni.Configs(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{spec: spec, cfgs: cfgs, agents: map[string]*patroni.Process{}, logger: logger, osUser: pgnode.OSUser()}
	t.Cleanup(func() {
		for _, n := range spec.Nodes {
			if p := c.agents[n.Name]; p != nil {
				if err := p.Stop(30 * time.Second); err != nil {
					t.Log(err)
				}
			}
			// A postmaster whose agent was killed is left to us.
			if pid := pgnode.RunningPostmaster(n.DataDir()); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = etcd.Stop(10 * time.Second)
		if t.Failed() {
			for _, n := range spec.Nodes {
				if b, err := os.ReadFile(filepath.Join(n.Dir, "patroni.log")); err == nil {
					if len(b) > 4000 {
						b = b[len(b)-4000:]
					}
					t.Logf("%s patroni.log tail:\n%s", n.Name, b)
				}
			}
		}
	})
	// n1 first, so that it bootstraps the cluster; the others clone it.
	c.startAgent(t, "n1")
	poll(t, 60*time.Second, "n1 leads", func() error {
		ok, err := c.client("n1").IsPrimary(ctx)
		if err != nil || !ok {
			return fmt.Errorf("n1 not primary (%v)", err)
		}
		return nil
	})
	c.startAgent(t, "n2")
	c.startAgent(t, "n3")
	wantRoles := map[string]string{"n1": "leader", "n2": "sync_standby", "n3": "replica"}
	poll(t, 120*time.Second, "leader, sync standby and replica", func() error {
		got, err := c.roles(ctx, "")
		if err != nil {
			return err
		}
		if d := cmp.Diff(wantRoles, got); d != "" {
			return fmt.Errorf("roles (-want +got):\n%s", d)
		}
		return nil
	})

	// PostgreSQL's own view agrees: n2 sync, n3 (nosync) async.
	leaderNode, _ := c.node("n1")
	poll(t, 30*time.Second, "pg_stat_replication", func() error {
		conn, err := connect(ctx, spec, leaderNode.Port)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, "SELECT application_name, sync_state FROM pg_stat_replication WHERE state = 'streaming'")
		if err != nil {
			return err
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var a [2]string
			return a, r.Scan(&a[0], &a[1])
		})
		if err != nil {
			return err
		}
		got2 := map[string]string{}
		for _, a := range got {
			got2[a[0]] = a[1]
		}
		if d := cmp.Diff(map[string]string{"n2": "sync", "n3": "async"}, got2); d != "" {
			return fmt.Errorf("pg_stat_replication (-want +got):\n%s", d)
		}
		return nil
	})

	// A writer inserts rows one by one into whichever node Patroni calls
	// leader, and records what was acknowledged and when.
	{
		conn, err := connect(ctx, spec, leaderNode.Port)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	var (
		mu      sync.Mutex
		acked   []int64
		ackedAt []time.Time
	)
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(ctx)
			}
		}()
		for id := int64(1); id <= 100000; {
			select {
			case <-stop:
				return
			default:
			}
			if conn == nil {
				roles, err := c.roles(ctx, "")
				if err == nil {
					for name, role := range roles {
						if role == "leader" {
							n, _ := c.node(name)
							conn, _ = connect(ctx, spec, n.Port)
						}
					}
				}
				if conn == nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := conn.Exec(wctx, "INSERT INTO acked VALUES ($1)", id)
			cancel()
			if err != nil {
				conn.Close(ctx)
				conn = nil
				id++ // the outcome is in doubt; never reuse the id
				continue
			}
			mu.Lock()
			acked, ackedAt = append(acked, id), append(ackedAt, time.Now())
			mu.Unlock()
			id++
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-writerDone
	})
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	poll(t, 30*time.Second, "writes before the fault", func() error {
		if n := ackedCount(); n < 50 {
			return fmt.Errorf("%d rows acknowledged", n)
		}
		return nil
	})

	// Host loss: the leader's postmaster and its agent die together.
	pmPid := pgnode.RunningPostmaster(leaderNode.DataDir())
	if pmPid == 0 {
		t.Fatalf("no postmaster runs in %s", leaderNode.DataDir())
	}
	killAt := time.Now()
	if err := syscall.Kill(pmPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := c.agents["n1"].Kill(); err != nil {
		t.Fatal(err)
	}
	c.agents["n1"] = nil
	mu.Lock()
	beforeKill := len(acked)
	mu.Unlock()

	var newLeader string
	poll(t, 120*time.Second, "a new leader", func() error {
		roles, err := c.roles(ctx, "n1")
		if err != nil {
			return err
		}
		for name, role := range roles {
			if role == "leader" && name != "n1" {
				newLeader = name
				return nil
			}
		}
		return fmt.Errorf("roles %v", roles)
	})
	promoted := time.Since(killAt)
	if newLeader != "n2" {
		t.Fatalf("new leader %s, want the sync standby n2", newLeader)
	}

	// Every row acknowledged before the fault is on the new leader.
	checkAcked := func(upTo int) {
		t.Helper()
		n2, _ := c.node("n2")
		conn, err := connect(ctx, spec, n2.Port)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, "SELECT id FROM acked")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		have := map[int64]bool{}
		for _, id := range ids {
			have[id] = true
		}
		mu.Lock()
		defer mu.Unlock()
		var lost []int64
		for _, id := range acked[:upTo] {
			if !have[id] {
				lost = append(lost, id)
			}
		}
		if len(lost) > 0 {
			t.Errorf("%d of %d acknowledged rows missing on the new leader: %v", len(lost), upTo, lost)
		}
	}
	checkAcked(beforeKill)

	// The new leader has no sync candidate but n1 (n3 is nosync): Patroni
	// sets synchronous_standby_names to '*', which n3 satisfies without
	// being promotable (the engine's NoSyncTags releases it). The old
	// leader's host returns here and rejoins.
	c.startAgent(t, "n1")
	poll(t, 180*time.Second, "writes acknowledged after the fault", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(ackedAt) > beforeKill && ackedAt[len(ackedAt)-1].After(killAt) {
			return nil
		}
		return fmt.Errorf("no write acknowledged since the fault")
	})
	close(stop)
	<-writerDone
	mu.Lock()
	var firstAfter time.Time
	for _, at := range ackedAt {
		if at.After(killAt) {
			firstAfter = at
			break
		}
	}
	total := len(acked)
	mu.Unlock()
	checkAcked(total)
	// Switchover back through the REST API once n1 is the sync standby again.
	poll(t, 120*time.Second, "n1 sync standby", func() error {
		roles, err := c.roles(ctx, "")
		if err != nil {
			return err
		}
		if roles["n1"] != "sync_standby" {
			return fmt.Errorf("roles %v", roles)
		}
		return nil
	})
	if err := c.client("n2").Switchover(ctx, "n2", "n1"); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, "n1 leads after switchover", func() error {
		roles, err := c.roles(ctx, "")
		if err != nil {
			return err
		}
		if d := cmp.Diff(map[string]string{"n1": "leader", "n2": "sync_standby", "n3": "replica"}, roles); d != "" {
			return fmt.Errorf("roles (-want +got):\n%s", d)
		}
		return nil
	})
	t.Logf("host loss: new leader %s after %v; writes back after %v (the old leader's host restarted once %s led); %d rows acknowledged, none lost",
		newLeader, promoted.Round(time.Millisecond), firstAfter.Sub(killAt).Round(time.Millisecond), newLeader, total)
}
