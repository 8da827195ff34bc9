package dbroute

import "time"

// NodeStatus is what the router knows about one node, for `socnet status`
// and operators: where reads and writes go and why.
type NodeStatus struct {
	// Name is host:port.
	Name string `json:"name"`
	// Role is RolePrimary (out of recovery), RoleReplica (in recovery) or
	// RoleDown (not answering probes).
	Role string `json:"role"`
	// Elected marks the node writes go to. A second node out of recovery
	// (an old primary on a lower timeline) shows as primary, not elected.
	Elected bool `json:"elected"`
	// Healthy: the primary answers; a replica answers and lags within
	// MaxReplicaLag, so it gets reads.
	Healthy bool `json:"healthy"`
	// Lag is, on a replica, how old a write a read there may miss now:
	// the time since FreshAt. It is 0 when FreshAt is unknown.
	Lag time.Duration `json:"lag_ns"`
	// FreshAt is, on a replica, the time before which every write the
	// primary acknowledged is replayed there, as far as the probes show;
	// zero when not known (no primary probed since the replica reached a
	// known primary position), and then the replica gets no reads.
	FreshAt time.Time `json:"fresh_at"`
	// LagBytes is how far a replica's replay is behind the primary's
	// last known position.
	LagBytes int64 `json:"lag_bytes"`
	// LSN is the primary's current WAL position or a replica's replay
	// position, as last probed.
	LSN string `json:"lsn"`
	// Timeline is the primary's timeline (0 for replicas).
	Timeline uint32 `json:"timeline"`
	// Reads and Writes count the calls the node served since Open.
	Reads  int64 `json:"reads"`
	Writes int64 `json:"writes"`
	// InFlight is the number of calls running on the node now.
	InFlight int64 `json:"in_flight"`
	// CheckedAt is when the node was last probed; Error is that probe's
	// error, if it failed.
	CheckedAt time.Time `json:"checked_at"`
	Error     string    `json:"error,omitempty"`
}

// Snapshot returns the state of every node, in configuration order.
func (db *DB) Snapshot() []NodeStatus {
	now := time.Now()
	db.mu.RLock()
	defer db.mu.RUnlock()
	out := make([]NodeStatus, 0, len(db.nodes))
	for _, n := range db.nodes {
		st := n.st
		s := NodeStatus{
			Name:      n.name,
			Elected:   n == db.primary,
			LagBytes:  st.lagBytes,
			LSN:       lsnText(st.pos),
			Timeline:  st.timeline,
			Reads:     n.reads.Load(),
			Writes:    n.writes.Load(),
			InFlight:  n.inflight.Load(),
			CheckedAt: st.checkedAt,
		}
		switch {
		case !st.reachable:
			s.Role, s.Error = RoleDown, st.err
		case st.inRecovery:
			s.Role, s.Healthy = RoleReplica, db.fitReplica(n, now)
			s.Lag, _ = replicaLag(n, now)
			s.FreshAt = st.freshAt
		default:
			s.Role, s.Healthy = RolePrimary, n == db.primary
		}
		out = append(out, s)
	}
	return out
}
