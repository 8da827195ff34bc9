package drill

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/pgnode"
)

// Writer performs the writes of a drill and finds them again.
type Writer interface {
	// Describe says in a few words what one write is, for the report
	// ("POST /post/create through the API").
	Describe() string
	// Write performs one logical write that stores tag, once: it never
	// retries, so that a tag found twice is the system's duplicate.
	Write(ctx context.Context, tag string) WriteResult
	// Tagged returns every row on the node behind conn whose tag starts
	// with prefix.
	Tagged(ctx context.Context, conn *pgx.Conn, prefix string) ([]Row, error)
}

// Node is one database node as a drill sees it.
type Node struct {
	Name string
	// Role is RolePrimary, RoleReplica or RoleDown.
	Role string
	// SyncState is the node's sync_state as a standby of the primary; ""
	// when it does not stream.
	SyncState string
	// DSN connects to the database the writes go to, with rights to read
	// WAL positions.
	DSN string
	Pid int
}

// Cluster is the database cluster a drill breaks: it lists the nodes, kills
// one, and waits for the supervisor to repair what the kill broke.
type Cluster interface {
	// Name names the cluster in reports.
	Name() string
	// Nodes lists every node of the cluster with its current role.
	Nodes(ctx context.Context) ([]Node, error)
	// Kill sends SIGKILL to the node's server and returns when it was sent.
	Kill(ctx context.Context, node string) (time.Time, error)
	// WaitPromoted waits until a node other than old runs as the primary,
	// and returns it and when it became the primary (killed is when old was
	// killed; detail says where the time comes from).
	WaitPromoted(ctx context.Context, old string, killed time.Time) (node string, at time.Time, detail string, err error)
	// WaitStreaming waits until the node runs as a replica that streams
	// from the primary, and returns when that was first seen.
	WaitStreaming(ctx context.Context, node string) (time.Time, error)
}

// Target is what a drill runs against.
type Target struct {
	Writer Writer
	// Cluster is the cluster the drill breaks.
	Cluster Cluster
	// Verify is the cluster that holds the writes when it is not Cluster:
	// dialog messages live in the main database while a drill breaks the
	// counter cluster. nil: Cluster.
	Verify Cluster
	// Counters, when set, checks the unread counters of the writes after
	// they are verified (the writer is Counters.Dialogs).
	Counters *CounterCheck
	// Sessions, when set, runs next to the writers as the run's history
	// workload through the API; the run checks its history.
	Sessions *Sessions
}

// verifyCluster returns the cluster that holds the writes.
func (t Target) verifyCluster() Cluster {
	if t.Verify != nil {
		return t.Verify
	}
	return t.Cluster
}

// StackCluster is a Cluster of a stack that `socnet up` runs, seen through
// `socnet status`.
type StackCluster struct {
	// Status returns the stack's status document.
	Status StatusFunc
	// Cluster names the cluster: "main" or "counter".
	Cluster string
	// Database, when set, replaces the database of the status' DSNs: the
	// one the writes go to.
	Database string
	// Poll is how often the waits ask for the status; default 200 ms.
	Poll time.Duration
}

// Name returns the cluster's name.
func (s *StackCluster) Name() string { return s.Cluster }

func (s *StackCluster) cluster(ctx context.Context) (ClusterStatus, error) {
	st, err := s.Status(ctx)
	if err != nil {
		return ClusterStatus{}, err
	}
	c, ok := st.Cluster(s.Cluster)
	if !ok {
		return ClusterStatus{}, fmt.Errorf("status lists no cluster %q", s.Cluster)
	}
	return c, nil
}

// Nodes lists the cluster's nodes from the status.
func (s *StackCluster) Nodes(ctx context.Context) ([]Node, error) {
	c, err := s.cluster(ctx)
	if err != nil {
		return nil, err
	}
	nodes := make([]Node, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		dsn := n.DSN
		if s.Database != "" && dsn != "" {
			if dsn, err = WithDatabase(dsn, s.Database); err != nil {
				return nil, fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
		nodes = append(nodes, Node{Name: n.Name, Role: n.Role, SyncState: n.SyncState, DSN: dsn, Pid: n.Pid})
	}
	return nodes, nil
}

// Kill SIGKILLs the node's postmaster and its children (pgnode.KillServer).
func (s *StackCluster) Kill(ctx context.Context, node string) (time.Time, error) {
	c, err := s.cluster(ctx)
	if err != nil {
		return time.Time{}, err
	}
	n, ok := c.Node(node)
	switch {
	case !ok:
		return time.Time{}, fmt.Errorf("kill %s: no such node in cluster %s", node, s.Cluster)
	case n.Role == RoleDown || n.Pid <= 0:
		return time.Time{}, fmt.Errorf("kill %s: the node is down", node)
	}
	return pgnode.KillServer(n.Pid, 10*time.Second)
}

// historyWait bounds how long WaitPromoted waits, once it sees the new
// primary, for the failover history to record the promotion: the record is
// written after the other replicas are re-pointed.
const historyWait = 10 * time.Second

// WaitPromoted polls the status until a node other than old is the
// primary. The promotion time comes from the cluster's failover history
// when the status carries a matching entry within historyWait, else it is
// when the poll first saw the new primary.
func (s *StackCluster) WaitPromoted(ctx context.Context, old string, killed time.Time) (string, time.Time, string, error) {
	var found string
	var seen time.Time
	err := s.poll(ctx, func(c ClusterStatus) bool {
		p, ok := c.PrimaryNode()
		if !ok || p.Name == old {
			return false
		}
		found, seen = p.Name, time.Now()
		return true
	})
	if err != nil {
		return "", time.Time{}, "", fmt.Errorf("wait for a new primary of %s: %w", s.Cluster, err)
	}
	// The record appears when the new primary is installed and gets its
	// promotion time when the others follow it.
	var rec FailoverStatus
	hctx, cancel := context.WithTimeout(ctx, historyWait)
	defer cancel()
	err = s.poll(hctx, func(c ClusterStatus) bool {
		for _, f := range c.Failovers {
			if f.NewPrimary == found && f.OldPrimary == old && !f.At.Before(killed) {
				rec = f
				return f.PromotionMS > 0
			}
		}
		return false
	})
	if err != nil {
		return found, seen, "first seen in status; no failover history", nil
	}
	return found, rec.Promoted(), "failover history " + rec.ID, nil
}

// WaitStreaming polls the status until the node is a replica with a
// sync_state, which it has only while it streams from the primary.
func (s *StackCluster) WaitStreaming(ctx context.Context, node string) (time.Time, error) {
	var at time.Time
	err := s.poll(ctx, func(c ClusterStatus) bool {
		n, ok := c.Node(node)
		if ok && n.Role == RoleReplica && n.SyncState != "" {
			at = time.Now()
			return true
		}
		return false
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("wait for %s to stream: %w", node, err)
	}
	return at, nil
}

// poll asks for the status every Poll until done says so. Errors of single
// polls are not fatal: the stack may be restarting; the last one is
// returned when ctx ends.
func (s *StackCluster) poll(ctx context.Context, done func(ClusterStatus) bool) error {
	every := s.Poll
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr error
	for {
		c, err := s.cluster(ctx)
		if err == nil && done(c) {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%w (last status error: %w)", ctx.Err(), lastErr)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// WithDatabase returns dsn (a URL or keyword/value form) connecting to
// database db instead.
func WithDatabase(dsn, db string) (string, error) {
	var out string
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse dsn: %w", err)
		}
		u.Path, u.RawPath = "/"+db, ""
		out = u.String()
	} else {
		out = dsn + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"
	}
	cfg, err := pgconn.ParseConfig(out)
	if err != nil {
		return "", fmt.Errorf("parse dsn: %w", err)
	}
	if cfg.Database != db {
		return "", fmt.Errorf("dsn names database %q after setting %q", cfg.Database, db)
	}
	return out, nil
}
