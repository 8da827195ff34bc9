package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Node roles as `socnet status` reports them.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleDown    = "down"
)

// Status is the document `socnet status --json` prints (see DESIGN.md),
// the fields a drill reads.
type Status struct {
	// Engine runs the clusters: "socnet" or "patroni"; "" from a stack
	// older than the field.
	Engine   string          `json:"engine"`
	Clusters []ClusterStatus `json:"clusters"`
	Services []ServiceStatus `json:"services"`
}

// ClusterStatus is one database cluster of the stack.
type ClusterStatus struct {
	Name  string       `json:"name"`
	Nodes []NodeStatus `json:"nodes"`
	// Failovers is the cluster's history of primary changes, when the
	// status carries it.
	Failovers []FailoverStatus `json:"failovers,omitempty"`
}

// NodeStatus is one PostgreSQL node.
type NodeStatus struct {
	Name string `json:"name"`
	// Role is primary, replica or down.
	Role string `json:"role"`
	// AssignedRole is the role the engine gives the node (the socnet
	// engine's state.json, Patroni's leader key): primary or replica.
	AssignedRole string `json:"assigned_role"`
	// SyncState is the node's sync_state in the primary's
	// pg_stat_replication ("sync", "potential", "async", "quorum"); "" when
	// it does not stream.
	SyncState string `json:"sync_state"`
	// Pid is the postmaster's.
	Pid int `json:"pid"`
	// AgentPid is the pid of the engine's agent of the node (Patroni's);
	// nil under an engine without one.
	AgentPid *int   `json:"agent_pid"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	// DSN is an administrator connection string.
	DSN      string `json:"dsn"`
	LSN      string `json:"lsn"`
	LagBytes int64  `json:"lag_bytes"`
}

// FailoverStatus is one change of primary in a cluster's history.
type FailoverStatus struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// At is when the old primary was declared dead.
	At         time.Time `json:"at"`
	OldPrimary string    `json:"old_primary"`
	NewPrimary string    `json:"new_primary"`
	// PromotionMS is from At to the new primary accepting writes.
	PromotionMS int64 `json:"promotion_ms"`
}

// Promoted returns when the new primary accepted writes.
func (f FailoverStatus) Promoted() time.Time {
	return f.At.Add(time.Duration(f.PromotionMS) * time.Millisecond)
}

// ServiceStatus is one service process of the stack.
type ServiceStatus struct {
	Name string `json:"name"`
	Pid  int    `json:"pid"`
	Addr string `json:"addr"`
}

// Cluster returns the cluster named name.
func (s Status) Cluster(name string) (ClusterStatus, bool) {
	for _, c := range s.Clusters {
		if c.Name == name {
			return c, true
		}
	}
	return ClusterStatus{}, false
}

// Service returns the service named name.
func (s Status) Service(name string) (ServiceStatus, bool) {
	for _, sv := range s.Services {
		if sv.Name == name {
			return sv, true
		}
	}
	return ServiceStatus{}, false
}

// Primary returns the node whose role is primary.
func (c ClusterStatus) Primary() (NodeStatus, bool) {
	for _, n := range c.Nodes {
		if n.Role == RolePrimary {
			return n, true
		}
	}
	return NodeStatus{}, false
}

// Node returns the node named name.
func (c ClusterStatus) Node(name string) (NodeStatus, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeStatus{}, false
}

// StatusFunc returns the stack's current status: the document of `socnet
// status --json`, however it was obtained.
type StatusFunc func(ctx context.Context) (Status, error)

// ParseStatus reads the JSON of `socnet status --json`.
func ParseStatus(b []byte) (Status, error) {
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("parse status: %w", err)
	}
	return s, nil
}
