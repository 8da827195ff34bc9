package dbroute

import (
	"errors"
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// Routing decisions of ReadReplica, the values of the decision label.
const (
	DecisionReplica         = "replica"          // a fit replica served the read
	DecisionPrimaryFallback = "primary_fallback" // no replica was fit; the primary served it
	DecisionRYWPrimary      = "ryw_primary"      // no replica had replayed the session's write
	DecisionNoReplicaFail   = "no_replica_fail"  // no replica was fit and the policy is NoReplicaFail
)

// metrics are the Prometheus series of one DB.
type metrics struct {
	queries   *prometheus.CounterVec // node, role
	decisions *prometheus.CounterVec // decision
	nodes     *nodeGauges
	failovers prometheus.Counter
}

// newMetrics makes the series of one DB and registers them on reg (when
// not nil); snapshot gives the node gauges' values when they are
// collected.
func newMetrics(reg prometheus.Registerer, db string, snapshot func() []NodeStatus) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_db_queries_total",
			Help: "Transact, ReadPrimary and ReadReplica calls served, by node and the role it served in.",
		}, []string{"node", "role"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_db_routing_decisions_total",
			Help: "Where ReadReplica sent reads: replica, primary_fallback, ryw_primary or no_replica_fail.",
		}, []string{"decision"}),
		nodes: &nodeGauges{
			healthy: prometheus.NewDesc("socnet_db_node_healthy",
				"1 when the node is reachable and fit for its role (a replica: within the lag bound), else 0.",
				[]string{"node"}, nil),
			lag: prometheus.NewDesc("socnet_db_replica_lag_seconds",
				"How old a write a read on each replica may miss now; +Inf when nothing bounds it.",
				[]string{"node"}, nil),
			snapshot: snapshot,
		},
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "socnet_db_primary_changes_total",
			Help: "Times the router found a different primary.",
		}),
	}
	for _, d := range []string{DecisionReplica, DecisionPrimaryFallback, DecisionRYWPrimary, DecisionNoReplicaFail} {
		m.decisions.WithLabelValues(d)
	}
	if reg == nil {
		return m, nil
	}
	if db != "" {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"db": db}, reg)
	}
	for _, c := range []prometheus.Collector{m.queries, m.decisions, m.nodes, m.failovers} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("register metrics: already registered (give each DB on one registry its own Name): %w", err)
			}
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// nodeGauges reports each node's health and lag as they are when collected:
// a replica's lag grows between two probes, and its health with it.
type nodeGauges struct {
	healthy, lag *prometheus.Desc
	snapshot     func() []NodeStatus
}

// Describe implements prometheus.Collector.
func (g *nodeGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.healthy
	ch <- g.lag
}

// Collect implements prometheus.Collector.
func (g *nodeGauges) Collect(ch chan<- prometheus.Metric) {
	for _, s := range g.snapshot() {
		healthy, lag := 0.0, 0.0
		if s.Healthy {
			healthy = 1
		}
		if s.Role == RoleReplica {
			lag = s.Lag.Seconds()
			if s.FreshAt.IsZero() {
				lag = math.Inf(1)
			}
		}
		ch <- prometheus.MustNewConstMetric(g.healthy, prometheus.GaugeValue, healthy, s.Name)
		ch <- prometheus.MustNewConstMetric(g.lag, prometheus.GaugeValue, lag, s.Name)
	}
}
