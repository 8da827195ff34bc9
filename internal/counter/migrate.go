package counter

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

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey serializes migrators of the counter database across
// processes ("counter" in ASCII).
const migrationLockKey int64 = 0x636f756e746572

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

type migration struct {
	version  int
	name     string
	sql      string
	checksum string
}

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
	return ms, nil
}

// Migrate brings the counter database to the newest schema on the primary
// among dsns, as the owner of its tables. Each migration runs in its own
// transaction under an advisory lock and is recorded in
// counter_schema_migrations, so concurrent or repeated runs are safe; a
// recorded migration whose text changed is an error.
func Migrate(ctx context.Context, dsns []string, log *slog.Logger) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := connectPrimary(ctx, dsns)
	if err != nil {
		return fmt.Errorf("migrate counter database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	applied := 0
	for _, m := range ms {
		ran := false
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS counter_schema_migrations (
				version    integer     PRIMARY KEY,
				name       text        NOT NULL,
				checksum   text        NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now())`)
			if err != nil {
				return err
			}
			var checksum string
			err = tx.QueryRow(ctx, `SELECT checksum FROM counter_schema_migrations WHERE version = $1`, m.version).Scan(&checksum)
			switch {
			case err == nil && checksum == m.checksum:
				return nil
			case err == nil:
				return errors.New("applied with different content; migrations are append-only")
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO counter_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
				m.version, m.name, m.checksum)
			ran = err == nil
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate counter database: %04d_%s: %w", m.version, m.name, err)
		}
		if ran {
			applied++
			log.Info("counter migration applied", "version", m.version, "name", m.name)
		}
	}
	log.Info("counter schema up to date", "applied", applied, "known", len(ms))
	return nil
}

// appTables are the tables counterd reads and writes.
var appTables = []string{"counters", "inbox"}

// GrantAppRole lets an existing role run counterd: SELECT, INSERT, UPDATE
// and DELETE on the counter tables and USAGE on schema public, on the
// primary among dsns (as an administrator, after Migrate). Granting twice is
// a no-op.
func GrantAppRole(ctx context.Context, dsns []string, role string) error {
	conn, err := connectPrimary(ctx, dsns)
	if err != nil {
		return fmt.Errorf("grant counter tables to %s: %w", role, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{role}.Sanitize()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `GRANT USAGE ON SCHEMA public TO `+ident); err != nil {
			return err
		}
		for _, t := range appTables {
			if _, err := tx.Exec(ctx, `GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE `+pgx.Identifier{t}.Sanitize()+` TO `+ident); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("grant counter tables to %s: %w", role, err)
	}
	return nil
}
