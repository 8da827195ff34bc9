package pgtest_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func dbName(tb testing.TB, dsn string) string {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatalf("parse dsn: %v", err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestMustDatabaseGivesDistinctDatabases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var first string
	t.Run("create", func(t *testing.T) {
		a, b := pgtest.MustDatabase(t), pgtest.MustDatabase(t)
		first = dbName(t, a)
		if dbName(t, a) == dbName(t, b) {
			t.Fatalf("both databases are named %q", dbName(t, a))
		}
		connA, err := pgx.Connect(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		defer connA.Close(ctx)
		connB, err := pgx.Connect(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		defer connB.Close(ctx)

		if _, err := connA.Exec(ctx, "CREATE TABLE only_in_a (id int)"); err != nil {
			t.Fatal(err)
		}
		_, err = connB.Exec(ctx, "SELECT * FROM only_in_a")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
			t.Errorf("table of database a seen from database b: err = %v, want SQLSTATE 42P01", err)
		}
		var tables int
		if err := connB.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Errorf("fresh database has %d tables, want 0", tables)
		}
	})

	// The subtest's cleanup has dropped its databases.
	conn, err := pgx.Connect(ctx, pgtest.MustServer(t).DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", first).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after the test that made it ended", first)
	}
}

func TestMustServerIsShared(t *testing.T) {
	a, b := pgtest.MustServer(t), pgtest.MustServer(t)
	if a != b {
		t.Errorf("MustServer returned two nodes (ports %d and %d), want one shared", a.Config().Port, b.Config().Port)
	}
	if !a.Running() {
		t.Errorf("shared server is not running")
	}
}
