package drill

import (
	"context"
	"encoding/json"
	"fmt"

	"socnet/internal/cluster"
	"socnet/internal/noderole"
	"socnet/internal/stack"
)

// Node roles as `socnet status` reports them.
const (
	RolePrimary = noderole.Primary
	RoleReplica = noderole.Replica
	RoleDown    = noderole.Down
)

// Status is the document `socnet status --json` prints (see DESIGN.md):
// its writer's type, which drills read.
type Status = stack.Status

// ClusterStatus is one database cluster of the stack.
type ClusterStatus = cluster.Status

// NodeStatus is one PostgreSQL node.
type NodeStatus = cluster.NodeStatus

// FailoverStatus is one change of primary in a cluster's history.
type FailoverStatus = cluster.FailoverRecord

// ServiceStatus is one service process of the stack.
type ServiceStatus = stack.Service

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
