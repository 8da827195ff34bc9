package postgres

import (
	"context"
	"embed"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"socnet/internal/pgmigrate"
	"socnet/internal/pgrole"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the advisory lock that serializes migrators and role
// changes of socnet across processes ("socnet" in ASCII).
const migrationLockKey int64 = 0x736f636e6574

// migrationSet is the social database's schema history.
var migrationSet = pgmigrate.Set{Files: migrationFiles, Dir: "migrations", Table: "schema_migrations", LockKey: migrationLockKey}

// Migrate brings the database of adminDSN to the newest schema. It must run
// as the owner of the tables (the administrator), never as the application
// role. Each pending migration runs in its own transaction that holds an
// advisory lock, re-checks that no other migrator applied it meanwhile, and
// records it in schema_migrations; applying is therefore idempotent and safe
// to start from several processes at once. A recorded migration whose
// embedded text has changed is an error: schema history is never rewritten.
// A nil log discards the progress lines.
func Migrate(ctx context.Context, adminDSN string, log *slog.Logger) error {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = migrationSet.Apply(ctx, conn, log)
	return err
}

// appTables are the tables the application role may read and write; the
// ones marked optional get the grants only when a migration made them.
// schema_migrations, seed_runs and dialog_unread (written by a SECURITY
// DEFINER trigger) stay with the administrator.
var appTables = []struct {
	name     string
	optional bool
}{
	{"users", false}, {"friends", false}, {"posts", false}, {"messages", false}, {"outbox", false},
	{"outbox_dead_letters", true}, // the outbox relay's give-ups (0003_unread_counter)
	// The feed's events and its celebrities (0010_feed_outbox): the API
	// writes events and reads celebrities when it rebuilds a timeline.
	{"feed_outbox", false}, {"feed_celebrities", false},
}

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// EnsureAppRole creates or updates the LOGIN role that socnet serve connects
// as: NOSUPERUSER NOCREATEDB NOCREATEROLE, with the password (stored as a
// SCRAM-SHA-256 verifier computed here, so the clear text never reaches the
// server or its logs), CONNECT on the database of adminDSN, USAGE on schema
// public, SELECT/INSERT/UPDATE/DELETE on the application tables and USAGE on
// their sequences, and nothing else. Run it after Migrate. It refuses to
// touch a superuser or the role it connects as.
func EnsureAppRole(ctx context.Context, adminDSN, role, password string) error {
	if !roleName.MatchString(role) || strings.HasPrefix(role, "pg_") {
		return fmt.Errorf("app role %q: want a lower-case identifier not starting with pg_", role)
	}
	if password == "" {
		return fmt.Errorf("app role %s: empty password", role)
	}
	verifier, err := pgrole.SCRAMVerifier(password)
	if err != nil {
		return fmt.Errorf("app role %s: %w", role, err)
	}
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("app role %s: connect: %w", role, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	ident := pgx.Identifier{role}.Sanitize()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return err
		}
		var exists, super bool
		var self, database string
		err := tx.QueryRow(ctx, `SELECT current_user, current_database(),
				EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
				EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolsuper)`, role).Scan(&self, &database, &exists, &super)
		if err != nil {
			return err
		}
		if super || self == role {
			return fmt.Errorf("role %s is a superuser or the administrator; refusing to make it the app role", role)
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		// The verifier is base64 and '$:' only, so quoting it is plain.
		stmts := []string{
			fmt.Sprintf(`%s ROLE %s WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD '%s'`,
				verb, ident, verifier),
			fmt.Sprintf(`GRANT CONNECT ON DATABASE %s TO %s`, pgx.Identifier{database}.Sanitize(), ident),
			fmt.Sprintf(`GRANT USAGE ON SCHEMA public TO %s`, ident),
		}
		for _, t := range appTables {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, "public."+t.name).Scan(&exists); err != nil {
				return err
			}
			if !exists && !t.optional {
				return fmt.Errorf("no table %s: run Migrate first", t.name)
			}
			if exists {
				stmts = append(stmts, fmt.Sprintf(`GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO %s`,
					pgx.Identifier{"public", t.name}.Sanitize(), ident))
			}
		}
		for _, seq := range []string{"outbox_id_seq", "feed_outbox_id_seq"} {
			stmts = append(stmts, fmt.Sprintf(`GRANT USAGE ON SEQUENCE public.%s TO %s`, seq, ident))
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				// The statement holds the verifier; name only its verb.
				return fmt.Errorf("%s: %w", strings.Fields(s)[0], err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("app role %s: %w", role, err)
	}
	return nil
}
