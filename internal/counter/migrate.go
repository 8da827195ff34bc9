package counter

import (
	"context"
	"embed"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"socnet/internal/pgmigrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey serializes migrators of the counter database across
// processes ("counter" in ASCII).
const migrationLockKey int64 = 0x636f756e746572

// migrationSet is the counter database's schema history.
var migrationSet = pgmigrate.Set{Files: migrationFiles, Dir: "migrations", Table: "counter_schema_migrations", LockKey: migrationLockKey}

// Migrate brings the counter database to the newest schema on the primary
// among dsns, as the owner of its tables. Each migration runs in its own
// transaction under an advisory lock and is recorded in
// counter_schema_migrations, so concurrent or repeated runs are safe; a
// recorded migration whose text changed is an error.
func Migrate(ctx context.Context, dsns []string, log *slog.Logger) error {
	conn, err := connectPrimary(ctx, dsns)
	if err != nil {
		return fmt.Errorf("migrate counter database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := migrationSet.Apply(ctx, conn, log); err != nil {
		return fmt.Errorf("counter database: %w", err)
	}
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
