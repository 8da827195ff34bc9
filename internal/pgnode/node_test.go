package pgnode_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testContext returns a context that ends with the test or after d.
func testContext(tb testing.TB, d time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// mustConnect opens a connection to dsn that is closed in tb.Cleanup.
func mustConnect(tb testing.TB, ctx context.Context, dsn string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// mustExec runs sql on dsn in a fresh connection.
func mustExec(tb testing.TB, ctx context.Context, dsn, sql string, args ...any) {
	tb.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// queryInts returns the single int column of sql on dsn.
func queryInts(tb testing.TB, ctx context.Context, dsn, sql string) []int {
	tb.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return got
}

func TestNodeBasics(t *testing.T) {
	node := pgtest.MustNode(t, "basic", nil)
	ctx := testContext(t, 60*time.Second)

	t.Run("select 1", func(t *testing.T) {
		if diff := cmp.Diff([]int{1}, queryInts(t, ctx, node.DSN(""), "SELECT 1")); diff != "" {
			t.Errorf("SELECT 1 (-want +got):\n%s", diff)
		}
	})

	t.Run("start on a running node is a no-op", func(t *testing.T) {
		pid := node.Pid()
		if pid == 0 || !node.Running() {
			t.Fatalf("Pid() = %d, Running() = %v; want a running node", pid, node.Running())
		}
		if err := node.Start(ctx); err != nil {
			t.Fatalf("second Start: %v", err)
		}
		if got := node.Pid(); got != pid {
			t.Errorf("Pid() after second Start = %d, want %d", got, pid)
		}
		select {
		case <-node.Exited():
			t.Errorf("Exited() is closed while the node runs")
		default:
		}
	})

	t.Run("settings", func(t *testing.T) {
		conn := mustConnect(t, ctx, node.DSN(""))
		for _, tc := range []struct{ name, want string }{
			{"data_checksums", "on"},
			{"shared_buffers", "32MB"},
			{"unix_socket_directories", ""},
			{"listen_addresses", "127.0.0.1"},
			{"password_encryption", "scram-sha-256"},
			{"server_encoding", "UTF8"},
		} {
			var got string
			if err := conn.QueryRow(ctx, "SELECT current_setting($1)", tc.name).Scan(&got); err != nil {
				t.Fatalf("current_setting(%s): %v", tc.name, err)
			}
			if got != tc.want {
				t.Errorf("%s = %q, want %q", tc.name, got, tc.want)
			}
		}
	})

	t.Run("pg_hba.conf has no trust line", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(node.Config().DataDir, "pg_hba.conf"))
		if err != nil {
			t.Fatal(err)
		}
		var rules []string
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
				rules = append(rules, strings.Join(f, " "))
			}
		}
		want := []string{
			"host all all 127.0.0.1/32 scram-sha-256",
			"host all all ::1/128 scram-sha-256",
			"host replication all 127.0.0.1/32 scram-sha-256",
			"host replication all ::1/128 scram-sha-256",
		}
		if diff := cmp.Diff(want, rules); diff != "" {
			t.Errorf("pg_hba.conf rules (-want +got):\n%s", diff)
		}
		conn := mustConnect(t, ctx, node.DSN(""))
		var trust int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method <> 'scram-sha-256' OR error IS NOT NULL").Scan(&trust); err != nil {
			t.Fatal(err)
		}
		if trust != 0 {
			t.Errorf("pg_hba_file_rules has %d rules that are not scram-sha-256", trust)
		}
	})

	t.Run("password is required", func(t *testing.T) {
		cfg := node.Config()
		for _, tc := range []struct{ name, password string }{
			{"wrong password", "not-" + cfg.Password},
			{"empty password", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				bad := pgnode.New(pgnode.Config{Name: "bad", Host: cfg.Host, Port: cfg.Port, Password: tc.password})
				dsn := bad.DSN("")
				if tc.password == "" {
					dsn = strings.Replace(dsn, ":"+bad.Config().Password+"@", "@", 1)
				}
				conn, err := pgx.Connect(ctx, dsn)
				if err == nil {
					conn.Close(ctx)
					t.Fatal("connected without the right password")
				}
				var pgErr *pgconn.PgError
				if tc.password != "" && (!errors.As(err, &pgErr) || pgErr.Code != "28P01") {
					t.Errorf("error = %v, want SQLSTATE 28P01 (invalid_password)", err)
				}
			})
		}
	})

	t.Run("initdb refuses an existing cluster", func(t *testing.T) {
		err := node.InitDB(ctx)
		if err == nil || !strings.Contains(err.Error(), "already holds a cluster") {
			t.Errorf("InitDB on an existing cluster: %v, want an 'already holds a cluster' error", err)
		}
	})
}
