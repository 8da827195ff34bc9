package cluster

import (
	"context"
	"fmt"
	"slices"
	"time"

	"socnet/internal/pgnode"
)

// failoverInput describes a failover about to happen.
type failoverInput struct {
	old     string    // the dead primary
	trouble time.Time // first sign of trouble
	cause   string    // why the primary is considered dead
	kind    string    // failover (default) or promote
	target  string    // operator's choice, for promote
	force   bool
}

// failoverLocked fences the dead primary, decides from fresh observations
// and carries the decision out. c.op is held. A decision to wait returns a
// *RefusedError carrying the reason.
func (c *Cluster) failoverLocked(ctx context.Context, in failoverInput) (Outcome, error) {
	if in.kind == "" {
		in.kind = "failover"
	}
	declared := c.opts.Now()
	st := c.snapshot()
	log := c.log.With("old_primary", in.old)
	if !st.node(in.old).NeedsRejoin {
		log.Warn("primary is dead; fencing it", "cause", in.cause,
			"detection_ms", declared.Sub(in.trouble).Milliseconds())
	}
	// 1. Fence: the old primary never runs as a primary again.
	if err := c.fence(in.old); err != nil {
		return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
	}

	// 2. Decide, after the standbys flushed what they had received.
	obs := c.observe(ctx, in.old)
	obs.ID, obs.Target, obs.Force = c.opts.NewID(), in.target, in.force
	d := Decide(obs)
	c.mu.Lock()
	repeated := d.Action == ActionWait && d.Reason == c.waiting
	c.mu.Unlock()
	if !repeated {
		logDecision(log, obs, d)
	}
	for _, f := range d.Fence {
		if err := c.fence(f); err != nil {
			return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
		}
	}
	if d.Action == ActionWait {
		c.mu.Lock()
		c.waiting = d.Reason
		c.mu.Unlock()
		return Outcome{}, &RefusedError{Op: in.kind, Reason: d.Reason}
	}

	// 3. Promote (or adopt) and make it the primary of record.
	newPrimary := d.Primary
	others := st.others(newPrimary)
	syncNames := SyncNames("ANY", others)
	if d.Action == ActionPromote {
		if err := c.update(func(st *state) { st.Promoting = newPrimary }); err != nil {
			return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
		}
		// Set on the standby first, so that the list is right the moment
		// it accepts writes.
		if err := c.setSyncNames(ctx, newPrimary, syncNames); err != nil {
			return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
		}
		t0 := time.Now()
		if err := c.Node(newPrimary).Promote(ctx); err != nil {
			return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
		}
		log.Info("replica promoted", "node", newPrimary, "lsn", d.PrimaryLSN, "pg_promote_ms", time.Since(t0).Milliseconds())
	} else if err := c.setSyncNames(ctx, newPrimary, syncNames); err != nil {
		return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
	}
	rec := FailoverRecord{ID: d.ID, Kind: in.kind, At: declared, OldPrimary: in.old, NewPrimary: newPrimary,
		LSN: d.PrimaryLSN, DetectionMS: declared.Sub(in.trouble).Milliseconds(), MayLoseBytes: d.MayLoseBytes,
		Reason: in.cause + "; " + d.Reason}
	rec, err := c.installPrimary(ctx, rec, syncNames, d.Rejoin)
	if err != nil {
		return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
	}
	rec.PromotionMS = c.opts.Now().Sub(declared).Milliseconds()
	log.Info("new primary accepts writes", "node", newPrimary, "timeline", rec.Timeline,
		"synchronous_standby_names", syncNames, "promotion_ms", rec.PromotionMS)

	// 4. Re-point the other replicas; a timeline switch is followed by
	// itself (recovery_target_timeline = latest).
	c.repoint(ctx, newPrimary, d.Follow)
	rec.TotalMS = c.opts.Now().Sub(in.trouble).Milliseconds()
	if err := c.record(rec); err != nil {
		return Outcome{}, fmt.Errorf("%s: %w", in.kind, err)
	}
	log.Info("failed over", "id", rec.ID, "new_primary", newPrimary, "lsn", rec.LSN,
		"detection_ms", rec.DetectionMS, "promotion_ms", rec.PromotionMS, "total_ms", rec.TotalMS)

	// 5. Rejoin the old primary (and stale nodes) as replicas.
	out := Outcome{Message: fmt.Sprintf("%s: %s -> %s at %s in %d ms (detection %d ms, promotion %d ms)",
		in.kind, in.old, newPrimary, rec.LSN, rec.TotalMS, rec.DetectionMS, rec.PromotionMS)}
	if d.MayLoseBytes > 0 {
		out.Message += fmt.Sprintf("; up to %d bytes of WAL may be lost", d.MayLoseBytes)
	}
	for _, name := range d.Rejoin {
		t0 := c.opts.Now()
		if _, err := c.rejoinLocked(ctx, name); err != nil {
			log.Error("rejoin failed; the supervisor retries", "node", name, "err", err)
			out.Message += fmt.Sprintf("; %s has not rejoined yet: %v", name, err)
			continue
		}
		if name == in.old {
			rec.RejoinMS = c.opts.Now().Sub(t0).Milliseconds()
			if err := c.record(rec); err != nil {
				return out, fmt.Errorf("%s: %w", in.kind, err)
			}
			out.Message += fmt.Sprintf("; %s rejoined in %d ms", name, rec.RejoinMS)
		}
	}
	out.Record = &rec
	return out, nil
}

// installPrimary makes newPrimary (already promoted) the primary of record:
// slots for the other nodes, roles and timeline persisted, the history entry
// added. Nodes in rejoin are marked so.
func (c *Cluster) installPrimary(ctx context.Context, rec FailoverRecord, syncNames string, rejoin []string) (FailoverRecord, error) {
	st := c.snapshot()
	if err := c.ensureSlots(ctx, rec.NewPrimary, st.others(rec.NewPrimary)); err != nil {
		return rec, err
	}
	// The kept connection may date from before the promotion: a failed
	// probe drops it, the next one reconnects.
	var p probe
	for range 3 {
		if p = c.probers[rec.NewPrimary].probe(ctx, 5*time.Second); p.OK {
			break
		}
	}
	if !p.OK {
		return rec, fmt.Errorf("new primary %s: %w", rec.NewPrimary, p.Err)
	}
	if p.InRecovery {
		return rec, fmt.Errorf("new primary %s is still in recovery", rec.NewPrimary)
	}
	rec.Timeline = p.Timeline
	err := c.update(func(st *state) {
		for i := range st.Nodes {
			n := &st.Nodes[i]
			switch {
			case n.Name == rec.NewPrimary:
				n.Role, n.Timeline, n.NeedsRejoin = RolePrimary, p.Timeline, false
			default:
				n.Role = RoleReplica
				if slices.Contains(rejoin, n.Name) {
					n.NeedsRejoin = true
				}
			}
		}
		st.Promoting = ""
		st.SyncNames = syncNames
		st.Failovers = append(st.Failovers, rec)
	})
	c.mu.Lock()
	c.gen++
	c.view = nil
	c.waiting = ""
	c.mu.Unlock()
	return rec, err
}

// record replaces the history entry with rec's ID.
func (c *Cluster) record(rec FailoverRecord) error {
	return c.update(func(st *state) {
		for i := range st.Failovers {
			if st.Failovers[i].ID == rec.ID {
				st.Failovers[i] = rec
			}
		}
	})
}

// repoint makes the given replicas follow primary. A running replica is
// re-pointed with ALTER SYSTEM and a reload; a stopped one at its next start
// (the supervisor starts it). Errors are logged: the supervisor rejoins a
// replica that does not stream.
func (c *Cluster) repoint(ctx context.Context, primary string, nodes []string) {
	for _, name := range nodes {
		t0 := time.Now()
		if err := c.Node(name).Follow(ctx, c.replConnInfo(primary, name), AppName(name)); err != nil {
			c.log.Error("re-point replica", "node", name, "primary", primary, "err", err)
			continue
		}
		c.log.Info("replica follows the new primary", "node", name, "primary", primary, "ms", time.Since(t0).Milliseconds())
	}
}

// fence makes sure node does not run as a primary: it is killed if it runs
// and marked to rejoin before it may run again.
func (c *Cluster) fence(node string) error {
	if st := c.snapshot(); !st.node(node).NeedsRejoin {
		if err := c.update(func(st *state) { st.node(node).NeedsRejoin = true }); err != nil {
			return err
		}
	}
	if c.nodePid(node) != 0 {
		if err := c.killNode(node); err != nil {
			return fmt.Errorf("fence %s: %w", node, err)
		}
		c.log.Warn("fenced: killed", "node", node)
	}
	c.probers[node].close()
	return nil
}

// observe builds the Observation of a cluster whose primary old is dead. It
// first lets the standbys' WAL receivers flush what they hold: it probes
// until no receive or replay LSN moves between two probes, for at most
// DrainWait (5 s when the old primary was never observed).
func (c *Cluster) observe(ctx context.Context, old string) Observation {
	st := c.snapshot()
	c.mu.Lock()
	view := c.view
	c.mu.Unlock()
	if view != nil && view.Node != old {
		view = nil
	}

	// The old primary was just fenced: on a host cut off, asking it would
	// cost every probe round its timeout.
	probes := c.probeRunning(ctx, true)
	drain := c.opts.DrainWait
	if view == nil {
		// Right after a start the standbys may still be replaying the WAL
		// they hold (their receive LSN is unknown then): give them longer.
		drain = max(drain, 5*time.Second)
	}
	deadline := time.Now().Add(drain)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
		next := c.probeRunning(ctx, true)
		moved := false
		for name, p := range next {
			if q := probes[name]; p.OK != q.OK || p.Receive != q.Receive || p.Replay != q.Replay {
				moved = true
			}
		}
		probes = next
		if !moved || ctx.Err() != nil {
			break
		}
	}

	obs := Observation{Now: c.opts.Now(), OldPrimary: old, Timeline: st.node(old).Timeline}
	if view != nil {
		obs.PrimaryObserved = true
		obs.PrimaryFlushLSN = view.Flush
		obs.AckedLSN = view.ackedLSN()
		if view.Timeline > 0 {
			obs.Timeline = view.Timeline
		}
	}
	for _, n := range st.Nodes {
		p := probes[n.Name]
		no := NodeObservation{Name: n.Name, Reachable: p.OK, InRecovery: p.InRecovery, Timeline: p.Timeline,
			ReceiveLSN: p.Receive, ReplayLSN: p.Replay, FlushLSN: p.Flush,
			SyncListed: n.Name != old && syncListed(st.SyncNames, n.Name)}
		if view != nil {
			if r, ok := view.Repl[AppName(n.Name)]; ok && r.State == "streaming" {
				no.LastSyncState, no.LastFlushLSN = r.SyncState, r.Flush
			}
		}
		obs.Nodes = append(obs.Nodes, no)
	}
	return obs
}

func logDecision(log interface {
	Info(string, ...any)
	Warn(string, ...any)
}, obs Observation, d Decision) {
	attrs := []any{"id", d.ID, "action", d.Action, "primary", d.Primary, "lsn", d.PrimaryLSN,
		"acked_lsn", obs.AckedLSN, "last_primary_flush", obs.PrimaryFlushLSN, "reason", d.Reason}
	for _, n := range obs.Nodes {
		attrs = append(attrs, n.Name, fmt.Sprintf("reachable=%t recovery=%t tl=%d receive=%s replay=%s last=%q",
			n.Reachable, n.InRecovery, n.Timeline, n.ReceiveLSN, n.ReplayLSN, n.LastSyncState))
	}
	if d.Action == ActionWait {
		log.Warn("failover decision", attrs...)
		return
	}
	log.Info("failover decision", attrs...)
}

// rejoinLocked rewinds node against the primary (or, when that fails or the
// rewound node does not start, rebuilds it from a fresh base backup), makes
// it follow the primary and starts it. c.op is held.
func (c *Cluster) rejoinLocked(ctx context.Context, node string) (Outcome, error) {
	st := c.snapshot()
	ns := st.node(node)
	prim := st.primary()
	switch {
	case ns == nil:
		return Outcome{}, refuse("rejoin", "%s is not a node of cluster %s", node, c.Name())
	case node == prim.Name:
		return Outcome{}, refuse("rejoin", "%s is the primary of %s", node, c.Name())
	case prim.NeedsRejoin:
		return Outcome{}, refuse("rejoin", "the primary %s is down and a failover is pending", prim.Name)
	}
	start := time.Now()
	log := c.log.With("node", node, "primary", prim.Name)
	log.Info("rejoining")
	if !ns.NeedsRejoin {
		if err := c.update(func(st *state) { st.node(node).NeedsRejoin = true }); err != nil {
			return Outcome{}, err
		}
	}
	n := c.Node(node)
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := c.stopNode(stopCtx, node)
	cancel()
	if err != nil {
		return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
	}
	c.probers[node].close()
	if err := c.ensureSlots(ctx, prim.Name, []string{node}); err != nil {
		return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
	}
	how := "rewound"
	rebuild := func() error {
		how = "rebuilt from a base backup"
		if err := emptyDir(n.Config().DataDir); err != nil {
			return err
		}
		if err := n.BaseBackup(ctx, c.replConnInfo(prim.Name, node), AppName(node)); err != nil {
			return err
		}
		return n.Follow(ctx, c.replConnInfo(prim.Name, node), AppName(node))
	}
	// A node on a host cut off from the primary can be neither rewound
	// nor rebuilt: keep its data for a rewind once the net is back, rather
	// than let a failed rewind lead to a rebuild that empties it first.
	primCfg := c.Node(prim.Name).Config()
	if err := n.Reaches(ctx, primCfg.Host, primCfg.Port); err != nil {
		return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
	}
	if err := n.Rewind(ctx, c.Node(prim.Name).DSN("")); err != nil {
		log.Warn("rewind failed; rebuilding from a base backup", "err", err)
		if err := rebuild(); err != nil {
			return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
		}
	} else if err := n.Follow(ctx, c.replConnInfo(prim.Name, node), AppName(node)); err != nil {
		return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
	}
	if err := c.startNode(ctx, node); err != nil {
		if how != "rewound" {
			return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
		}
		// A rewind mends a divergence, not a node that cannot start (a
		// setting of its own it cannot run with): a fresh copy does.
		log.Warn("rewound node does not start; rebuilding from a base backup", "err", err)
		if err := rebuild(); err != nil {
			return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
		}
		if err := c.startNode(ctx, node); err != nil {
			return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
		}
	}
	if err := c.dropInactiveSlots(ctx, node); err != nil {
		log.Warn("drop stale slots", "err", err)
	}
	if err := c.update(func(st *state) {
		n := st.node(node)
		n.Role, n.NeedsRejoin, n.Initialized, n.Slot = RoleReplica, false, true, AppName(node)
		n.Timeline = st.primary().Timeline
	}); err != nil {
		return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
	}
	c.bump()
	if err := c.waitStreaming(ctx, prim.Name, []string{node}, 30*time.Second); err != nil {
		return Outcome{}, fmt.Errorf("rejoin %s: %w", node, err)
	}
	log.Info("rejoined", "how", how, "ms", time.Since(start).Milliseconds())
	if err := c.restoreSyncNamesLocked(ctx); err != nil {
		log.Warn("restore synchronous_standby_names", "err", err)
	}
	return Outcome{Message: fmt.Sprintf("%s %s and streaming from %s in %d ms", node, how, prim.Name,
		time.Since(start).Milliseconds())}, nil
}

// desiredSyncNames is the list a primary keeps while all its replicas
// stream: FIRST 1 over the other nodes in priority order, so that exactly
// one replica is synchronous and the supervisor knows which.
func desiredSyncNames(st state) string {
	return SyncNames("FIRST", st.others(st.primary().Name))
}

// restoreSyncNamesLocked sets the FIRST 1 list on the primary once every
// replica streams (after a failover the list is ANY 1 over the others, as
// the manual procedure did).
func (c *Cluster) restoreSyncNamesLocked(ctx context.Context) error {
	st := c.snapshot()
	want := desiredSyncNames(st)
	if st.SyncNames == want {
		return nil
	}
	prim := st.primary().Name
	rows, err := c.replicationRows(ctx, prim)
	if err != nil {
		return err
	}
	for _, n := range st.others(prim) {
		if rows[AppName(n)].State != "streaming" {
			return nil
		}
	}
	if err := c.setSyncNames(ctx, prim, want); err != nil {
		return err
	}
	c.log.Info("synchronous_standby_names restored", "primary", prim, "value", want)
	return c.update(func(st *state) { st.SyncNames = want })
}

// Rejoin rewinds node against the current primary (falling back to a fresh
// base backup) and makes it stream from it again. It is refused for the
// primary and while no primary runs.
func (c *Cluster) Rejoin(ctx context.Context, node string) (Outcome, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if err := c.checkRunnable("rejoin"); err != nil {
		return Outcome{}, err
	}
	if err := c.checkPrimaryAnswers(ctx, "rejoin"); err != nil {
		return Outcome{}, err
	}
	return c.rejoinLocked(ctx, node)
}

// Promote promotes target because an operator asks. While the primary
// answers, it is refused (use Switchover) unless force, which stops the
// primary first. When target may lack acknowledged commits it is refused
// with what may be lost, unless force.
func (c *Cluster) Promote(ctx context.Context, target string, force bool) (Outcome, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if err := c.checkRunnable("promote"); err != nil {
		return Outcome{}, err
	}
	st := c.snapshot()
	prim := st.primary().Name
	switch {
	case st.node(target) == nil:
		return Outcome{}, refuse("promote", "%s is not a node of cluster %s", target, c.Name())
	case target == prim && !st.primary().NeedsRejoin:
		return Outcome{}, refuse("promote", "%s is already primary", target)
	}
	trouble := c.opts.Now()
	cause := "promotion asked by an operator"
	if p := c.probers[prim].probe(ctx, c.opts.ProbeTimeout); p.OK && !p.InRecovery && !st.primary().NeedsRejoin {
		if !force {
			return Outcome{}, refuse("promote", "%s is the running primary; use switchover for a planned change without loss, or --force to stop %s and promote %s",
				prim, prim, target)
		}
		// A fast shutdown sends the primary's last WAL to the standbys.
		stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := c.stopNode(stopCtx, prim)
		cancel()
		if err != nil {
			return Outcome{}, fmt.Errorf("promote: %w", err)
		}
		cause = "forced promotion asked by an operator; the primary was stopped"
	}
	return c.failoverLocked(ctx, failoverInput{old: prim, trouble: trouble, cause: cause, kind: "promote", target: target, force: force})
}

// checkRunnable refuses operations on a cluster an operator stopped or that
// this process does not run.
func (c *Cluster) checkRunnable(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return refuse(op, "cluster %s is stopped; start it first", c.st.Spec.Name)
	}
	if !c.owned {
		return refuse(op, "cluster %s is not running in this process; start it first", c.st.Spec.Name)
	}
	return nil
}

// checkPrimaryAnswers refuses when the primary does not answer as a primary.
func (c *Cluster) checkPrimaryAnswers(ctx context.Context, op string) error {
	st := c.snapshot()
	prim := st.primary()
	if prim.NeedsRejoin {
		return refuse(op, "the primary %s is down and a failover is pending", prim.Name)
	}
	p := c.probers[prim.Name].probe(ctx, 2*time.Second)
	switch {
	case !p.OK:
		return refuse(op, "the primary %s does not answer: %s", prim.Name, RedactDSN(errString(p.Err)))
	case p.InRecovery:
		return refuse(op, "the primary %s answers as a standby", prim.Name)
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "no answer"
	}
	return err.Error()
}

// RedactDSN removes passwords from connection strings quoted in s (an
// error's text), for messages that leave the process.
func RedactDSN(s string) string { return pgnode.Redact(s) }
