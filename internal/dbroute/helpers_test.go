package dbroute_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const replicatorPassword = "rep-secret"

// testCluster is a primary with streaming replicas, built with pgnode.
type testCluster struct {
	primary  *pgnode.Node
	replicas []*pgnode.Node
}

// nodes returns the primary followed by the replicas.
func (c *testCluster) nodes() []*pgnode.Node {
	return append([]*pgnode.Node{c.primary}, c.replicas...)
}

// dsns returns every node's admin DSN, primary first.
func (c *testCluster) dsns() []string {
	var out []string
	for _, n := range c.nodes() {
		out = append(out, n.DSN(""))
	}
	return out
}

// multiHostDSN returns one DSN naming every node, replicas first, so that
// the router has to find the primary.
func (c *testCluster) multiHostDSN() string {
	var hosts []string
	for _, n := range append(append([]*pgnode.Node{}, c.replicas...), c.primary) {
		hosts = append(hosts, "127.0.0.1:"+strconv.Itoa(n.Config().Port))
	}
	cfg := c.primary.Config()
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&target_session_attrs=any",
		url.PathEscape(cfg.Superuser), url.PathEscape(cfg.Password), strings.Join(hosts, ","))
}

// mustCluster starts a primary and n streaming replicas named r1..rn, each
// on its own slot with application_name = name, and creates table items
// (id bigserial, v text) on the primary. syncNames, when set, becomes the
// primary's synchronous_standby_names once the replicas stream.
func mustCluster(t *testing.T, n int, syncNames string) *testCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &testCluster{primary: pgtest.MustNode(t, "p", nil)}
	mustExec(t, ctx, c.primary, "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '"+replicatorPassword+"'")
	mustExec(t, ctx, c.primary, "CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL)")
	pcfg := c.primary.Config()
	for i := 1; i <= n; i++ {
		name := "r" + strconv.Itoa(i)
		mustExec(t, ctx, c.primary, "SELECT pg_create_physical_replication_slot('"+name+"')")
		r := newReplicaNode(t, name, c.primary)
		conninfo := pgnode.ReplicationConnInfo(pcfg.Host, pcfg.Port, "replicator", replicatorPassword, name)
		if err := r.BaseBackup(ctx, conninfo, name); err != nil {
			t.Fatalf("base backup %s: %v", name, err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		c.replicas = append(c.replicas, r)
	}
	for _, r := range c.replicas {
		waitStreaming(t, ctx, c.primary, r.Name())
	}
	if syncNames != "" {
		mustExec(t, ctx, c.primary, "ALTER SYSTEM SET synchronous_standby_names = '"+syncNames+"'")
		mustExec(t, ctx, c.primary, "SELECT pg_reload_conf()")
		waitFor(t, ctx, 30*time.Second, "a synchronous standby", func() bool {
			return queryInt(t, ctx, c.primary, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") == 1
		})
	}
	return c
}

// newReplicaNode configures (without creating) a node that will be a base
// backup of primary: it shares the primary's superuser and password, which
// the backup copies. It is stopped in t.Cleanup.
func newReplicaNode(t *testing.T, name string, primary *pgnode.Node) *pgnode.Node {
	t.Helper()
	dir := t.TempDir()
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pcfg := primary.Config()
	node := pgnode.New(pgnode.Config{
		Name:      name,
		DataDir:   filepath.Join(dir, "data"),
		LogPath:   filepath.Join(dir, name+".log"),
		Port:      port,
		OSUser:    pgnode.OSUser(),
		Superuser: pcfg.Superuser,
		Password:  pcfg.Password,
		Settings:  pcfg.Settings,
		Logger:    slog.New(slog.NewTextHandler(pgtest.LogWriter(t, name+" | pgnode:"), nil)),
		Output:    pgtest.LogWriter(t, ""),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := node.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", name, err)
		}
	})
	return node
}

// waitReplayed waits until every running replica has replayed all WAL the
// primary has written so far.
func (c *testCluster) waitReplayed(t *testing.T, ctx context.Context) {
	t.Helper()
	target := queryInt(t, ctx, c.primary, "SELECT pg_current_wal_lsn() - '0/0'")
	for _, r := range c.replicas {
		waitFor(t, ctx, 30*time.Second, r.Name()+" replayed", func() bool {
			return queryInt(t, ctx, r, "SELECT pg_last_wal_replay_lsn() - '0/0'") >= target
		})
	}
}

// mustExec runs sql on node's postgres database.
func mustExec(t *testing.T, ctx context.Context, node *pgnode.Node, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, node.DSN(""))
	if err != nil {
		t.Fatalf("connect %s: %v", node.Name(), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s on %s: %v", sql, node.Name(), err)
	}
}

// queryInt returns the int64 result of sql on node.
func queryInt(t *testing.T, ctx context.Context, node *pgnode.Node, sql string, args ...any) int64 {
	t.Helper()
	conn, err := pgx.Connect(ctx, node.DSN(""))
	if err != nil {
		t.Fatalf("connect %s: %v", node.Name(), err)
	}
	defer conn.Close(context.Background())
	var v int64
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s on %s: %v", sql, node.Name(), err)
	}
	return v
}

// waitStreaming waits until primary shows applicationName streaming.
func waitStreaming(t *testing.T, ctx context.Context, primary *pgnode.Node, applicationName string) {
	t.Helper()
	waitFor(t, ctx, 30*time.Second, applicationName+" streaming", func() bool {
		conn, err := pgx.Connect(ctx, primary.DSN(""))
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", applicationName).Scan(&n)
		return err == nil && n == 1
	})
}

// waitFor polls cond every 20 ms until it holds, failing t after timeout.
func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// mustOpen opens a router on cfg (defaults for tests: 100 ms health
// interval) and closes it in t.Cleanup.
func mustOpen(t *testing.T, cfg dbroute.Config) *dbroute.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "dbroute:"), &slog.HandlerOptions{Level: slog.LevelInfo}))
	db, err := dbroute.Open(ctx, cfg, log)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(db.Close)
	return db
}

// nodeStatus returns the Snapshot entry of node.
func nodeStatus(t *testing.T, db *dbroute.DB, node *pgnode.Node) dbroute.NodeStatus {
	t.Helper()
	name := "127.0.0.1:" + strconv.Itoa(node.Config().Port)
	for _, s := range db.Snapshot() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("node %s (%s) not in snapshot %+v", node.Name(), name, db.Snapshot())
	return dbroute.NodeStatus{}
}

// waitPrimary waits until the router's elected primary is node.
func waitPrimary(t *testing.T, ctx context.Context, db *dbroute.DB, node *pgnode.Node, timeout time.Duration) {
	t.Helper()
	waitFor(t, ctx, timeout, node.Name()+" elected primary", func() bool {
		return nodeStatus(t, db, node).Elected
	})
}

// insertItem writes one row through Transact and returns its id.
func insertItem(ctx context.Context, db *dbroute.DB, v string) (int64, error) {
	var id int64
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "INSERT INTO items (v) VALUES ($1) RETURNING id", v).Scan(&id)
	})
	return id, err
}

// serverPort returns the port of the server fn's connection reaches.
func serverPort(ctx context.Context, q dbroute.Querier) (int, error) {
	var port int
	err := q.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
	return port, err
}

// errCounter counts errors by kind for the failure tests.
type errCounter struct {
	unavailable int
	other       []error
}

func (c *errCounter) add(err error) {
	switch {
	case err == nil:
	case dbroute.IsUnavailable(err):
		c.unavailable++
	case errors.Is(err, context.Canceled):
	default:
		c.other = append(c.other, err)
	}
}
