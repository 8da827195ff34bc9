package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// replRow is one row of a primary's pg_stat_replication.
type replRow struct {
	App       string
	State     string // streaming, catchup, startup, backup, stopping
	SyncState string
	Flush     LSN
	Replay    LSN
	ReplayLag float64 // seconds
}

// probe is one answer of a node.
type probe struct {
	OK         bool
	Err        error
	At         time.Time
	InRecovery bool
	Receive    LSN
	Replay     LSN
	Flush      LSN // of a primary
	Timeline   int
	Repl       map[string]replRow // of a primary, by application name
}

// primaryView is the supervisor's last observation of a healthy primary:
// the knowledge Decide needs about who acknowledged what.
type primaryView struct {
	Node     string
	At       time.Time
	Flush    LSN
	Timeline int
	Repl     map[string]replRow
}

// ackedLSN is the furthest flush LSN of a standby that acknowledges commits.
func (v *primaryView) ackedLSN() LSN {
	var l LSN
	for _, r := range v.Repl {
		if r.State == "streaming" && (r.SyncState == SyncStateSync || r.SyncState == SyncStateQuorum) {
			l = max(l, r.Flush)
		}
	}
	return l
}

// nodeQuery asks a node for its role, WAL positions and timeline. The
// timeline is the newest one the node has WAL segments or a history file
// for: a standby that followed a promotion has the new history file even
// before its first restartpoint updates pg_control.
const nodeQuery = `SELECT pg_is_in_recovery(),
	coalesce(pg_last_wal_receive_lsn()::text, ''),
	coalesce(pg_last_wal_replay_lsn()::text, ''),
	CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_flush_lsn()::text END,
	(SELECT coalesce(max(('x' || substr(name, 1, 8))::bit(32)::int), 0) FROM pg_ls_waldir()
	  WHERE name ~ '^[0-9A-F]{24}$' OR name ~ '^[0-9A-F]{8}\.history$')`

const replicationQuery = `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
	coalesce(flush_lsn::text, ''), coalesce(replay_lsn::text, ''),
	coalesce(extract(epoch FROM replay_lag)::float8, 0)
	FROM pg_stat_replication`

// prober keeps one connection to a node for frequent probes.
type prober struct {
	mu   sync.Mutex
	dsn  string
	conn *pgx.Conn
}

// probe asks the node nodeQuery (and, when it is not in recovery,
// replicationQuery) within timeout. A failed probe drops the connection.
func (p *prober) probe(ctx context.Context, timeout time.Duration) probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := probe{At: time.Now()}
	if p.conn == nil {
		cfg, err := pgx.ParseConfig(p.dsn)
		if err != nil {
			res.Err = err
			return res
		}
		cfg.ConnectTimeout = timeout
		cfg.RuntimeParams["application_name"] = "socnet-supervisor"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			res.Err = err
			return res
		}
		p.conn = conn
	}
	if err := probeConn(ctx, p.conn, &res); err != nil {
		res.Err = err
		p.conn.Close(context.Background())
		p.conn = nil
		return res
	}
	res.OK = true
	return res
}

func (p *prober) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close(context.Background())
		p.conn = nil
	}
}

func probeConn(ctx context.Context, conn *pgx.Conn, res *probe) error {
	var recv, replay, flush string
	if err := conn.QueryRow(ctx, nodeQuery).Scan(&res.InRecovery, &recv, &replay, &flush, &res.Timeline); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	var err error
	if res.Receive, err = ParseLSN(recv); err != nil {
		return err
	}
	if res.Replay, err = ParseLSN(replay); err != nil {
		return err
	}
	if res.Flush, err = ParseLSN(flush); err != nil {
		return err
	}
	if !res.InRecovery {
		if res.Repl, err = queryReplication(ctx, conn); err != nil {
			return err
		}
	}
	return nil
}

func queryReplication(ctx context.Context, conn *pgx.Conn) (map[string]replRow, error) {
	rows, err := conn.Query(ctx, replicationQuery)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_replication: %w", err)
	}
	defer rows.Close()
	out := map[string]replRow{}
	for rows.Next() {
		var r replRow
		var flush, replay string
		if err := rows.Scan(&r.App, &r.State, &r.SyncState, &flush, &replay, &r.ReplayLag); err != nil {
			return nil, fmt.Errorf("pg_stat_replication: %w", err)
		}
		if r.Flush, err = ParseLSN(flush); err != nil {
			return nil, err
		}
		if r.Replay, err = ParseLSN(replay); err != nil {
			return nil, err
		}
		// A restarted standby may show up twice for a moment; keep the
		// streaming one.
		if old, ok := out[r.App]; ok && old.State == "streaming" {
			continue
		}
		out[r.App] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pg_stat_replication: %w", err)
	}
	return out, nil
}

// probeAll probes every node concurrently.
func (c *Cluster) probeAll(ctx context.Context) map[string]probe { return c.probeRunning(ctx, false) }

// errNotRunning is the probe error of a node without a postmaster.
var errNotRunning = errors.New("not running")

// probeRunning is probeAll; with onlyRunning, a node without a postmaster
// process on this machine is not asked: it cannot answer, and on a host cut
// off the question would only wait for its timeout.
func (c *Cluster) probeRunning(ctx context.Context, onlyRunning bool) map[string]probe {
	c.mu.Lock()
	probers := make(map[string]*prober, len(c.probers))
	for k, v := range c.probers {
		probers[k] = v
	}
	c.mu.Unlock()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string]probe, len(probers))
	for name, p := range probers {
		if onlyRunning && c.nodePid(name) == 0 {
			out[name] = probe{At: time.Now(), Err: errNotRunning}
			continue
		}
		wg.Go(func() {
			r := p.probe(ctx, c.opts.ProbeTimeout)
			mu.Lock()
			out[name] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (c *Cluster) closeProbers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.probers {
		p.close()
	}
}

// setView records an observation of the healthy primary.
func (c *Cluster) setView(gen uint64, v primaryView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.view = &v
	}
}

// Status is the state of a cluster as its nodes report it.
type Status struct {
	// Name is the cluster's name.
	Name string `json:"name"`
	// Primary is the node assigned the primary role.
	Primary string `json:"primary"`
	// SynchronousStandbyNames is the primary's synchronous_standby_names.
	SynchronousStandbyNames string       `json:"synchronous_standby_names"`
	Nodes                   []NodeStatus `json:"nodes"`
	// Stopped is set when an operator stopped the cluster.
	Stopped bool `json:"stopped,omitempty"`
	// Waiting says why a failover waits, when one does.
	Waiting   string           `json:"waiting,omitempty"`
	Failovers []FailoverRecord `json:"failovers"`
}

// NodeStatus is one node in a Status.
type NodeStatus struct {
	// Name is the node's name.
	Name string `json:"name"`
	// Role is what the node is now: primary, replica or down.
	Role string `json:"role"`
	// AssignedRole is the node's role in state.json.
	AssignedRole string `json:"assigned_role"`
	// NeedsRejoin is set for a node that must be rewound before it runs.
	NeedsRejoin bool `json:"needs_rejoin,omitempty"`
	// SyncState is the replica's sync_state in the primary's
	// pg_stat_replication (sync, potential, quorum, async); "" otherwise.
	SyncState string `json:"sync_state"`
	// ReplicationState is the walsender's state (streaming, catchup, ...).
	ReplicationState string `json:"replication_state,omitempty"`
	// Pid is the postmaster's, 0 when it does not run.
	Pid int `json:"pid"`
	// AgentPid is the pid of the engine's agent of this node (Patroni's),
	// null under an engine without one (socnet's own supervisor).
	AgentPid *int `json:"agent_pid"`
	// Netns is the network namespace the node runs in, "" (omitted) on
	// the machine's own network.
	Netns string `json:"netns,omitempty"`
	Host  string `json:"host"`
	Port  int    `json:"port"`
	// DSN is an administrator connection string for the postgres database.
	DSN string `json:"dsn"`
	// LSN is the primary's current flush LSN or the replica's replay LSN.
	LSN LSN `json:"lsn"`
	// LagBytes is how far the replica's replay is behind the primary.
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is the replica's replay lag as the primary measures it.
	LagSeconds float64 `json:"lag_seconds"`
	// Timeline is the newest timeline the node holds WAL for.
	Timeline int `json:"timeline"`
	// Error is why the node did not answer.
	Error string `json:"error,omitempty"`
}

// Status asks every node for its state.
//
// The postmaster pids are read before the state of record, and that before
// the probes: the supervisor makes a new primary of record before it starts
// the old one again as a replica, so a status that shows the old primary's
// node running also names its successor. Read the other way round, a
// failover between the reads could show the old node running beside a
// state of record that still calls it the primary.
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	pids := map[string]int{}
	for _, name := range c.Nodes() {
		pids[name] = c.nodePid(name)
	}
	st := c.snapshot()
	probes := c.probeAll(ctx)
	c.mu.Lock()
	s := Status{Name: st.Spec.Name, Primary: st.primary().Name, SynchronousStandbyNames: st.SyncNames,
		Stopped: c.stopped, Waiting: c.waiting, Failovers: st.Failovers}
	c.mu.Unlock()
	if s.Failovers == nil {
		s.Failovers = []FailoverRecord{}
	}
	var primaryFlush LSN
	var repl map[string]replRow
	if p := probes[s.Primary]; p.OK && !p.InRecovery {
		primaryFlush, repl = p.Flush, p.Repl
	}
	for _, n := range st.Nodes {
		p := probes[n.Name]
		place := c.place(n.Name)
		ns := NodeStatus{Name: n.Name, AssignedRole: n.Role, NeedsRejoin: n.NeedsRejoin, Pid: pids[n.Name],
			Host: place.Host, Netns: place.Netns, Port: n.Port, DSN: c.Node(n.Name).DSN(""), Role: RoleDown, Timeline: p.Timeline}
		switch {
		case !p.OK && ns.Pid == 0:
			ns.Error = "not running"
		case !p.OK:
			ns.Error = RedactDSN(errString(p.Err))
		case p.InRecovery:
			ns.Role = RoleReplica
			ns.LSN = p.Replay
			if primaryFlush != 0 {
				ns.LagBytes = primaryFlush.Minus(p.Replay)
			}
			if r, ok := repl[AppName(n.Name)]; ok {
				ns.SyncState, ns.ReplicationState, ns.LagSeconds = r.SyncState, r.State, r.ReplayLag
			}
		default:
			ns.Role = RolePrimary
			ns.LSN = p.Flush
		}
		s.Nodes = append(s.Nodes, ns)
	}
	return s, nil
}

// PrimaryNode returns the node whose observed role is primary.
func (s Status) PrimaryNode() (NodeStatus, bool) {
	for _, n := range s.Nodes {
		if n.Role == RolePrimary {
			return n, true
		}
	}
	return NodeStatus{}, false
}

// Node returns the node named name.
func (s Status) Node(name string) (NodeStatus, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeStatus{}, false
}
