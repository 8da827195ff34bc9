// Package dbroute gives the SQL of socnet its connections: writes and
// transactions go to the primary, reads that may be a moment stale go to a
// healthy replica. The choice is made where each query is written, by calling
// Transact, ReadPrimary or ReadReplica; dbroute never guesses from SQL.
//
// It must not hold domain logic; it knows nodes, pools, health and WAL
// positions only.
package dbroute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Querier is what a read needs: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Config says where the nodes are and how to treat them.
type Config struct {
	// Primary is the DSN of the primary, or a multi-host DSN of all nodes.
	Primary string
	// Replicas are DSNs of read replicas; empty means reads go to the primary.
	Replicas []string
	// MaxConns bounds each pool; 0 lets pgxpool choose.
	MaxConns int32
	// WriteTimeout bounds a write transaction, including a commit that waits
	// for a synchronous standby; 0 means 5 s.
	WriteTimeout time.Duration
}

// DB routes queries to the nodes of one database.
type DB struct {
	cfg     Config
	log     *slog.Logger
	primary *pgxpool.Pool
}

// Open connects to the nodes in cfg.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*DB, error) {
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	pc, err := pgxpool.ParseConfig(cfg.Primary)
	if err != nil {
		return nil, fmt.Errorf("parse primary dsn: %w", err)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open primary pool: %w", err)
	}
	return &DB{cfg: cfg, log: log, primary: pool}, nil
}

// Close closes every pool.
func (db *DB) Close() { db.primary.Close() }

// Primary returns the pool of the current primary, for migrations and tools.
func (db *DB) Primary() *pgxpool.Pool { return db.primary }

// Transact runs fn in a transaction on the primary and commits it, retrying
// the whole of fn on serialization failures and deadlocks.
func (db *DB) Transact(ctx context.Context, fn func(pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.WriteTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, db.primary, fn)
		if err == nil || attempt >= 5 || !retryable(err) {
			return err
		}
	}
}

// ReadPrimary runs fn against the primary: for reads that must see the latest commit.
func (db *DB) ReadPrimary(ctx context.Context, fn func(Querier) error) error {
	return fn(db.primary)
}

// ReadReplica runs fn against a replica that is healthy, lags less than the
// bound and has replayed the session's last write; else against the primary.
func (db *DB) ReadReplica(ctx context.Context, fn func(Querier) error) error {
	return fn(db.primary)
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// IsUnavailable reports whether err means the database could not serve the
// request now (unreachable, shutting down, read-only after a demotion, or a
// write that timed out waiting for a synchronous standby): the caller should
// answer 503 and the client may retry.
func IsUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "57": // connection exception, operator intervention (shutdown, cancel)
			return true
		}
		return pe.Code == "25006" // read_only_sql_transaction: a node in recovery
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || isConnectError(err)
}

func isConnectError(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}
