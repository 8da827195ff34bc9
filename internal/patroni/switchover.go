package patroni

import (
	"context"
	"fmt"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/pglsn"
)

// Switchover asks Patroni (POST /switchover) to hand the leader role of
// clusterName to node, "" letting Patroni choose: under synchronous mode
// only the synchronous standby may take it, so no acknowledged write is
// lost. It returns once the new leader commits with a synchronous standby.
// A switchover Patroni or the engine refuses is a *cluster.RefusedError.
func (e *Engine) Switchover(ctx context.Context, clusterName, node string) (cluster.Outcome, error) {
	s, ok := e.spec(clusterName)
	if !ok {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "switchover", Reason: fmt.Sprintf("there is no cluster %q", clusterName)}
	}
	if node != "" && e.agent(clusterName, node) == nil {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "switchover", Reason: fmt.Sprintf("%s is not a node of cluster %s", node, clusterName)}
	}
	start := time.Now()
	st, client, err := e.clusterState(ctx, s)
	if err != nil {
		return cluster.Outcome{}, fmt.Errorf("switchover: %w", err)
	}
	old, ok := st.Leader()
	if !ok {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "switchover", Reason: fmt.Sprintf("cluster %s has %v", clusterName, errNoLeader)}
	}
	if node == old.Name {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "switchover", Reason: fmt.Sprintf("%s is already the primary of %s", node, clusterName)}
	}
	// Patroni names the synchronous standby in etcd a loop or two after
	// PostgreSQL has one (after a restart, say); it refuses a switchover
	// until then, so give it that long.
	_ = e.poll(ctx, time.Duration(3*e.timing.LoopWait+5)*time.Second, func() error {
		if st, _, err := e.clusterState(ctx, s); err == nil {
			if _, ok := st.SyncStandby(); ok {
				return nil
			}
		}
		return fmt.Errorf("no synchronous standby in etcd yet")
	})
	if err := client.Switchover(ctx, old.Name, node); err != nil {
		return cluster.Outcome{}, &cluster.RefusedError{Op: "switchover", Reason: err.Error()}
	}
	promoted := time.Since(start)
	var newLeader Member
	var lsn pglsn.LSN
	var timeline int
	err = e.poll(ctx, 2*time.Minute, func() error {
		st, _, err := e.clusterState(ctx, s)
		if err != nil {
			return err
		}
		l, ok := st.Leader()
		if !ok || l.Name == old.Name {
			return fmt.Errorf("%s has no new leader yet", clusterName)
		}
		n, _ := e.nodeSpec(l.Name)
		o := e.observeNode(ctx, n)
		if o.err != nil || o.inRecovery {
			return fmt.Errorf("new leader %s is not primary yet (%v)", l.Name, o.err)
		}
		if err := commitCheck(ctx, e.dsn(n, "", true)); err != nil {
			return fmt.Errorf("new leader %s does not commit yet: %w", l.Name, err)
		}
		newLeader, lsn, timeline = l, o.lsn, o.timeline
		return nil
	})
	if err != nil {
		return cluster.Outcome{}, fmt.Errorf("switchover %s: %w", clusterName, err)
	}
	e.noteLeader(clusterName, newLeader.Name)
	total := time.Since(start)
	rec := cluster.FailoverRecord{ID: randomHex(4), Kind: "switchover", At: start, OldPrimary: old.Name,
		NewPrimary: newLeader.Name, LSN: lsn, Timeline: timeline,
		PromotionMS: promoted.Milliseconds(), TotalMS: total.Milliseconds(),
		Reason: "switchover through Patroni's REST API; Patroni hands the role to the synchronous standby"}
	e.mu.Lock()
	e.st.Switchovers = append(e.st.Switchovers, switchoverLog{Cluster: clusterName, Timeline: rec.Timeline,
		Record: switchoverRecordFields{ID: rec.ID, At: rec.At, PromotionMS: rec.PromotionMS, TotalMS: rec.TotalMS}})
	if n := len(e.st.Switchovers); n > maxSwitchoverLog {
		e.st.Switchovers = e.st.Switchovers[n-maxSwitchoverLog:]
	}
	if err := saveState(e.dir, e.st); err != nil {
		e.log.Warn("save patroni state", "err", err)
	}
	e.mu.Unlock()
	e.log.Info("switchover", "cluster", clusterName, "old", old.Name, "new", newLeader.Name, "ms", total.Milliseconds())
	return cluster.Outcome{
		Message: fmt.Sprintf("switchover: %s -> %s at %s in %d ms (Patroni switched in %d ms)",
			old.Name, newLeader.Name, lsn, total.Milliseconds(), promoted.Milliseconds()),
		Record: &rec,
	}, nil
}
