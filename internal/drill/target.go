package drill

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/pgnode"
	"socnet/internal/stack"
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
	// AssignedRole is the role the engine gives the node, which may run
	// ahead of Role (a leader not yet promoted).
	AssignedRole string
	// SyncState is the node's sync_state as a standby of the primary; ""
	// when it does not stream.
	SyncState string
	// DSN connects to the database the writes go to, with rights to read
	// WAL positions.
	DSN string
	Pid int
	// AgentPid is the pid of the engine's agent of the node (Patroni's),
	// 0 under an engine without one.
	AgentPid int
}

// Cluster is the database cluster a drill breaks: it lists the nodes, kills
// one, and waits for the engine to repair what the kill broke.
type Cluster interface {
	// Name names the cluster in reports.
	Name() string
	// Engine names what runs the cluster, as the status says: "socnet",
	// "patroni"; "" when the status does not say.
	Engine(ctx context.Context) (string, error)
	// Nodes lists every node of the cluster with its current role.
	Nodes(ctx context.Context) ([]Node, error)
	// Kill sends SIGKILL to the node's server and returns when it was sent.
	Kill(ctx context.Context, node string) (time.Time, error)
	// KillHost sends SIGKILL to the node's server and to its agent at once
	// (FaultHost), and returns when it was sent and what was killed.
	KillHost(ctx context.Context, node string) (time.Time, string, error)
	// WaitWritable waits until a node accepts writes after old was killed
	// at killed: another node promoted, or old itself restarted in place.
	// It returns the node and when it first answered as a primary.
	WaitWritable(ctx context.Context, old string, killed time.Time) (node string, at time.Time, err error)
	// FailoverRecord waits until the cluster's failover history records
	// the promotion of node after old was killed at killed, with its
	// promotion time, and returns the record.
	FailoverRecord(ctx context.Context, old, node string, killed time.Time) (FailoverStatus, error)
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
		node := Node{Name: n.Name, Role: n.Role, AssignedRole: n.AssignedRole, SyncState: n.SyncState, DSN: dsn, Pid: n.Pid}
		if n.AgentPid != nil {
			node.AgentPid = *n.AgentPid
		}
		nodes = append(nodes, node)
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

// Engine returns the status' engine; a status without one is from a stack
// that had the socnet engine only.
func (s *StackCluster) Engine(ctx context.Context) (string, error) {
	st, err := s.Status(ctx)
	if err != nil {
		return "", err
	}
	if st.Engine == "" {
		return stack.EngineSocnet, nil
	}
	return st.Engine, nil
}

// KillHost SIGKILLs the node's postmaster, its children and the node's
// agent at once (pgnode.KillHost). A node without an agent (the socnet
// engine) loses its postmaster and children only: its supervisor runs in
// `socnet up` for every node, not on the node's machine.
func (s *StackCluster) KillHost(ctx context.Context, node string) (time.Time, string, error) {
	c, err := s.cluster(ctx)
	if err != nil {
		return time.Time{}, "", err
	}
	n, ok := c.Node(node)
	if !ok {
		return time.Time{}, "", fmt.Errorf("kill host %s: no such node in cluster %s", node, s.Cluster)
	}
	pm, agent := n.Pid, 0
	if n.AgentPid != nil {
		agent = *n.AgentPid
	}
	at, err := pgnode.KillHost(pm, agent, 10*time.Second)
	if err != nil {
		return at, "", fmt.Errorf("kill host %s: %w", node, err)
	}
	var parts []string
	if pm != 0 {
		parts = append(parts, fmt.Sprintf("the postmaster %d and its children", pm))
	}
	if agent != 0 {
		parts = append(parts, fmt.Sprintf("the agent %d and its children", agent))
	}
	return at, "SIGKILL to " + strings.Join(parts, " and ") + " at once", nil
}

// writablePoll is how often WaitWritable asks each node whether it is a
// primary.
const writablePoll = 50 * time.Millisecond

// WaitWritable asks every node of the cluster (their DSNs from the status
// of the moment) every 50 ms whether it runs as a primary, on a connection
// made after the kill, and returns the first that does. That is what a
// client sees, whatever the engine and whatever its status says.
func (s *StackCluster) WaitWritable(ctx context.Context, old string, killed time.Time) (string, time.Time, error) {
	nodes, err := s.Nodes(ctx)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("wait for a writable primary of %s: %w", s.Cluster, err)
	}
	node, at, err := waitWritable(ctx, nodes, writablePoll)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("wait for a writable primary of %s: %w", s.Cluster, err)
	}
	return node, at, nil
}

// waitWritable polls every node with a DSN, each on a connection of its own
// kept between polls, until one answers pg_is_in_recovery() = false. When
// ctx ends first, the error names each node's last failure.
func waitWritable(ctx context.Context, nodes []Node, every time.Duration) (string, time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type found struct {
		node string
		at   time.Time
	}
	out := make(chan found, len(nodes))
	var mu sync.Mutex
	lastErr := map[string]string{}
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.DSN == "" {
			continue
		}
		wg.Go(func() {
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					_ = conn.Close(context.Background())
				}
			}()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				var err error
				if conn == nil {
					cctx, ccancel := context.WithTimeout(ctx, time.Second)
					conn, err = pgx.Connect(cctx, n.DSN)
					ccancel()
				}
				if conn != nil {
					var inRecovery bool
					qctx, qcancel := context.WithTimeout(ctx, time.Second)
					err = conn.QueryRow(qctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery)
					qcancel()
					switch {
					case err != nil:
						_ = conn.Close(context.Background())
						conn = nil
					case !inRecovery:
						out <- found{n.Name, time.Now()}
						return
					default:
						err = errors.New("in recovery")
					}
				}
				if err != nil && ctx.Err() == nil {
					mu.Lock()
					lastErr[n.Name] = err.Error()
					mu.Unlock()
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	go func() { wg.Wait(); close(out) }()
	select {
	case f, ok := <-out:
		if ok {
			return f.node, f.at, nil
		}
		return "", time.Time{}, errors.New("no node has a DSN")
	case <-ctx.Done():
		cancel()
		wg.Wait()
		var why []string
		for _, n := range nodes {
			if e, ok := lastErr[n.Name]; ok {
				why = append(why, n.Name+": "+e)
			}
		}
		return "", time.Time{}, fmt.Errorf("%w (last answers: %s)", ctx.Err(), strings.Join(why, "; "))
	}
}

// FailoverRecord polls the status until its failover history has an entry
// from old to node declared after killed, with its promotion time (the
// socnet engine writes the entry when the new primary is installed and its
// promotion time once the others follow it).
func (s *StackCluster) FailoverRecord(ctx context.Context, old, node string, killed time.Time) (FailoverStatus, error) {
	var rec FailoverStatus
	err := s.poll(ctx, func(c ClusterStatus) bool {
		for _, f := range c.Failovers {
			if f.NewPrimary == node && f.OldPrimary == old && !f.At.Before(killed) {
				rec = f
				return f.PromotionMS > 0
			}
		}
		return false
	})
	if err != nil {
		return FailoverStatus{}, fmt.Errorf("wait for the failover history of %s: %w", s.Cluster, err)
	}
	return rec, nil
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
