package dbroute

import (
	"errors"
	"fmt"

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
	healthy   *prometheus.GaugeVec   // node
	lag       *prometheus.GaugeVec   // node
	failovers prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, db string) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_db_queries_total",
			Help: "Transact, ReadPrimary and ReadReplica calls served, by node and the role it served in.",
		}, []string{"node", "role"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_db_routing_decisions_total",
			Help: "Where ReadReplica sent reads: replica, primary_fallback, ryw_primary or no_replica_fail.",
		}, []string{"decision"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "socnet_db_node_healthy",
			Help: "1 when the node is reachable and fit for its role (a replica: within the lag bound), else 0.",
		}, []string{"node"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "socnet_db_replica_lag_seconds",
			Help: "Replay lag of each replica as last measured.",
		}, []string{"node"}),
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
	for _, c := range []prometheus.Collector{m.queries, m.decisions, m.healthy, m.lag, m.failovers} {
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
