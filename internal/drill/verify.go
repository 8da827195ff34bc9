package drill

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// connectTimeout bounds connecting to one node during verification.
const connectTimeout = 5 * time.Second

// replayPoll is how often a replica's replay position is asked for.
const replayPoll = 50 * time.Millisecond

// onEveryNode waits until every replica has replayed the WAL the primary
// had written when it was asked (so that a replica is compared with the
// primary at the same point), then calls read with the index of each node
// that is up and a connection to it. It returns, per node, why it could not be read ("" when it
// was). Without a reachable primary, replicas are read as they are.
func onEveryNode(ctx context.Context, nodes []Node, replayTimeout time.Duration, read func(i int, conn *pgx.Conn) error) []string {
	errs := make([]string, len(nodes))
	target := ""
	for _, n := range nodes {
		if n.Role != RolePrimary {
			continue
		}
		err := withConn(ctx, n.DSN, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target)
		})
		if err != nil {
			target = ""
		}
		break
	}
	for i, n := range nodes {
		if n.Role == RoleDown || n.DSN == "" {
			errs[i] = "the node is down"
			continue
		}
		err := withConn(ctx, n.DSN, func(conn *pgx.Conn) error {
			if n.Role != RolePrimary && target != "" {
				if err := waitReplayed(ctx, conn, target, replayTimeout); err != nil {
					return err
				}
			}
			return read(i, conn)
		})
		if err != nil {
			errs[i] = err.Error()
		}
	}
	return errs
}

// waitReplayed polls the standby behind conn until it has replayed up to
// lsn, for at most timeout.
func waitReplayed(ctx context.Context, conn *pgx.Conn, lsn string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(replayPoll)
	defer t.Stop()
	var at *string
	for {
		var done bool
		err := conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false),
			pg_last_wal_replay_lsn()::text`, lsn).Scan(&done, &at)
		if err == nil && done {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("read replay position: %w", err)
		}
		select {
		case <-ctx.Done():
			pos := "unknown"
			if at != nil {
				pos = *at
			}
			return fmt.Errorf("has not replayed up to the primary's %s within %v (replayed %s)", lsn, timeout, pos)
		case <-t.C:
		}
	}
}

// withConn connects to dsn, runs fn and closes the connection.
func withConn(ctx context.Context, dsn string, fn func(*pgx.Conn) error) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("parse dsn: %w", err)
	}
	cfg.ConnectTimeout = connectTimeout
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return fn(conn)
}

// collectRows reads the run's rows from every node through w.
func collectRows(ctx context.Context, w Writer, nodes []Node, prefix string, replayTimeout time.Duration) []NodeRows {
	out := make([]NodeRows, len(nodes))
	errs := onEveryNode(ctx, nodes, replayTimeout, func(i int, conn *pgx.Conn) error {
		rows, err := w.Tagged(ctx, conn, prefix)
		if err != nil {
			return fmt.Errorf("read tagged rows: %w", err)
		}
		out[i].Rows = rows
		return nil
	})
	for i, n := range nodes {
		out[i].Node, out[i].Role, out[i].Err = n.Name, n.Role, errs[i]
	}
	return out
}

// VerifyWrites reads the rows tagged with prefix from every node of the
// cluster that holds t's writes (t.Verify, else t.Cluster), each replica
// once it has replayed up to the primary, and judges them against the
// attempts of the ledger. The error is for a cluster whose nodes could not
// be listed; nodes that could not be read are in the verdict.
func VerifyWrites(ctx context.Context, t Target, prefix string, attempts []Attempt, replayTimeout time.Duration) (Verdict, error) {
	nodes, err := t.verifyCluster().Nodes(ctx)
	if err != nil {
		return Verdict{}, fmt.Errorf("verify: list nodes: %w", err)
	}
	return Judge(attempts, collectRows(ctx, t.Writer, nodes, prefix, replayTimeout)), nil
}
