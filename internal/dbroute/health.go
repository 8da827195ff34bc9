package dbroute

import (
	"context"
	"time"
)

// maxHistory bounds the primary position samples kept for lag estimates.
const maxHistory = 512

// posSample says the primary had written WAL up to pos by time at.
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
			st.lag, st.lagBytes = db.replicaLag(res, sent, recv)
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
		db.addSample(posSample{at: recv, pos: n.st.pos})
	}
	db.updateGauges(n, recv)
}

func roleWord(inRecovery bool) string {
	if inRecovery {
		return RoleReplica
	}
	return RolePrimary
}

// replicaLag estimates a replica's staleness from one probe (sent..recv):
// the larger of the replay-timestamp lag PostgreSQL reports and the age of
// the oldest primary position, sampled before the probe was sent, that the
// replica has not replayed. The second catches a replica whose WAL receiver
// fell behind or disconnected, where everything received is replayed and the
// first says 0. While no primary is known only the first counts: the dead
// primary's last positions may include WAL no replica ever received, and a
// replica is then as fresh as anything that answers. Caller holds db.mu.
func (db *DB) replicaLag(res probeResult, sent, recv time.Time) (time.Duration, int64) {
	lag := res.replayLag
	var lagBytes int64
	if res.pos == 0 || db.primary == nil {
		return lag, 0
	}
	for _, s := range db.history {
		if s.at.After(sent) {
			break
		}
		if s.pos > res.pos {
			lag = max(lag, recv.Sub(s.at))
			break
		}
	}
	if n := len(db.history); n > 0 && db.history[n-1].pos > res.pos {
		lagBytes = int64(db.history[n-1].pos - res.pos)
	}
	return lag, lagBytes
}

// addSample records a primary position, dropping samples older than the
// window lag is measured in. Caller holds db.mu.
func (db *DB) addSample(s posSample) {
	window := max(10*time.Second, 3*db.cfg.MaxReplicaLag)
	drop := 0
	for drop < len(db.history) && (s.at.Sub(db.history[drop].at) > window || len(db.history)-drop >= maxHistory) {
		drop++
	}
	db.history = append(db.history[drop:], s)
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
	db.lastPrimary = best
	db.history = db.history[:0]
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

// updateGauges publishes n's health and lag. Caller holds db.mu.
func (db *DB) updateGauges(n *node, now time.Time) {
	healthy := 0.0
	if n == db.primary || db.fitReplica(n, now) {
		healthy = 1
	}
	db.m.healthy.WithLabelValues(n.name).Set(healthy)
	if n.st.inRecovery {
		db.m.lag.WithLabelValues(n.name).Set(n.st.lag.Seconds())
	} else {
		db.m.lag.WithLabelValues(n.name).Set(0)
	}
}

// fitReplica reports whether n may serve replica reads now. Caller holds
// db.mu (read or write).
func (db *DB) fitReplica(n *node, now time.Time) bool {
	st := &n.st
	return st.reachable && st.inRecovery && st.suspectAt.IsZero() &&
		now.Sub(st.okAt) <= db.staleAfter && st.lag <= db.cfg.MaxReplicaLag
}

// kickAll asks every node for a probe now.
func (db *DB) kickAll() {
	for _, n := range db.nodes {
		n.kickNow()
	}
}
