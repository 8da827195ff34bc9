package dbroute

import (
	"context"
	"time"
)

// maxHistory bounds the primary position samples kept.
const maxHistory = 512

// posSample says that every write the primary acknowledged before at is at
// or below pos: at is when the probe that read pg_current_wal_lsn() was
// sent, and a commit is acknowledged only once its record is written.
type posSample struct {
	at  time.Time
	pos lsn
}

// watch probes n every HealthInterval, and at once when kicked (but not more
// often than a quarter of the interval), until the DB closes.
func (db *DB) watch(n *node) {
	defer db.wg.Done()
	defer n.closeProbe()
	tick := time.NewTicker(db.cfg.HealthInterval)
	defer tick.Stop()
	minGap := db.cfg.HealthInterval / 4
	for {
		started := time.Now()
		db.probe(n)
		n.probes.Add(1)
		n.probedOnce.Do(func() { close(n.probed) })
		select {
		case <-db.ctx.Done():
			return
		case <-tick.C:
		case <-n.kick:
			wait := time.NewTimer(time.Until(started.Add(minGap)))
			select {
			case <-db.ctx.Done():
				wait.Stop()
				return
			case <-wait.C:
			}
		}
	}
}

// probe asks n how it is and updates the routing state.
func (db *DB) probe(n *node) {
	ctx, cancel := context.WithTimeout(db.ctx, db.cfg.HealthTimeout)
	defer cancel()
	sent := time.Now()
	res, err := n.ask(ctx)
	recv := time.Now()
	if db.ctx.Err() != nil {
		return
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	prev := n.st
	if err != nil {
		n.st.reachable = false
		n.st.checkedAt = recv
		n.st.err = err.Error()
		if prev.reachable || prev.checkedAt.IsZero() {
			db.log.Warn("database node unreachable", "db", db.cfg.Name, "node", n.name, "err", err)
		}
		if prev.reachable {
			// Its pooled connections are dead or about to be.
			n.pool.Reset()
		}
	} else {
		st := nodeState{
			reachable:  true,
			inRecovery: res.inRecovery,
			timeline:   res.timeline,
			pos:        res.pos,
			checkedAt:  recv,
			okAt:       recv,
			suspectAt:  prev.suspectAt,
		}
		if !st.suspectAt.IsZero() && sent.After(st.suspectAt) {
			st.suspectAt = time.Time{}
		}
		if res.inRecovery {
			db.replicaFreshness(&st, prev)
		}
		n.st = st
		switch {
		case !prev.reachable:
			db.log.Info("database node reachable", "db", db.cfg.Name, "node", n.name, "role", roleWord(res.inRecovery))
		case prev.inRecovery != res.inRecovery:
			db.log.Info("database node changed role", "db", db.cfg.Name, "node", n.name, "role", roleWord(res.inRecovery))
			if res.inRecovery {
				// A demoted primary: no session may keep writing there.
				n.pool.Reset()
			}
		}
	}
	db.elect()
	if n == db.primary {
		db.addSample(posSample{at: sent, pos: n.st.pos})
	}
}

func roleWord(inRecovery bool) string {
	if inRecovery {
		return RoleReplica
	}
	return RolePrimary
}

// replicaFreshness sets st.freshAt and st.lagBytes of a replica that has
// just answered a probe: the time of the newest primary sample at or below
// its replay position, or the freshAt it had, which still holds since
// replay only moves forward (unless the node was down, changed role or
// went back, as after a restart). While no primary is known no sample is
// added, so freshAt stops where the last probe of the primary left it: the
// replicas age out of the rotation MaxReplicaLag after it, since the primary
// may have acknowledged writes after it that no replica has. Caller holds
// db.mu.
func (db *DB) replicaFreshness(st *nodeState, prev nodeState) {
	if prev.reachable && prev.inRecovery && st.pos >= prev.pos {
		st.freshAt = prev.freshAt
	}
	if st.pos == 0 {
		// The replay position is hidden: nothing bounds the staleness.
		st.freshAt = time.Time{}
		return
	}
	for i := len(db.history) - 1; i >= 0; i-- {
		if s := db.history[i]; s.pos <= st.pos {
			if s.at.After(st.freshAt) {
				st.freshAt = s.at
			}
			break
		}
	}
	if n := len(db.history); n > 0 && db.history[n-1].pos > st.pos {
		st.lagBytes = int64(db.history[n-1].pos - st.pos)
	}
}

// addSample records a position of the primary, dropping samples older than
// any replica read may be, and makes every replica whose replay position, as
// last probed, has reached it fresh as of the sample. Caller holds db.mu.
func (db *DB) addSample(s posSample) {
	window := max(10*time.Second, 3*db.cfg.MaxReplicaLag)
	drop := 0
	for drop < len(db.history) && (s.at.Sub(db.history[drop].at) > window || len(db.history)-drop >= maxHistory) {
		drop++
	}
	db.history = append(db.history[drop:], s)
	if s.pos == 0 {
		return
	}
	for _, n := range db.nodes {
		st := &n.st
		if st.reachable && st.inRecovery && st.pos >= s.pos {
			if s.at.After(st.freshAt) {
				st.freshAt = s.at
			}
			st.lagBytes = 0
		}
	}
}

// elect picks the primary among the nodes that answer and are not in
// recovery: the highest timeline wins, and on a tie the current primary
// stays, so that two nodes claiming the role (a switchover in progress)
// never make writes flap. Caller holds db.mu.
func (db *DB) elect() {
	var best *node
	claims := 0
	for _, c := range db.nodes {
		if !c.st.reachable || c.st.inRecovery {
			continue
		}
		claims++
		if best == nil || c.st.timeline > best.st.timeline || (c.st.timeline == best.st.timeline && c == db.primary) {
			best = c
		}
	}
	if claims > 1 && !db.splitBrain {
		db.log.Warn("more than one database node claims to be primary; writing to the highest timeline only",
			"db", db.cfg.Name, "chosen", best.name, "timeline", best.st.timeline)
	}
	db.splitBrain = claims > 1
	if best == db.primary {
		return
	}
	old := db.primary
	db.primary = best
	if best == nil {
		db.log.Warn("no primary database reachable", "db", db.cfg.Name, "last", old.name)
		return
	}
	if prev := db.lastPrimary; prev != nil && prev != best {
		// Writes still waiting on the previous primary (cut off, or
		// demoted without closing its connections) end now, in doubt,
		// rather than at WriteTimeout: their callers may retry here.
		prev.abandonWrites(errPrimaryReplaced)
	}
	db.lastPrimary = best
	// What the replicas were fresh of were the writes of another primary
	// (or of this one before a gap in which another may have written).
	db.history = db.history[:0]
	for _, n := range db.nodes {
		n.st.freshAt = time.Time{}
	}
	if old != nil || db.everPrimary {
		db.m.failovers.Inc()
	}
	db.everPrimary = true
	oldName := ""
	if old != nil {
		oldName = old.name
		// Connections to the old primary must not carry another write.
		old.pool.Reset()
	}
	db.log.Info("primary database found", "db", db.cfg.Name, "node", best.name, "timeline", best.st.timeline, "previous", oldName)
}

// fitReplica reports whether n may serve replica reads now: among other
// things, every write acknowledged more than MaxReplicaLag ago must be
// replayed there. Caller holds db.mu (read or write).
func (db *DB) fitReplica(n *node, now time.Time) bool {
	st := &n.st
	return st.reachable && st.inRecovery && st.suspectAt.IsZero() &&
		now.Sub(st.okAt) <= db.staleAfter &&
		!st.freshAt.IsZero() && now.Sub(st.freshAt) <= db.cfg.MaxReplicaLag
}

// replicaLag is how old a write a read on replica n may miss at now: now -
// freshAt; ok is false when nothing bounds it. Caller holds db.mu.
func replicaLag(n *node, now time.Time) (lag time.Duration, ok bool) {
	if n.st.freshAt.IsZero() {
		return 0, false
	}
	return max(now.Sub(n.st.freshAt), 0), true
}

// kickAll asks every node for a probe now.
func (db *DB) kickAll() {
	for _, n := range db.nodes {
		n.kickNow()
	}
}
