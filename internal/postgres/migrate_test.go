package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/pgtest"
	"socnet/internal/postgres"
)

func TestMigrateTwiceIsNoop(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	type applied struct {
		Version int
		Name    string
		At      time.Time
	}
	read := func() []applied {
		rows, err := e.admin.Query(ctx, `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		as, err := pgx.CollectRows(rows, pgx.RowToStructByPos[applied])
		if err != nil {
			t.Fatal(err)
		}
		return as
	}
	before := read()
	if len(before) < 2 || before[0].Name != "social" || before[1].Name != "seed_runs" {
		t.Fatalf("schema_migrations = %+v, want 0001 social and 0002 seed_runs first", before)
	}
	if err := postgres.Migrate(ctx, e.dsn, testLogger(t)); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if diff := cmp.Diff(before, read()); diff != "" {
		t.Errorf("second Migrate changed schema_migrations (-before +after):\n%s", diff)
	}
	var tables []string
	rows, _ := e.admin.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"friends", "messages", "outbox", "posts", "schema_migrations", "seed_runs", "users"} {
		if !slices.Contains(tables, want) {
			t.Errorf("no table %s after Migrate; tables: %v", want, tables)
		}
	}
}

func TestMigrateConcurrently(t *testing.T) {
	dsn := pgtest.MustDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = postgres.Migrate(context.Background(), dsn, testLogger(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}
	// The same history as one migrator writes.
	history := func(e *env) []string {
		rows, err := e.admin.Query(context.Background(),
			`SELECT format('%s %s %s', version, name, checksum) FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		h, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if diff := cmp.Diff(history(mustEnv(t)), history(mustEnvAt(t, dsn))); diff != "" {
		t.Errorf("schema_migrations after concurrent migrators (-alone +concurrent):\n%s", diff)
	}
}

func TestMigrateRefusesChangedHistory(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	if _, err := e.admin.Exec(ctx, `UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1`); err != nil {
		t.Fatal(err)
	}
	err := postgres.Migrate(ctx, e.dsn, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "different content") {
		t.Fatalf("Migrate after an edited migration: %v, want a refusal", err)
	}
}

// roleDSN returns dsn with the user and password replaced.
func roleDSN(t *testing.T, dsn, user, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// mustRoleName returns a role name unique on the shared server and drops
// the role after the test.
func mustRoleName(t *testing.T, e *env) string {
	role := fmt.Sprintf("app_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		var exists bool
		_ = e.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists)
		if !exists {
			return
		}
		ident := pgx.Identifier{role}.Sanitize()
		if _, err := e.admin.Exec(ctx, `DROP OWNED BY `+ident); err != nil {
			t.Errorf("drop owned by %s: %v", role, err)
		}
		if _, err := e.admin.Exec(ctx, `DROP ROLE `+ident); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	return role
}

func TestEnsureAppRole(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	role := mustRoleName(t, e)
	if err := postgres.EnsureAppRole(ctx, e.dsn, role, "first-secret"); err != nil {
		t.Fatalf("EnsureAppRole: %v", err)
	}
	var super, createdb, createrole, login bool
	err := e.admin.QueryRow(ctx, `SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = $1`, role).
		Scan(&super, &createdb, &createrole, &login)
	if err != nil {
		t.Fatal(err)
	}
	if super || createdb || createrole || !login {
		t.Errorf("role attributes super=%v createdb=%v createrole=%v login=%v", super, createdb, createrole, login)
	}
	var stored string
	if err := e.admin.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, role).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$4096:") || strings.Contains(stored, "first-secret") {
		t.Errorf("stored password %q is not a SCRAM verifier", stored)
	}

	app, err := pgx.Connect(ctx, roleDSN(t, e.dsn, role, "first-secret"))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	defer app.Close(ctx)

	// What the API needs works.
	allowed := []string{
		`INSERT INTO users (id, first_name, second_name, birthdate, password_hash)
			VALUES ('0190aaaa-bbbb-7ccc-8ddd-000000000001', 'Анна', 'Иванова', '1990-01-01', 'x')`,
		`UPDATE users SET city = 'Тула' WHERE id = '0190aaaa-bbbb-7ccc-8ddd-000000000001'`,
		`SELECT count(*) FROM friends`,
		`INSERT INTO outbox (aggregate, kind, payload) VALUES ('a', 'k', '{}')`,
		`DELETE FROM outbox`,
		`INSERT INTO feed_outbox (kind, author_id, post_id) VALUES ('post_created', gen_random_uuid(), gen_random_uuid())`,
		`DELETE FROM feed_outbox`,
		`SELECT count(*) FROM feed_celebrities`,
		`DELETE FROM users`,
	}
	for _, q := range allowed {
		if _, err := app.Exec(ctx, q); err != nil {
			t.Errorf("as app role: %s: %v", q, err)
		}
	}
	// Nothing else does.
	denied := []string{
		`CREATE TABLE mine (x int)`,
		`SELECT rolpassword FROM pg_authid`,
		`SELECT count(*) FROM schema_migrations`,
		`INSERT INTO seed_runs (seed, source, target, done) VALUES (1, 'x', 1, 0)`,
		`DROP TABLE posts`,
		`ALTER TABLE users ADD COLUMN x int`,
		`TRUNCATE messages`,
		`CREATE ROLE other`,
		`CREATE DATABASE other`,
	}
	for _, q := range denied {
		_, err := app.Exec(ctx, q)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("as app role: %s: %v, want insufficient_privilege (42501)", q, err)
		}
	}

	// Running it again changes the password and keeps the grants.
	if err := postgres.EnsureAppRole(ctx, e.dsn, role, "second-secret"); err != nil {
		t.Fatalf("second EnsureAppRole: %v", err)
	}
	if c, err := pgx.Connect(ctx, roleDSN(t, e.dsn, role, "first-secret")); err == nil {
		c.Close(ctx)
		t.Error("the old password still works")
	}
	c, err := pgx.Connect(ctx, roleDSN(t, e.dsn, role, "second-secret"))
	if err != nil {
		t.Fatalf("connect with the new password: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SELECT count(*) FROM posts`); err != nil {
		t.Errorf("after the second EnsureAppRole: %v", err)
	}
}

func TestEnsureAppRoleRefuses(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	var admin string
	if err := e.admin.QueryRow(ctx, `SELECT current_user`).Scan(&admin); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, role, password, want string }{
		{"the administrator", admin, "secret", "superuser"},
		{"a reserved name", "pg_app", "secret", "identifier"},
		{"a quoted name", `app"; DROP TABLE users; --`, "secret", "identifier"},
		{"an empty password", "app_nopass", "", "empty password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := postgres.EnsureAppRole(ctx, e.dsn, tt.role, tt.password)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("EnsureAppRole(%q): %v, want an error about %q", tt.role, err, tt.want)
			}
		})
	}
	var super bool
	if err := e.admin.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, admin).Scan(&super); err != nil || !super {
		t.Errorf("administrator %s lost superuser: %v %v", admin, super, err)
	}
}
