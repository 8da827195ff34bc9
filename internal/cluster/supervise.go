package cluster

import (
	"context"
	"errors"
	"time"
)

// restartAttempts is how many failed restarts of a replica lead to
// rebuilding it (rewind or base backup).
const restartAttempts = 3

// Supervise watches the nodes until ctx ends, probing each every
// ProbeInterval:
//
//   - The primary is dead when its process exits, or when it has not
//     answered as a primary for DeadAfter. It is then fenced (killed if its
//     process lives) and never started as a primary again; Decide chooses
//     the replica to promote from fresh observations; the new primary gets
//     the slots and synchronous_standby_names = 'ANY 1 (the others)'; the
//     other replicas follow it; the old primary is rewound (or rebuilt) and
//     rejoins as a replica. When Decide refuses (no replica may be promoted
//     without losing acknowledged commits), the supervisor keeps observing
//     and restarting replicas until it can.
//   - A replica whose process exits is restarted; one that cannot be
//     restarted, or runs without streaming for CatchUpTimeout, is rewound
//     (or rebuilt) and started again.
//   - Once every replica streams after a failover, the primary's list is
//     set back to 'FIRST 1 (the others in priority order)'.
//
// Supervise needs the nodes to be children of this process (Up or Start).
// Operators' switchover, promote and rejoin take turns with it.
func (c *Cluster) Supervise(ctx context.Context) error {
	c.mu.Lock()
	owned := c.owned
	c.mu.Unlock()
	if !owned {
		return errors.New("supervise: the cluster's nodes were not started by this process (call Up first)")
	}
	s := &supervisor{c: c, notStreaming: map[string]time.Time{}, restartFails: map[string]int{},
		retryAt: map[string]time.Time{}}
	s.reset(c.generation())
	c.log.Info("supervising", "probe_interval", c.opts.ProbeInterval, "dead_after", c.opts.DeadAfter)
	ticker := time.NewTicker(c.opts.ProbeInterval)
	defer ticker.Stop()
	for {
		exited := s.round(ctx)
		select {
		case <-ctx.Done():
			c.log.Info("supervisor stops")
			return nil
		case <-ticker.C:
		case <-exited:
		}
	}
}

// supervisor is the memory of the supervision loop.
type supervisor struct {
	c            *Cluster
	gen          uint64
	lastOK       time.Time // the primary last answered as a primary
	trouble      time.Time // first failed probe since; zero while healthy
	notStreaming map[string]time.Time
	restartFails map[string]int
	// retryAt delays another rejoin of a node whose rejoin failed.
	retryAt map[string]time.Time
}

func (s *supervisor) reset(gen uint64) {
	s.gen = gen
	s.lastOK, s.trouble = s.c.opts.Now(), time.Time{}
	clear(s.notStreaming)
}

// round probes every node and acts on what it sees. It returns a channel
// that closes when the primary's process exits (nil when none runs), so
// that a crash is acted on at once.
func (s *supervisor) round(ctx context.Context) <-chan struct{} {
	c := s.c
	if c.Stopped() {
		s.reset(c.generation())
		return nil
	}
	if gen := c.generation(); gen != s.gen {
		s.reset(gen)
	}
	gen := s.gen
	st := c.snapshot()
	prim := st.primary()
	pn := c.Node(prim.Name)
	probes := c.probeAll(ctx)
	now := c.opts.Now()

	// Replicas whose process died are restarted at once, even while the
	// primary is down: a pending failover may wait for them.
	for _, n := range st.Nodes {
		if n.Role != RoleReplica || n.NeedsRejoin || c.Node(n.Name).Running() || ctx.Err() != nil {
			continue
		}
		s.withOp(gen, func() { s.restartReplica(ctx, n.Name) })
	}

	p := probes[prim.Name]
	h := PrimaryHealth{Now: now, LastOK: s.lastOK, DeadAfter: c.opts.DeadAfter,
		FailoverPending: prim.NeedsRejoin, Running: pn.Running(), Answered: p.OK, InRecovery: p.InRecovery}
	if p.Err != nil {
		h.ProbeErr = RedactDSN(p.Err.Error())
	}
	verdict, cause := JudgePrimary(h)
	if verdict == PrimaryAlive {
		s.lastOK, s.trouble = now, time.Time{}
		c.setView(gen, primaryView{Node: prim.Name, At: p.At, Flush: p.Flush, Timeline: p.Timeline, Repl: p.Repl})
	} else {
		if s.trouble.IsZero() {
			s.trouble = now
		}
		if verdict == PrimarySuspect {
			return pn.Exited() // not dead yet
		}
		if ctx.Err() == nil {
			s.withOp(gen, func() {
				_, err := c.failoverLocked(ctx, failoverInput{old: prim.Name, trouble: s.trouble, cause: cause})
				if err != nil && !IsRefused(err) {
					c.log.Error("failover failed; retrying", "err", err)
				}
			})
		}
		return nil
	}

	// The primary is healthy: replicas that must rejoin or do not stream.
	allStreaming := true
	for _, n := range st.Nodes {
		if n.Role != RoleReplica || ctx.Err() != nil {
			continue
		}
		if n.NeedsRejoin {
			allStreaming = false
			s.withOp(gen, func() { s.rejoin(ctx, n.Name, "it waits to rejoin") })
			continue
		}
		if r, ok := p.Repl[AppName(n.Name)]; ok && r.State == "streaming" {
			delete(s.notStreaming, n.Name)
			continue
		}
		allStreaming = false
		if !c.Node(n.Name).Running() {
			continue // restarting
		}
		since, seen := s.notStreaming[n.Name]
		if !seen {
			s.notStreaming[n.Name] = now
			continue
		}
		if now.Sub(since) >= c.opts.CatchUpTimeout {
			delete(s.notStreaming, n.Name)
			s.withOp(gen, func() { s.rejoin(ctx, n.Name, "it has not streamed for "+now.Sub(since).Round(time.Second).String()) })
		}
	}
	if allStreaming && st.SyncNames != desiredSyncNames(st) && ctx.Err() == nil {
		s.withOp(gen, func() {
			if err := c.restoreSyncNamesLocked(ctx); err != nil {
				c.log.Warn("restore synchronous_standby_names", "err", err)
			}
		})
	}
	return pn.Exited()
}

// withOp runs fn holding the operation lock, unless an operation changed the
// cluster since the round observed it (the next round looks again).
func (s *supervisor) withOp(gen uint64, fn func()) {
	c := s.c
	c.op.Lock()
	defer c.op.Unlock()
	if c.generation() != gen || c.Stopped() {
		return
	}
	fn()
}

func (s *supervisor) restartReplica(ctx context.Context, name string) {
	c := s.c
	c.log.Warn("replica is down; restarting", "node", name)
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := c.startNode(sctx, name)
	cancel()
	if err == nil {
		delete(s.restartFails, name)
		c.log.Info("replica restarted", "node", name, "ms", time.Since(t0).Milliseconds())
		return
	}
	s.restartFails[name]++
	c.log.Error("restart replica", "node", name, "attempt", s.restartFails[name], "err", err)
	if s.restartFails[name] >= restartAttempts {
		delete(s.restartFails, name)
		if err := c.update(func(st *state) { st.node(name).NeedsRejoin = true }); err != nil {
			c.log.Error("mark replica for rejoin", "node", name, "err", err)
		}
	}
}

// rejoinBackoff is the pause after a failed rejoin before the next try.
const rejoinBackoff = 5 * time.Second

func (s *supervisor) rejoin(ctx context.Context, name, why string) {
	c := s.c
	if time.Now().Before(s.retryAt[name]) {
		return
	}
	c.log.Warn("rejoining replica", "node", name, "why", why)
	out, err := c.rejoinLocked(ctx, name)
	if err != nil {
		s.retryAt[name] = time.Now().Add(rejoinBackoff)
		c.log.Error("rejoin failed; retrying", "node", name, "in", rejoinBackoff, "err", err)
		return
	}
	delete(s.retryAt, name)
	c.log.Info(out.Message)
}
