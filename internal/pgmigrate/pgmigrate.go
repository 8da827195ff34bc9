// Package pgmigrate applies a database's embedded schema migrations: files
// named NNNN_name.sql, in version order, each in its own transaction under an
// advisory lock, recorded with their checksum. Applying is idempotent and
// safe from several processes at once, and history is append-only: a
// recorded migration whose text changed is an error.
package pgmigrate

import (
	"context"
	"crypto/sha256"
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

// Set is the migrations of one database.
type Set struct {
	// Files holds the migrations in Dir, named NNNN_name.sql.
	Files fs.FS
	Dir   string
	// Table records the applied migrations (created when missing).
	Table string
	// LockKey is the advisory lock that serializes migrators.
	LockKey int64
}

// Migration is one file of a Set.
type Migration struct {
	Version  int
	Name     string
	SQL      string
	Checksum string
}

var fileName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)
var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Load returns the set's migrations in version order.
func (s Set) Load() ([]Migration, error) {
	entries, err := fs.ReadDir(s.Files, s.Dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name is not NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(s.Files, path.Join(s.Dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		v, _ := strconv.Atoi(m[1])
		sum := sha256.Sum256(b)
		ms = append(ms, Migration{Version: v, Name: m[2], SQL: string(b), Checksum: hex.EncodeToString(sum[:])})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("two migrations with version %04d", ms[i].Version)
		}
	}
	return ms, nil
}

// Apply runs the pending migrations on conn, which must be the primary and
// connected as the owner of the tables. It returns how many it ran.
func (s Set) Apply(ctx context.Context, conn *pgx.Conn, log *slog.Logger) (int, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !tableName.MatchString(s.Table) {
		return 0, fmt.Errorf("migrate: bad table name %q", s.Table)
	}
	ms, err := s.Load()
	if err != nil {
		return 0, err
	}
	table := pgx.Identifier{s.Table}.Sanitize()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, s.LockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			checksum   text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("migrate: create %s: %w", s.Table, err)
	}
	applied := 0
	for _, m := range ms {
		ran, err := s.apply(ctx, conn, table, m)
		if err != nil {
			return applied, fmt.Errorf("migrate: %04d_%s: %w", m.Version, m.Name, err)
		}
		if ran {
			applied++
			log.Info("migration applied", "table", s.Table, "version", m.Version, "name", m.Name)
		}
	}
	log.Info("schema up to date", "table", s.Table, "applied", applied, "known", len(ms))
	return applied, nil
}

// apply runs m unless it is recorded, and reports whether it ran.
func (s Set) apply(ctx context.Context, conn *pgx.Conn, table string, m Migration) (bool, error) {
	ran := false
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, s.LockKey); err != nil {
			return err
		}
		var checksum string
		err := tx.QueryRow(ctx, `SELECT checksum FROM `+table+` WHERE version = $1`, m.Version).Scan(&checksum)
		switch {
		case err == nil && checksum == m.Checksum:
			return nil
		case err == nil:
			return errors.New("applied with different content; migrations are append-only, add a new file instead")
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		// No arguments: pgx sends the file with the simple protocol, which
		// allows several statements.
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+table+` (version, name, checksum) VALUES ($1, $2, $3)`,
			m.Version, m.Name, m.Checksum)
		ran = err == nil
		return err
	})
	return ran, err
}
