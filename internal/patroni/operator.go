package patroni

import (
	"context"
	"fmt"
	"time"

	"socnet/internal/cluster"
)

// The Patroni engine's answers to the operator's commands besides
// switchover (stack.Operator), each through Patroni's REST API or its
// agents, never behind Patroni's back:
//
//   - promote: POST /failover to the synchronous standby of a cluster
//     without a leader; Patroni refuses any other node under synchronous
//     mode, and so does the engine, forced or not;
//   - rejoin: POST /reinitialize on the node (Patroni rewinds a returning
//     old primary by itself, use_pg_rewind; this rebuilds one that cannot);
//   - stop and start: the cluster's agents, which stop and start PostgreSQL,
//     held from supervision while stopped.

// Promote makes node, the synchronous standby of record, the leader of a
// cluster whose leader is gone. A live leader, or a node that may lack
// acknowledged commits, is a refusal; force changes nothing, because
// Patroni under synchronous_mode_strict elects only the synchronous standby.
func (e *Engine) Promote(ctx context.Context, clusterName, node string, force bool) (cluster.Outcome, error) {
	s, err := e.target("promote", clusterName, node)
	if err != nil {
		return cluster.Outcome{}, err
	}
	st, client, err := e.clusterState(ctx, s)
	if err != nil {
		return cluster.Outcome{}, fmt.Errorf("promote: %w", err)
	}
	if l, ok := st.Leader(); ok {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "promote",
			Reason: fmt.Sprintf("%s is the live primary of %s: use switchover", l.Name, clusterName)}
	}
	sync, ok := st.SyncStandby()
	if !ok || sync.Name != node {
		why := "may lack acknowledged commits: only the synchronous standby of record has them all"
		if force {
			why += "; --force cannot help, Patroni under synchronous_mode_strict elects no other node"
		}
		return cluster.Outcome{}, &cluster.RefusedError{Op: "promote", Reason: fmt.Sprintf("%s %s", node, why)}
	}
	start := time.Now()
	if err := client.Failover(ctx, node); err != nil {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "promote", Reason: err.Error()}
	}
	if err := e.waitReadyExcept(ctx, s, node); err != nil {
		return cluster.Outcome{}, fmt.Errorf("promote %s: %w", node, err)
	}
	return cluster.Outcome{Message: fmt.Sprintf("promote: %s leads %s after %d ms (Patroni failover)",
		node, clusterName, time.Since(start).Milliseconds())}, nil
}

// Rejoin rebuilds node from the leader (Patroni's reinitialize) and waits
// until it streams again. The leader itself is refused.
func (e *Engine) Rejoin(ctx context.Context, clusterName, node string) (cluster.Outcome, error) {
	s, err := e.target("rejoin", clusterName, node)
	if err != nil {
		return cluster.Outcome{}, err
	}
	st, _, err := e.clusterState(ctx, s)
	if err != nil {
		return cluster.Outcome{}, fmt.Errorf("rejoin: %w", err)
	}
	l, ok := st.Leader()
	if !ok {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "rejoin", Reason: fmt.Sprintf("%s has no leader to follow", clusterName)}
	}
	if l.Name == node {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "rejoin", Reason: fmt.Sprintf("%s is the primary of %s", node, clusterName)}
	}
	n, _ := e.nodeSpec(node)
	start := time.Now()
	if err := e.client(n).Reinitialize(ctx); err != nil {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "rejoin", Reason: err.Error()}
	}
	if err := e.waitReady(ctx, s, readyTimeout); err != nil {
		return cluster.Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
	}
	return cluster.Outcome{Message: fmt.Sprintf("rejoin: %s rebuilt from %s and streaming after %d ms",
		node, l.Name, time.Since(start).Milliseconds())}, nil
}

// StopCluster stops the cluster's agents, standbys before the leader, and
// with them PostgreSQL; supervision leaves them stopped until StartCluster.
func (e *Engine) StopCluster(ctx context.Context, clusterName string) (cluster.Outcome, error) {
	s, err := e.target("stop", clusterName, "")
	if err != nil {
		return cluster.Outcome{}, err
	}
	start := time.Now()
	e.holdCluster(s, true)
	e.stopCluster(ctx, s)
	return cluster.Outcome{Message: fmt.Sprintf("stop: %s stopped in %d ms; `socnet cluster start %s` starts it",
		clusterName, time.Since(start).Milliseconds(), clusterName)}, nil
}

// StartCluster starts the agents of a cluster StopCluster stopped, the last
// leader first, and waits until it commits with its standbys streaming.
func (e *Engine) StartCluster(ctx context.Context, clusterName string) (cluster.Outcome, error) {
	s, err := e.target("start", clusterName, "")
	if err != nil {
		return cluster.Outcome{}, err
	}
	if !e.clusterHeld(s) {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "start", Reason: fmt.Sprintf("%s runs (it was not stopped)", clusterName)}
	}
	start := time.Now()
	// The agents stay held while upCluster starts them in order (the last
	// leader first): supervision would otherwise start the others at once.
	err = e.upCluster(ctx, s)
	e.holdCluster(s, false)
	if err != nil {
		return cluster.Outcome{}, fmt.Errorf("start %s: %w", clusterName, err)
	}
	return cluster.Outcome{Message: fmt.Sprintf("start: %s up in %d ms", clusterName, time.Since(start).Milliseconds())}, nil
}

// target returns the cluster an operation names, refusing an unknown
// cluster or a node that is not one of its members.
func (e *Engine) target(op, clusterName, node string) (Spec, error) {
	s, ok := e.spec(clusterName)
	if !ok {
		return Spec{}, &cluster.RefusedError{Op: op, Reason: fmt.Sprintf("there is no cluster %q", clusterName)}
	}
	if node != "" && e.agent(clusterName, node) == nil {
		return Spec{}, &cluster.RefusedError{Op: op, Reason: fmt.Sprintf("%s is not a node of cluster %s", node, clusterName)}
	}
	return s, nil
}

// holdCluster keeps (or stops keeping) supervision from restarting the
// cluster's agents.
func (e *Engine) holdCluster(s Spec, held bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range s.Nodes {
		e.agents[n.Name].held = held
		e.agents[n.Name].stopped = held
	}
}

// clusterHeld reports whether an operator stopped the cluster.
func (e *Engine) clusterHeld(s Spec) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range s.Nodes {
		if !e.agents[n.Name].stopped {
			return false
		}
	}
	return true
}

// waitReadyExcept waits until node leads s and commits; the other nodes
// may still be on their way back (the old leader is gone).
func (e *Engine) waitReadyExcept(ctx context.Context, s Spec, node string) error {
	n, _ := e.nodeSpec(node)
	return e.poll(ctx, readyTimeout, func() error {
		st, _, err := e.clusterState(ctx, s)
		if err != nil {
			return err
		}
		if l, ok := st.Leader(); !ok || l.Name != node {
			return fmt.Errorf("%s does not lead %s yet", node, s.Cluster)
		}
		if err := commitCheck(ctx, e.dsn(n, "", true)); err != nil {
			return fmt.Errorf("%s does not commit yet: %w", node, err)
		}
		e.noteLeader(s.Cluster, node)
		return nil
	})
}
