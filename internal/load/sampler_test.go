package load_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"socnet/internal/load"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
)

const replicatorPassword = "load-test-replicator"

func mustExec(t *testing.T, ctx context.Context, dsn, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// MustPrimaryAndReplica starts a primary and a streaming replica of it
// named "replica", and returns them once the replica streams.
func MustPrimaryAndReplica(t *testing.T) (primary, replica *pgnode.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary = pgtest.MustNode(t, "primary", nil)
	mustExec(t, ctx, primary.DSN(""), "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '"+replicatorPassword+"'")
	mustExec(t, ctx, primary.DSN(""), "SELECT pg_create_physical_replication_slot('replica')")
	replica = pgtest.NewNode(t, "replica", nil)
	pc := primary.Config()
	conninfo := pgnode.ReplicationConnInfo(pc.Host, pc.Port, "replicator", replicatorPassword, "replica")
	if err := replica.BaseBackup(ctx, conninfo, "replica"); err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitStreaming(ctx, primary.DSN(""), "replica", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return primary, replica
}

// WaitStreaming polls the primary until the standby streams from it.
func WaitStreaming(ctx context.Context, primaryDSN, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, primaryDSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", name).Scan(&n)
		if err == nil && n == 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("standby %s does not stream: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestRunSamplesDatabaseNodes: the sampler counts the load each node
// carried, exactly, and samples every SampleEvery. Every request of the load
// inserts one row on the primary and makes its backend flush its statistics
// before it answers (pg_stat_force_next_flush), so that when the run ends the
// primary's statistics hold every row the load inserted: the counts are those
// of the work done, however long it took.
func TestRunSamplesDatabaseNodes(t *testing.T) {
	primary, replica := MustPrimaryAndReplica(t)
	ctx := context.Background()
	// No autovacuum on the table: its ANALYZE would write statistics rows
	// (inserts into pg_statistic) that are not the load.
	mustExec(t, ctx, primary.DSN(""), "CREATE TABLE hits (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now()) "+
		"WITH (autovacuum_enabled = off); SELECT pg_stat_force_next_flush()")
	pool, err := pgxpool.New(ctx, primary.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := pool.Exec(r.Context(), "INSERT INTO hits DEFAULT VALUES; SELECT pg_stat_force_next_flush()"); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)

	gone := "postgres://postgres:x@127.0.0.1:" + strconv.Itoa(closedPort(t)) + "/postgres?sslmode=disable"
	nodes := []load.Node{
		{Name: "primary", Cluster: "main", Role: "primary", PID: primary.Pid(), DSN: primary.DSN("")},
		{Name: "replica", Cluster: "main", DSN: replica.DSN("")}, // pid found through postmaster.pid
		{Name: "gone", Cluster: "main", Role: "replica", DSN: gone},
	}
	const every, runFor = 500 * time.Millisecond, 2 * time.Second
	res := MustRun(t, load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 2, Duration: runFor,
		SampleEvery: every, Nodes: nodes, Log: slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "load:"), nil))})
	if res.Successes == 0 || res.Errors != 0 {
		t.Fatalf("%d successes, %d errors (%v)", res.Successes, res.Errors, res.StatusCodes)
	}
	if len(res.Nodes) != 3 {
		t.Fatalf("%d node results, want 3", len(res.Nodes))
	}
	p, r, g := res.Nodes[0], res.Nodes[1], res.Nodes[2]
	t.Logf("%d requests; primary: tps %v share %v xacts %d inserted %d cpu %v%% lag %d B", res.Requests, p.TPS, p.TPSShare, p.Xacts, p.TupInserted, pct(p.CPUPercent), p.MaxLagBytes)
	t.Logf("replica: tps %v share %v xacts %d cpu %v%% lag %v s", r.TPS, r.TPSShare, r.Xacts, pct(r.CPUPercent), r.MaxLagSeconds)

	// One row per successful request, and nothing else inserts.
	if p.TupInserted != res.Successes {
		t.Errorf("primary inserted %d tuples for %d successful requests", p.TupInserted, res.Successes)
	}
	// One transaction per successful request, plus the start of each of the
	// load's connections. The sampler takes its own transactions off as it
	// expects them to appear, and its backend reports them late (at most
	// once a second), so the count may fall short by as many as it made:
	// one per reading and one for its backend's start.
	most := res.Successes + int64(res.Connections)
	least := res.Successes - int64(len(p.Samples)+3)
	if p.Xacts < least || p.Xacts > most || p.Role != "primary" || p.TPSShare < 0.99 || p.TPS <= 0 {
		t.Errorf("primary: role %s, %d transactions for %d requests (want %d to %d), tps %v, share %v; want the load",
			p.Role, p.Xacts, res.Successes, least, most, p.TPS, p.TPSShare)
	}
	if p.CPUPercent == nil || *p.CPUPercent <= 0 || p.CPUSeconds == nil {
		t.Errorf("primary CPU %v: want the backends' CPU", pct(p.CPUPercent))
	}
	if r.Role != "replica" || r.PID != replica.Pid() || r.CPUSeconds == nil || r.TPSShare != 0 {
		t.Errorf("replica: role %s, pid %d (want %d), cpu %v, share %v", r.Role, r.PID, replica.Pid(), pct(r.CPUPercent), r.TPSShare)
	}
	if r.TupInserted != 0 || r.Xacts != 0 {
		t.Errorf("replica counted %d inserted tuples and %d transactions: the idle replica carried no load (replayed WAL "+
			"is not an insert, the sampler's own transactions are not load)", r.TupInserted, r.Xacts)
	}
	// Samples fall on multiples of the interval from the start (never
	// early), one per interval: a 2 s run reaches at least two of them. The
	// last may instead be the reading that closes the run, after its 2 s.
	for _, n := range []load.NodeResult{p, r} {
		if len(n.Samples) < 2 || n.DownSamples != 0 {
			t.Errorf("%s: %d samples, %d down; want one every %v, all up", n.Name, len(n.Samples), n.DownSamples, every)
		}
		for i, s := range n.Samples {
			due := float64(i+1) * every.Seconds()
			early := s.T < due-0.001 && (i < len(n.Samples)-1 || s.T < runFor.Seconds())
			if !s.Up || s.Role != n.Role || early || (i > 0 && s.T <= n.Samples[i-1].T) || s.LagBytes < 0 {
				t.Errorf("%s sample %d (due at %v s): %+v", n.Name, i, due, s)
			}
		}
	}
	if g.Role != "down" || g.DownSamples < 2 || g.DownSamples != len(g.Samples) || g.CPUSeconds != nil || g.Xacts != 0 {
		t.Errorf("unreachable node: role %s, %d of %d samples down, cpu %v, xacts %d", g.Role, g.DownSamples, len(g.Samples), pct(g.CPUPercent), g.Xacts)
	}
}

func pct(v *float64) string {
	if v == nil {
		return "none"
	}
	return strconv.FormatFloat(*v, 'f', 1, 64)
}

// MustUsersDatabase returns the DSN of a migrated social database with n
// users named from a fixed list; the admin DSN of its server's postgres
// database; and the users.
func MustUsersDatabase(t *testing.T, n int) (dsn string, users []load.User) {
	t.Helper()
	ctx := context.Background()
	dsn = pgtest.MustDatabase(t)
	if err := postgres.Migrate(ctx, dsn, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	firsts := []string{"Иван", "Мария", "Пётр", "Анна"}
	seconds := []string{"Петров", "Иванова", "Сидоров", "Кузнецова"}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := range n {
		u := load.User{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1), FirstName: firsts[i%4], SecondName: seconds[i%4]}
		_, err := conn.Exec(ctx, `INSERT INTO users (id, first_name, second_name, birthdate, password_hash)
			VALUES ($1, $2, $3, DATE '1990-01-01', 'x')`, u.ID, u.FirstName, u.SecondName)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	return dsn, users
}

func TestPrepareFromDatabase(t *testing.T) {
	dsn, users := MustUsersDatabase(t, 40)
	ctx := context.Background()

	t.Run("users", func(t *testing.T) {
		ds, err := load.Prepare(ctx, load.PrepareConfig{Target: "http://127.0.0.1:1", DSN: dsn, NeedUsers: true})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]load.User{}
		for _, u := range ds.Users {
			got[u.ID] = u
		}
		if ds.Source != "db" || len(got) != len(users) {
			t.Fatalf("%d distinct users from %s, want all %d from db", len(got), ds.Source, len(users))
		}
		for _, u := range users {
			if got[u.ID] != u {
				t.Errorf("user %s read as %+v, want %+v", u.ID, got[u.ID], u)
			}
		}
	})
	t.Run("database named apart from the DSN", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		other := pgtest.MustServer(t).DSN("") // the postgres database of the same server
		ds, err := load.Prepare(ctx, load.PrepareConfig{Target: "http://127.0.0.1:1", DSN: other, Database: cfg.Database, NeedUsers: true, Sample: 10})
		if err != nil || len(ds.Users) != 10 {
			t.Fatalf("Prepare = %d users, %v; want 10", len(ds.Users), err)
		}
	})
	t.Run("seeded users log in", func(t *testing.T) {
		api := MustFakeAPI(t)
		for _, u := range users {
			api.AddUser(u.ID, u.FirstName, u.SecondName, load.SeedPassword)
		}
		ds, err := load.Prepare(ctx, load.PrepareConfig{Target: api.URL, DSN: dsn, Sessions: 3, NeedUsers: true, NeedSessions: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds.Sessions) != 3 || api.Hits("POST /login") != 3 || api.Hits("POST /user/register") != 0 {
			t.Errorf("%d sessions after %d logins and %d registrations; want 3 logins of seeded users",
				len(ds.Sessions), api.Hits("POST /login"), api.Hits("POST /user/register"))
		}
		m, err := load.ParseMix("get=1,search=1,dialog=1")
		if err != nil {
			t.Fatal(err)
		}
		res := MustRun(t, load.Config{Target: api.URL, Mix: m, Requests: 300, Data: ds})
		if res.Errors != 0 || len(api.Problems()) > 0 {
			t.Errorf("%d errors, problems %v", res.Errors, api.Problems())
		}
	})
	t.Run("other passwords register new users", func(t *testing.T) {
		api := MustFakeAPI(t)
		for _, u := range users {
			api.AddUser(u.ID, u.FirstName, u.SecondName, "another password")
		}
		ds, err := load.Prepare(ctx, load.PrepareConfig{Target: api.URL, DSN: dsn, Sessions: 3, NeedSessions: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds.Sessions) != 3 || api.Hits("POST /user/register") != 3 || len(ds.Users) != len(users) {
			t.Errorf("%d sessions, %d registrations, %d users; want 3 registered sessions and the database's users",
				len(ds.Sessions), api.Hits("POST /user/register"), len(ds.Users))
		}
	})
	t.Run("users table", func(t *testing.T) {
		mustExec(t, ctx, dsn, `CREATE TABLE chosen AS SELECT id, first_name, second_name FROM users ORDER BY id LIMIT 5`)
		ds, err := load.Prepare(ctx, load.PrepareConfig{Target: "http://127.0.0.1:1", DSN: dsn, UsersTable: "chosen", NeedUsers: true})
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(ds.Users, func(a, b load.User) int { return strings.Compare(a.ID, b.ID) })
		if diff := cmp.Diff(users[:5], ds.Users); diff != "" {
			t.Errorf("users read from the chosen table (-want +got):\n%s", diff)
		}
	})
	t.Run("no users table", func(t *testing.T) {
		_, err := load.Prepare(ctx, load.PrepareConfig{Target: "http://127.0.0.1:1", DSN: pgtest.MustDatabase(t), NeedUsers: true})
		if err == nil {
			t.Error("Prepare succeeded without a users table")
		}
	})
}
