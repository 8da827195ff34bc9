package patroni

import (
	"context"
	"slices"
	"time"

	"socnet/internal/pgnode"
	"socnet/internal/stack"
)

// superviseInterval is how often Supervise looks at etcd, the agents and
// the synchronous standbys.
const superviseInterval = time.Second

// Supervise keeps etcd and the agents running until ctx ends, and keeps a
// synchronous standby available (NoSyncTags). Patroni itself fails over.
//
// A dead etcd is restarted at once. A dead agent whose PostgreSQL still
// runs (the agent alone crashed) is restarted at once: it takes its
// PostgreSQL over, and keeps the leader key if it held it. A dead agent
// whose PostgreSQL died too is a lost host: it is restarted (the host
// returns) once the cluster has another leader or after two TTLs, so that a
// quick local restart never stands in for the failover a lost host needs.
//
// Beside it, the operator's commands are served on the home's control
// socket (stack.ServeControl).
func (e *Engine) Supervise(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	controlErr := make(chan error, 1)
	go func() {
		err := stack.ServeControl(ctx, e.cfg.Home.Control(), e)
		if err != nil && ctx.Err() == nil {
			e.log.Error("control socket stopped", "err", err)
		} else {
			err = nil
		}
		controlErr <- err
	}()
	defer func() {
		cancel()
		err = <-controlErr
	}()
	tick := time.NewTicker(superviseInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		e.mu.Lock()
		stopping := e.stopping
		e.mu.Unlock()
		if stopping {
			return nil
		}
		e.superviseEtcd(ctx)
		for _, s := range e.specs {
			leader := e.observedLeader(ctx, s)
			for _, n := range s.Nodes {
				e.superviseAgent(n.Name, leader)
			}
			e.guardSync(ctx, s, leader)
		}
	}
}

func (e *Engine) superviseEtcd(ctx context.Context) {
	e.mu.Lock()
	procs := slices.Clone(e.etcdProcs)
	e.mu.Unlock()
	for i, p := range procs {
		if p == nil {
			continue
		}
		select {
		case <-p.Done():
		default:
			continue
		}
		e.log.Error("etcd exited: restarting it", "member", p.Name, "err", p.err)
		np, err := StartEtcd(ctx, e.log, e.etcd[i])
		if err != nil {
			e.log.Error("restart etcd", "member", p.Name, "err", err)
			continue
		}
		e.mu.Lock()
		if e.stopping || i >= len(e.etcdProcs) {
			e.mu.Unlock()
			_ = np.Stop(10 * time.Second)
			return
		}
		e.etcdProcs[i] = np
		e.mu.Unlock()
	}
}

// observedLeader is the cluster's leader as its agents report it, "" when
// none or when no agent answers; it is recorded for the next resume.
func (e *Engine) observedLeader(ctx context.Context, s Spec) string {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, _, err := e.clusterState(qctx, s)
	if err != nil {
		return ""
	}
	l, ok := st.Leader()
	if !ok {
		return ""
	}
	e.noteLeader(s.Cluster, l.Name)
	return l.Name
}

// superviseAgent restarts node's dead agent when its time has come.
func (e *Engine) superviseAgent(node, leader string) {
	e.mu.Lock()
	a := e.agents[node]
	p := a.proc
	if p == nil || e.stopping {
		e.mu.Unlock()
		return
	}
	select {
	case <-p.Done():
	default:
		e.mu.Unlock()
		return
	}
	first := a.diedAt.IsZero()
	if first {
		a.diedAt = time.Now()
	}
	died, held := a.diedAt, a.held
	e.mu.Unlock()
	pgAlive := pgnode.RunningPostmaster(a.spec.DataDir()) > 0
	if first {
		e.log.Error("patroni agent exited", "node", node, "err", p.err, "postgres_running", pgAlive)
	}
	if held {
		return
	}
	lease := time.Duration(2*e.timing.TTL) * time.Second
	if !pgAlive && (leader == "" || leader == node) && time.Since(died) < lease {
		return // a lost host: wait for the failover before it returns
	}
	e.mu.Lock()
	a.restarts++
	restarts := a.restarts
	e.mu.Unlock()
	e.log.Info("restarting patroni agent", "node", node, "down_for", time.Since(died).Round(time.Millisecond), "restarts", restarts)
	if err := e.startAgent(node); err != nil {
		e.log.Error("restart patroni agent", "node", node, "err", err)
	}
}

// guardSync applies NoSyncTags to the cluster's designated asynchronous
// nodes: a changed tag is written to the node's patroni.yml and the agent
// reloads it (POST /reload); Patroni then picks the synchronous standby.
func (e *Engine) guardSync(ctx context.Context, s Spec, leader string) {
	var async []string
	for _, n := range s.Nodes {
		if e.agents[n.Name].designatedAsync {
			async = append(async, n.Name)
		}
	}
	if len(async) == 0 || leader == "" {
		return
	}
	ln, _ := e.nodeSpec(leader)
	o := e.observeNode(ctx, ln)
	if o.err != nil || o.inRecovery {
		return
	}
	v := SyncView{Leader: leader, Async: async}
	for name, w := range o.repl {
		if w.State == "streaming" {
			v.Streaming = append(v.Streaming, name)
		}
	}
	grace := e.releaseGrace()
	for node, nosync := range NoSyncTags(v) {
		e.mu.Lock()
		a := e.agents[node]
		release := !nosync && a.cfg.Tags.NoSync
		if !release {
			a.releaseWanted = time.Time{}
		} else if a.releaseWanted.IsZero() {
			a.releaseWanted = time.Now()
		}
		wanted := a.releaseWanted
		e.mu.Unlock()
		if release && time.Since(wanted) < grace {
			continue
		}
		e.setNoSync(ctx, node, nosync)
	}
}

// releaseGrace is how long NoSyncTags must keep asking for a release
// before it is applied: a leader restarted in place, or one just switched
// to, has no streaming standby for a moment, and releasing then would only
// move the synchronous role back and forth. Meanwhile commits still need a
// standby (Patroni's '*'), so the wait costs no acknowledged write.
func (e *Engine) releaseGrace() time.Duration {
	return time.Duration(2*e.timing.LoopWait)*time.Second + 3*time.Second
}

// setNoSync rewrites node's nosync tag and has its agent reload it.
func (e *Engine) setNoSync(ctx context.Context, node string, nosync bool) {
	e.mu.Lock()
	a := e.agents[node]
	if a.cfg.Tags.NoSync == nosync {
		e.mu.Unlock()
		return
	}
	a.cfg.Tags.NoSync = nosync
	cfg, p := a.cfg, a.proc
	e.mu.Unlock()
	if nosync {
		e.log.Info("restoring the asynchronous node's nosync tag: another standby can be synchronous", "node", node)
	} else {
		e.log.Warn("releasing the asynchronous node's nosync tag: it is the only standby left to be synchronous", "node", node)
	}
	if err := WriteConfig(a.spec.ConfigPath(), cfg); err != nil {
		e.log.Error("write patroni config", "node", node, "err", err)
		return
	}
	if err := pgnode.ChownAll(a.spec.ConfigPath(), e.acct); err != nil {
		e.log.Error("write patroni config", "node", node, "err", err)
		return
	}
	if p == nil {
		return // the next start reads it
	}
	select {
	case <-p.Done():
		return
	default:
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := e.client(a.spec).Reload(rctx); err != nil {
		e.log.Error("reload patroni config", "node", node, "err", err)
		// Try again on the next round.
		e.mu.Lock()
		a.cfg.Tags.NoSync = !nosync
		e.mu.Unlock()
	}
}
