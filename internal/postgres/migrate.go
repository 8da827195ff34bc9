package postgres

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"socnet/internal/pgrole"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the advisory lock that serializes migrators and role
// changes of socnet across processes ("socnet" in ASCII).
const migrationLockKey int64 = 0x736f636e6574

// A migration is one embedded file, migrations/NNNN_name.sql.
type migration struct {
	version  int
	name     string
	sql      string
	checksum string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name is not NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		v, _ := strconv.Atoi(m[1])
		sum := sha256.Sum256(b)
		ms = append(ms, migration{version: v, name: m[2], sql: string(b), checksum: hex.EncodeToString(sum[:])})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("two migrations with version %04d", ms[i].version)
		}
	}
	return ms, nil
}

// Migrate brings the database of adminDSN to the newest schema. It must run
// as the owner of the tables (the administrator), never as the application
// role. Each pending migration runs in its own transaction that holds an
// advisory lock, re-checks that no other migrator applied it meanwhile, and
// records it in schema_migrations; applying is therefore idempotent and safe
// to start from several processes at once. A recorded migration whose
// embedded text has changed is an error: schema history is never rewritten.
// A nil log discards the progress lines.
func Migrate(ctx context.Context, adminDSN string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			checksum   text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}

	applied := 0
	for _, m := range ms {
		done, err := applyMigration(ctx, conn, m)
		if err != nil {
			return fmt.Errorf("migrate: %04d_%s: %w", m.version, m.name, err)
		}
		if done {
			applied++
			log.Info("migration applied", "version", m.version, "name", m.name)
		}
	}
	log.Info("schema up to date", "applied", applied, "known", len(ms))
	return nil
}

// applyMigration runs m unless it is recorded, and reports whether it ran.
func applyMigration(ctx context.Context, conn *pgx.Conn, m migration) (bool, error) {
	ran := false
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return err
		}
		var checksum string
		err := tx.QueryRow(ctx, `SELECT checksum FROM schema_migrations WHERE version = $1`, m.version).Scan(&checksum)
		switch {
		case err == nil && checksum == m.checksum:
			return nil
		case err == nil:
			return errors.New("applied with different content; migrations are append-only, add a new file instead")
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		// No arguments: pgx sends the file with the simple protocol, which
		// allows several statements.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
			m.version, m.name, m.checksum)
		ran = err == nil
		return err
	})
	return ran, err
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
		stmts = append(stmts, fmt.Sprintf(`GRANT USAGE ON SEQUENCE public.outbox_id_seq TO %s`, ident))
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
