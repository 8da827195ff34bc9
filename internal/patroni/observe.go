package patroni

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/pglsn"
	"socnet/internal/pgnode"
)

// probeTimeout bounds one question to a node's PostgreSQL.
const probeTimeout = 2 * time.Second

// walSender is one row of a leader's pg_stat_replication.
type walSender struct {
	State     string // streaming, catchup, startup...
	SyncState string // sync, potential, quorum, async
	Flush     pglsn.LSN
	Replay    pglsn.LSN
	ReplayLag float64 // seconds
}

// nodeObservation is what a node's PostgreSQL says of itself.
type nodeObservation struct {
	err        error
	inRecovery bool
	lsn        pglsn.LSN // flush LSN of a primary, replay LSN of a standby
	syncNames  string    // synchronous_standby_names of a primary
	timeline   int       // the primary's, or the one a standby receives
	repl       map[string]walSender
}

// selfQuery: a primary's timeline is the one of the WAL file it writes,
// which is right from the moment of a promotion; a standby's is the one
// it receives.
const selfQuery = `SELECT pg_is_in_recovery(),
	coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END::text, ''),
	current_setting('synchronous_standby_names'),
	CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0)
	  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_flush_lsn()), 1, 8))::bit(32)::int END`

const replQuery = `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
	coalesce(flush_lsn::text, ''), coalesce(replay_lsn::text, ''),
	coalesce(extract(epoch FROM replay_lag)::float8, 0)
	FROM pg_stat_replication`

// observeNode asks n's PostgreSQL for its role and WAL position and, on a
// primary, for its walsenders (keyed by application_name, which Patroni
// sets to the member name).
func (e *Engine) observeNode(ctx context.Context, n NodeSpec) (o nodeObservation) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cfg, err := pgx.ParseConfig(e.dsn(n, "", true))
	if err != nil {
		return nodeObservation{err: err}
	}
	cfg.ConnectTimeout = probeTimeout
	cfg.RuntimeParams["application_name"] = "socnet-patroni-engine"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nodeObservation{err: err}
	}
	defer conn.Close(context.Background())
	var lsn string
	if err := conn.QueryRow(ctx, selfQuery).Scan(&o.inRecovery, &lsn, &o.syncNames, &o.timeline); err != nil {
		return nodeObservation{err: err}
	}
	if o.lsn, err = pglsn.Parse(lsn); err != nil {
		return nodeObservation{err: err}
	}
	if o.inRecovery {
		o.syncNames = ""
		return o
	}
	rows, err := conn.Query(ctx, replQuery)
	if err != nil {
		return nodeObservation{err: fmt.Errorf("pg_stat_replication: %w", err)}
	}
	defer rows.Close()
	o.repl = map[string]walSender{}
	for rows.Next() {
		var app, flush, replay string
		var w walSender
		if err := rows.Scan(&app, &w.State, &w.SyncState, &flush, &replay, &w.ReplayLag); err != nil {
			return nodeObservation{err: fmt.Errorf("pg_stat_replication: %w", err)}
		}
		w.Flush, _ = pglsn.Parse(flush)
		w.Replay, _ = pglsn.Parse(replay)
		// A restarted standby may show up twice for a moment; keep the
		// streaming one.
		if old, ok := o.repl[app]; ok && old.State == "streaming" {
			continue
		}
		o.repl[app] = w
	}
	if err := rows.Err(); err != nil {
		return nodeObservation{err: fmt.Errorf("pg_stat_replication: %w", err)}
	}
	return o
}

// commitCheck commits a transaction with a transaction id on dsn: under
// synchronous_commit it returns only once a synchronous standby has it.
func commitCheck(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT pg_catalog.txid_current()")
	return err
}

// Primary is the node holding Patroni's leader key of clusterName, "" when
// none does.
func (e *Engine) Primary(ctx context.Context, clusterName string) (string, error) {
	s, ok := e.spec(clusterName)
	if !ok {
		return "", fmt.Errorf("patroni engine: no cluster %q", clusterName)
	}
	st, _, err := e.clusterState(ctx, s)
	if err != nil {
		return "", fmt.Errorf("patroni engine: %w", err)
	}
	if l, ok := st.Leader(); ok {
		return l.Name, nil
	}
	return "", nil
}

// Members is the cluster as Patroni sees it (GET /cluster): the leader,
// the synchronous standby named in etcd, timelines and tags.
func (e *Engine) Members(ctx context.Context, clusterName string) (ClusterState, error) {
	s, ok := e.spec(clusterName)
	if !ok {
		return ClusterState{}, fmt.Errorf("patroni engine: no cluster %q", clusterName)
	}
	st, _, err := e.clusterState(ctx, s)
	if err != nil {
		return ClusterState{}, fmt.Errorf("patroni engine: %w", err)
	}
	return st, nil
}

// Status is every cluster as Patroni (roles, timelines, failover history:
// GET /cluster and /history, which read etcd) and PostgreSQL's own views
// (LSNs, sync states, lags) see it.
func (e *Engine) Status(ctx context.Context) ([]cluster.Status, error) {
	out := make([]cluster.Status, len(e.specs))
	var wg sync.WaitGroup
	for i, s := range e.specs {
		wg.Go(func() { out[i] = e.clusterStatus(ctx, s) })
	}
	wg.Wait()
	return out, nil
}

func (e *Engine) clusterStatus(ctx context.Context, s Spec) cluster.Status {
	cs := cluster.Status{Name: s.Cluster, Failovers: []cluster.FailoverRecord{}, Stopped: e.clusterHeld(s)}
	pst, client, restErr := e.clusterState(ctx, s)
	members := map[string]Member{}
	for _, m := range pst.Members {
		members[m.Name] = m
	}
	if l, ok := pst.Leader(); ok {
		cs.Primary = l.Name
	}
	switch {
	case restErr != nil:
		cs.Waiting = cluster.RedactDSN(restErr.Error())
	case cs.Primary == "":
		cs.Waiting = "no leader: Patroni promotes a synchronous standby once the leader key expires"
	}
	if client != nil {
		if h, err := client.History(ctx); err == nil {
			cs.Failovers = e.failoverRecords(s, h)
		}
	}
	obs := make([]nodeObservation, len(s.Nodes))
	var wg sync.WaitGroup
	for i, n := range s.Nodes {
		wg.Go(func() { obs[i] = e.observeNode(ctx, n) })
	}
	wg.Wait()
	var primaryLSN pglsn.LSN
	var repl map[string]walSender
	primaryTL := 0
	for i, n := range s.Nodes {
		if o := obs[i]; o.err == nil && !o.inRecovery && (n.Name == cs.Primary || cs.Primary == "") {
			primaryLSN, repl, cs.SynchronousStandbyNames, primaryTL = o.lsn, o.repl, o.syncNames, o.timeline
		}
	}
	for i, n := range s.Nodes {
		o := obs[i]
		m, known := members[n.Name]
		ns := cluster.NodeStatus{Name: n.Name, Role: cluster.RoleDown, AssignedRole: cluster.RoleReplica,
			Host: n.Addr(), Netns: e.hosts.Netns(n.Name), Port: n.Port, DSN: e.dsn(n, "", true), Timeline: m.Timeline}
		if known && m.Role == "leader" {
			ns.AssignedRole = cluster.RolePrimary
		}
		if pid := pgnode.RunningPostmaster(n.DataDir()); pid > 0 {
			ns.Pid = pid
		}
		e.mu.Lock()
		if p := e.agents[n.Name].proc; p != nil {
			select {
			case <-p.Done():
			default:
				pid := p.Pid()
				ns.AgentPid = &pid
			}
		}
		e.mu.Unlock()
		switch {
		case o.err != nil && ns.Pid == 0:
			ns.Error = "not running"
		case o.err != nil:
			ns.Error = cluster.RedactDSN(o.err.Error())
		case o.inRecovery:
			ns.Role = cluster.RoleReplica
			ns.LSN = o.lsn
			if primaryLSN != 0 {
				ns.LagBytes = primaryLSN.Minus(o.lsn)
			}
			// A standby that receives an older timeline than the primary
			// writes is not following it yet: an old primary back from a
			// partition connects to the new one before Patroni rewinds it.
			if w, ok := repl[n.Name]; ok && o.timeline >= primaryTL {
				ns.SyncState, ns.ReplicationState, ns.LagSeconds = w.SyncState, w.State, w.ReplayLag
			}
		default:
			ns.Role = cluster.RolePrimary
			ns.LSN = o.lsn
		}
		if ns.Timeline == 0 && o.err == nil {
			ns.Timeline = o.timeline // Patroni has not published it yet
		}
		cs.Nodes = append(cs.Nodes, ns)
	}
	return cs
}

// failoverRecords turns Patroni's timeline history into the failover
// history: each line is a switch to a new timeline and, since Patroni 2.1,
// names its new leader. Switchovers the engine asked for carry their
// timings.
func (e *Engine) failoverRecords(s Spec, h []HistoryEntry) []cluster.FailoverRecord {
	e.mu.Lock()
	logs := map[int]switchoverLog{}
	for _, l := range e.st.Switchovers {
		if l.Cluster == s.Cluster {
			logs[l.Timeline] = l
		}
	}
	e.mu.Unlock()
	out := []cluster.FailoverRecord{}
	prev := s.Nodes[0].Name // the bootstrap leader
	for _, line := range h {
		rec := cluster.FailoverRecord{ID: fmt.Sprintf("%s-tl%d", s.Cluster, line.Timeline+1), Kind: "failover",
			At: line.At, OldPrimary: prev, NewPrimary: line.NewLeader, LSN: pglsn.LSN(line.LSN),
			Timeline: line.Timeline + 1, Reason: "patroni: " + line.Reason}
		if l, ok := logs[line.Timeline+1]; ok {
			rec.Kind, rec.ID = "switchover", l.Record.ID
			rec.PromotionMS, rec.TotalMS = l.Record.PromotionMS, l.Record.TotalMS
			if rec.At.IsZero() {
				rec.At = l.Record.At
			}
		}
		if line.NewLeader != "" {
			prev = line.NewLeader
		}
		out = append(out, rec)
	}
	return out
}

// errNoLeader is returned when an operation needs a leader and there is none.
var errNoLeader = errors.New("no leader")
