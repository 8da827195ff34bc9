package stack

import (
	"context"

	"socnet/internal/cluster"
)

// Engine runs the stack's PostgreSQL clusters and keeps a primary in each:
// socnet's own supervisor (internal/cluster) or Patroni with etcd
// (internal/patroni). Everything else `up` does (databases, roles, the
// services, status) is the same for every engine; a third engine
// implements this interface and touches nothing else. An engine that also
// takes promote, rejoin, stop and start implements Operator.
type Engine interface {
	// Name is the engine's name as status reports it: "socnet", "patroni".
	Name() string
	// Up creates the clusters on a home's first start and resumes them as
	// they are on a later one. It returns once every cluster has a primary
	// that accepts writes and its replicas are streaming.
	Up(ctx context.Context) error
	// Supervise keeps the clusters running until ctx ends: failover, and
	// restarting whatever the engine runs beside PostgreSQL (agents, etcd).
	// It also serves the operator's commands while the stack runs: it runs
	// ServeControl(ctx, home.Control(), engine) beside its supervision.
	Supervise(ctx context.Context) error
	// Stop stops the clusters and everything the engine runs, in order.
	Stop(ctx context.Context) error
	// Clusters are the clusters' names, in the order the stack lists them.
	Clusters() []string
	// Nodes are the addresses of a cluster's nodes: what services, drills
	// and DSNs are built from. Services find the primary by probing them.
	Nodes(cluster string) []NodeAddr
	// AdminDSN is the administrator's DSN of database db on node (with
	// its password: it is for `up` itself, never printed).
	AdminDSN(cluster, node, db string) string
	// Primary is the node that is primary now, "" when there is none.
	Primary(ctx context.Context, cluster string) (string, error)
	// Status is every cluster as the engine and PostgreSQL's own views see
	// it, with NodeStatus.AgentPid set by engines that run agents.
	Status(ctx context.Context) ([]cluster.Status, error)
	// Switchover hands the primary role of cluster to node, without
	// losing an acknowledged write; node "" lets the engine choose.
	Switchover(ctx context.Context, clusterName, node string) (cluster.Outcome, error)
}

// NodeAddr is where one PostgreSQL node listens.
type NodeAddr struct {
	Name string `json:"name"`
	Host string `json:"host"`
	Port int    `json:"port"`
	// Netns is the network namespace the node runs in, "" on the
	// machine's own network.
	Netns string `json:"netns,omitempty"`
}

// Names of the engines.
const (
	EngineSocnet  = "socnet"
	EnginePatroni = "patroni"
)
