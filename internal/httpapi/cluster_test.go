package httpapi_test

import (
	"context"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

// cluster is a primary with streaming replicas r1..rn, with the social
// schema migrated before the replicas were copied.
type cluster struct {
	primary  *pgnode.Node
	replicas []*pgnode.Node
}

// dsns returns every node's DSN, primary first.
func (c *cluster) dsns() []string {
	out := []string{c.primary.DSN("")}
	for _, r := range c.replicas {
		out = append(out, r.DSN(""))
	}
	return out
}

// mustCluster starts a primary and replicas, each replica with the given
// settings on top of the primary's (recovery_min_apply_delay makes one that
// lags on purpose). syncNames, when set, becomes synchronous_standby_names
// once the replicas stream.
func mustCluster(t *testing.T, replicaSettings []map[string]string, syncNames string) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &cluster{primary: pgtest.MustNode(t, "p", nil)}
	if err := postgres.Migrate(ctx, c.primary.DSN(""), discardLog()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	mustExec(t, ctx, c.primary, "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'rep-secret'")
	pcfg := c.primary.Config()
	for i, extra := range replicaSettings {
		name := "r" + strconv.Itoa(i+1)
		mustExec(t, ctx, c.primary, "SELECT pg_create_physical_replication_slot('"+name+"')")
		settings := maps.Clone(pcfg.Settings)
		maps.Copy(settings, extra)
		r := pgtest.NewNode(t, name, settings)
		conninfo := pgnode.ReplicationConnInfo(pcfg.Host, pcfg.Port, "replicator", "rep-secret", name)
		if err := r.BaseBackup(ctx, conninfo, name); err != nil {
			t.Fatalf("base backup %s: %v", name, err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		c.replicas = append(c.replicas, r)
	}
	for _, r := range c.replicas {
		waitUntil(t, 30*time.Second, r.Name()+" streaming", func() bool {
			return queryInt(ctx, c.primary, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", r.Name()) == 1
		})
	}
	if syncNames != "" {
		mustExec(t, ctx, c.primary, "ALTER SYSTEM SET synchronous_standby_names = '"+syncNames+"'")
		mustExec(t, ctx, c.primary, "SELECT pg_reload_conf()")
		waitUntil(t, 30*time.Second, "a synchronous standby", func() bool {
			return queryInt(ctx, c.primary, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") == 1
		})
	}
	return c
}

func mustExec(t *testing.T, ctx context.Context, node *pgnode.Node, sql string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, node.DSN(""))
	if err != nil {
		t.Fatalf("connect %s: %v", node.Name(), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s on %s: %v", sql, node.Name(), err)
	}
}

// queryInt returns the integer sql gives on node, -1 when it fails.
func queryInt(ctx context.Context, node *pgnode.Node, sql string, args ...any) int64 {
	conn, err := pgx.Connect(ctx, node.DSN(""))
	if err != nil {
		return -1
	}
	defer conn.Close(context.Background())
	var v int64
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		return -1
	}
	return v
}

// waitUntil polls cond every 50 ms until it holds, failing t after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killNode stops node with SIGKILL and waits for it to exit.
func killNode(t *testing.T, node *pgnode.Node) {
	t.Helper()
	if err := node.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-node.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit after SIGKILL", node.Name())
	}
}

// routerSees waits until the server's router sees node in role.
func (e *env) routerSees(t *testing.T, node *pgnode.Node, role string) {
	t.Helper()
	name := "127.0.0.1:" + strconv.Itoa(node.Config().Port)
	waitUntil(t, 30*time.Second, node.Name()+" seen as "+role, func() bool {
		for _, s := range e.db.Snapshot() {
			if s.Name == name {
				return s.Role == role
			}
		}
		return false
	})
}

// withStatementTimeout returns the DSNs with statement_timeout d, as
// socnet serve sets it.
func withStatementTimeout(dsns []string, d time.Duration) []string {
	out := make([]string, len(dsns))
	for i, dsn := range dsns {
		out[i] = postgres.WithStatementTimeout(dsn, d)
	}
	return out
}

// TestStuckSyncCommitIs503 stops the synchronous standby: a write must
// answer 503 with Retry-After, never 200. The connections carry a
// statement_timeout well under the write timeout, as socnet serve sets
// them: the server's own timeout must not end the COMMIT's wait (a
// cancelled wait reports success, committed locally only).
func TestStuckSyncCommitIs503(t *testing.T) {
	c := mustCluster(t, []map[string]string{nil}, "r1")
	e := mustEnvWith(t, envOptions{nodes: withStatementTimeout(c.dsns(), 300*time.Millisecond),
		db: func(cfg *dbroute.Config) { cfg.WriteTimeout = time.Second }})
	e.mustRegister(t, validUser("Before", "Stop"))

	killNode(t, c.replicas[0])
	r := e.do(t, request{method: "POST", path: "/user/register", body: validUser("During", "Stop")}).wantStatus(t, 503)
	if got := r.error(t); got.Kind != social.EUNAVAILABLE || got.Code != 5030 {
		t.Errorf("error %+v; want unavailable, 5030", got)
	}
	// The client's check asserted Retry-After: 1.

	// With the standby back, writes are acknowledged again.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.replicas[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "a write acknowledged again", func() bool {
		return e.do(t, request{method: "POST", path: "/user/register", body: validUser("After", "Stop")}).Status == 200
	})
}

func TestNoPrimaryIs503(t *testing.T) {
	c := mustCluster(t, []map[string]string{nil}, "")
	// A generous lag bound keeps the replica fresh (it replayed the last
	// position seen on the primary) for the whole test, however slow.
	e := mustEnvWith(t, envOptions{nodes: c.dsns(), db: func(cfg *dbroute.Config) { cfg.MaxReplicaLag = time.Minute }})
	id := e.mustRegister(t, validUser("Ivan", "Petrov"))
	// The replica is asynchronous: let it have the user before the kill.
	waitUntil(t, 30*time.Second, "the user on the replica", func() bool {
		return queryInt(context.Background(), c.replicas[0], "SELECT count(*) FROM users") == 1
	})

	killNode(t, c.primary)
	e.routerSees(t, c.primary, dbroute.RoleDown)
	for _, req := range []request{
		{method: "POST", path: "/user/register", body: validUser("A", "B")},
		{method: "POST", path: "/login", body: map[string]string{"id": id, "password": password}}, // reads the hash on the primary
	} {
		r := e.do(t, req).wantStatus(t, 503)
		if got := r.error(t); got.Kind != social.EUNAVAILABLE {
			t.Errorf("%s %s: %+v; want unavailable", req.method, req.path, got)
		}
	}
	// Reads a replica can serve within the lag bound go on.
	e.do(t, request{method: "GET", path: "/user/get/" + id}).wantStatus(t, 200)
}

func TestNoReplicaFailIs503(t *testing.T) {
	c := mustCluster(t, []map[string]string{nil}, "")
	e := mustEnvWith(t, envOptions{nodes: c.dsns(), db: func(cfg *dbroute.Config) { cfg.NoReplica = dbroute.NoReplicaFail }})
	id := e.mustRegister(t, validUser("Ivan", "Petrov"))
	waitUntil(t, 30*time.Second, "the user on the replica", func() bool {
		return e.do(t, request{method: "GET", path: "/user/get/" + id}).Status == 200
	})

	killNode(t, c.replicas[0])
	e.routerSees(t, c.replicas[0], dbroute.RoleDown)
	for _, path := range []string{"/user/get/" + id, "/user/search?first_name=I&last_name=P"} {
		r := e.do(t, request{method: "GET", path: path}).wantStatus(t, 503)
		if got := r.error(t); got.Kind != social.EUNAVAILABLE {
			t.Errorf("GET %s: %+v; want unavailable", path, got)
		}
	}
	// Writes do not need a replica.
	e.mustRegister(t, validUser("Still", "Writing"))
}

// TestReadYourWritesAcrossFailover follows a user's writes through HTTP on
// a cluster whose replicas apply WAL 3 s late (and are still fit for reads:
// the lag bound is a minute): each authenticated read right after the
// user's own write must see it, before and after the primary is killed and
// the synchronous replica promoted. A session evicted from the router's
// memory loses the guarantee, which shows that the replicas really serve
// stale reads and that the check can see one.
func TestReadYourWritesAcrossFailover(t *testing.T) {
	late := map[string]string{"recovery_min_apply_delay": "3s"}
	c := mustCluster(t, []map[string]string{late, late}, "FIRST 1 (r1)")
	e := mustEnvWith(t, envOptions{nodes: c.dsns(), db: func(cfg *dbroute.Config) {
		cfg.MaxReplicaLag = time.Minute
		cfg.SessionTTL = time.Minute
		cfg.MaxSessions = 2
		cfg.WriteTimeout = 5 * time.Second
	}})
	ids := map[string]string{}
	tokens := map[string]string{}
	posts := map[string]string{}
	for _, name := range []string{"Alice", "Bob", "Carol", "Dave", "Erin"} {
		ids[name], tokens[name] = e.mustUser(t, name, "X")
		var post string
		e.do(t, request{method: "POST", path: "/post/create", token: tokens[name], body: map[string]string{"text": "by " + name}}).
			wantStatus(t, 200).json(t, &post)
		posts[name] = post
	}
	feedHas := func(reader, author string) bool {
		var feed []postJSON
		e.do(t, request{method: "GET", path: "/post/feed", token: tokens[reader]}).wantStatus(t, 200).json(t, &feed)
		for _, p := range feed {
			if p.ID == posts[author] {
				return true
			}
		}
		return false
	}
	follow := func(reader, author string) {
		e.do(t, request{method: "PUT", path: "/friend/set/" + ids[author], token: tokens[reader]}).wantStatus(t, 200)
	}
	// Let the replicas catch up with the setup, so that they serve reads.
	waitUntil(t, 30*time.Second, "the replicas serving the setup", func() bool {
		return e.do(t, request{method: "GET", path: "/post/get/" + posts["Erin"]}).Status == 200
	})

	follow("Alice", "Bob")
	if !feedHas("Alice", "Bob") {
		t.Error("Alice's feed right after following Bob lacks Bob's post")
	}

	killNode(t, c.primary)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.replicas[0].Promote(ctx); err != nil {
		t.Fatalf("promote r1: %v", err)
	}
	e.routerSees(t, c.replicas[0], dbroute.RolePrimary)
	// r2 follows the new primary, as the cluster manager re-points it; until
	// it replays the new primary's WAL it cannot be shown fresh and gets no
	// reads.
	r1cfg := c.replicas[0].Config()
	mustExec(t, ctx, c.replicas[0], "SELECT pg_create_physical_replication_slot('r2')")
	if err := c.replicas[1].Follow(ctx, pgnode.ReplicationConnInfo(r1cfg.Host, r1cfg.Port, "replicator", "rep-secret", "r2"), "r2"); err != nil {
		t.Fatalf("re-point r2: %v", err)
	}
	r2Name := "127.0.0.1:" + strconv.Itoa(c.replicas[1].Config().Port)
	waitUntil(t, 30*time.Second, "r2 streaming from r1 and serving reads", func() bool {
		for _, s := range e.db.Snapshot() {
			if s.Name == r2Name {
				return s.Role == dbroute.RoleReplica && s.Healthy
			}
		}
		return false
	})
	// The acknowledged follow survived, and a new one is read back at once.
	follow("Alice", "Carol")
	if !feedHas("Alice", "Carol") || !feedHas("Alice", "Bob") {
		t.Error("Alice's feed after the failover lacks Carol's or Bob's post")
	}

	// Two later sessions evict Alice's, the router keeping two: her next
	// read may go to r2, which applies 3 s late.
	follow("Alice", "Dave")
	follow("Bob", "Erin")
	follow("Carol", "Erin")
	if !feedHas("Carol", "Erin") {
		t.Error("Carol's feed right after following Erin lacks Erin's post")
	}
	stale := false
	for range 5 {
		if !feedHas("Alice", "Dave") {
			stale = true
			break
		}
	}
	if !stale {
		t.Error("Alice's reads after her session was evicted all saw her write: the test cannot tell a stale read")
	}
}
