package cluster

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The values of sync_state in pg_stat_replication.
const (
	SyncStateSync      = "sync"      // the synchronous standby of a FIRST n list
	SyncStatePotential = "potential" // next in a FIRST n list; takes over if the sync one leaves
	SyncStateQuorum    = "quorum"    // a member of an ANY n list
	SyncStateAsync     = "async"     // not in synchronous_standby_names
)

// NodeObservation is what the supervisor knows of one node when the primary
// has died: what the node answers now, and how the old primary last saw it.
type NodeObservation struct {
	Name string
	// Reachable is true when the node answered within the probe timeout.
	Reachable bool
	// InRecovery is pg_is_in_recovery(): true for a standby.
	InRecovery bool
	// Timeline is the newest timeline the node holds WAL or history for;
	// 0 when unknown.
	Timeline int
	// ReceiveLSN is pg_last_wal_receive_lsn(): WAL received and flushed.
	ReceiveLSN LSN
	// ReplayLSN is pg_last_wal_replay_lsn().
	ReplayLSN LSN
	// FlushLSN is pg_current_wal_flush_lsn() of a node not in recovery.
	FlushLSN LSN
	// LastSyncState is the node's sync_state in the old primary's
	// pg_stat_replication at the last observation; "" when it was not
	// streaming then.
	LastSyncState string
	// LastFlushLSN is the node's flush_lsn in that same observation.
	LastFlushLSN LSN
	// SyncListed is true when the old primary's synchronous_standby_names
	// names the node: it may have become the synchronous standby after the
	// last observation, whatever LastSyncState says.
	SyncListed bool
}

// Position is the end of the WAL the node holds: the flush LSN of a primary,
// else the further of the received and the replayed LSN (after a restart a
// standby has replayed WAL it has not received in this run).
func (n NodeObservation) Position() LSN {
	if !n.InRecovery {
		return n.FlushLSN
	}
	return max(n.ReceiveLSN, n.ReplayLSN)
}

// Observation is the input of Decide: the state of every node of a cluster
// whose primary is dead (or, for an operator's promotion, presumed dead).
type Observation struct {
	// ID names the failover in logs and history.
	ID string
	// Now is when the observation was taken.
	Now time.Time
	// OldPrimary is the node that was the primary.
	OldPrimary string
	// Timeline is the old primary's timeline.
	Timeline int
	// PrimaryObserved is true when the supervisor saw the old primary's
	// pg_stat_replication at least once: only then do LastSyncState,
	// LastFlushLSN, PrimaryFlushLSN and AckedLSN mean anything.
	PrimaryObserved bool
	// PrimaryFlushLSN is the old primary's flush LSN at its last observation.
	PrimaryFlushLSN LSN
	// AckedLSN is, at the last observation, the furthest flush_lsn of a
	// standby whose sync_state was sync or quorum: every commit record up to
	// it was (or was about to be) acknowledged to a client.
	AckedLSN LSN
	// Nodes lists every node of the cluster, the old primary included, in
	// priority order (the order of synchronous_standby_names).
	Nodes []NodeObservation
	// Target is the node an operator asked to promote; "" lets Decide choose.
	Target string
	// Force lets an operator promote a node that may lack acknowledged
	// commits. Decide still never promotes an unreachable node, a node on a
	// stale timeline or the old primary.
	Force bool
}

// Action is what a Decision asks the supervisor to do.
type Action string

// The actions of a Decision.
const (
	// ActionPromote: promote Decision.Primary, re-point Follow, rewind Rejoin.
	ActionPromote Action = "promote"
	// ActionAdopt: Decision.Primary already runs as a primary on a newer
	// timeline (a promotion finished before the supervisor stopped);
	// record it and re-point the others.
	ActionAdopt Action = "adopt"
	// ActionWait: no node may be promoted now; Reason says why. The
	// supervisor observes again; an operator may force.
	ActionWait Action = "wait"
)

// Decision is the output of Decide.
type Decision struct {
	// ID and At are the observation's.
	ID string
	At time.Time
	// Action is what to do.
	Action Action
	// Primary is the node to promote or adopt.
	Primary string
	// PrimaryLSN is Primary's WAL position when observed.
	PrimaryLSN LSN
	// Fence lists nodes that run as a primary but must not: stop them now,
	// whatever the action.
	Fence []string
	// Follow lists replicas to re-point at the new primary (running or not).
	Follow []string
	// Rejoin lists nodes that may have diverged from the new primary (the old
	// primary, nodes on a stale timeline): rewind, then follow.
	Rejoin []string
	// MayLoseBytes is, for a forced promotion, how much WAL seen elsewhere
	// (the old primary's last flush LSN, other nodes) the new primary lacks.
	MayLoseBytes int64
	// Reason explains the decision in one sentence for logs and operators.
	Reason string
}

// Decide chooses what to do when the primary of a cluster is dead. It is a
// pure function of its input, so that every rule can be tested in a table.
//
// The rules, in order:
//
//  1. The old primary is never promoted. If it answers as a primary it is
//     fenced (stopped) and rewound later; the same for any other node that
//     runs as a primary on a timeline not newer than the old primary's.
//  2. If another node already runs as a primary on a newer timeline, a
//     promotion finished earlier: it is adopted.
//  3. Candidates are reachable standbys on the newest timeline; a standby on
//     an older timeline has not followed an earlier promotion and is rewound.
//  4. The candidate holding the most WAL (Position) is chosen; on equal WAL
//     the one that was synchronous wins, then the earlier in priority order.
//  5. Without Force, the choice is refused (ActionWait) when it may lack an
//     acknowledged commit:
//     - its WAL ends before AckedLSN (a commit acknowledged by a synchronous
//     standby that is not the candidate), or, for an operator's Target,
//     before another reachable candidate's;
//     - a standby that does not answer may hold such commits when it was a
//     candidate of synchronous_standby_names: sync, quorum or potential at
//     the last observation, or named in the setting (SyncListed); and any
//     standby when the old primary was never observed. The last
//     observation is up to a probe interval old: a potential standby may
//     have become the sync one since (the sync one left) and acknowledged
//     commits the candidate lacks, so only a standby seen async (or not
//     streaming) and not named in the setting is known to hold none.
//     When every standby answers, the one holding the most WAL holds every
//     acknowledged commit whatever the list's semantics, since each such
//     commit was flushed by at least one of them.
//
// For a forced promotion, MayLoseBytes counts from the furthest WAL
// position known anywhere: the old primary's last flush LSN, the
// acknowledged LSN, every candidate's position and every unreachable
// standby's last flush LSN.
func Decide(obs Observation) Decision {
	d := Decision{ID: obs.ID, At: obs.Now}

	current := obs.Timeline
	for _, n := range obs.Nodes {
		if n.Reachable && n.Timeline > current {
			current = n.Timeline
		}
	}

	// Rules 1 and 2: fence stale primaries, find an adoptable one.
	var adopt *NodeObservation
	fenced := map[string]bool{}
	for i := range obs.Nodes {
		n := &obs.Nodes[i]
		if !n.Reachable || n.InRecovery {
			continue
		}
		if n.Name != obs.OldPrimary && n.Timeline > obs.Timeline {
			if adopt == nil || n.Timeline > adopt.Timeline ||
				(n.Timeline == adopt.Timeline && n.Position() > adopt.Position()) {
				adopt = n
			}
			continue
		}
		fenced[n.Name] = true
		d.Fence = append(d.Fence, n.Name)
	}
	if adopt != nil {
		// Two primaries on new timelines: the one not adopted is fenced too.
		for _, n := range obs.Nodes {
			if n.Reachable && !n.InRecovery && n.Name != adopt.Name && !fenced[n.Name] {
				fenced[n.Name] = true
				d.Fence = append(d.Fence, n.Name)
			}
		}
		if obs.Target != "" && obs.Target != adopt.Name {
			d.Action = ActionWait
			d.Reason = fmt.Sprintf("%s already runs as primary on timeline %d; promoting %s would split the history",
				adopt.Name, adopt.Timeline, obs.Target)
			return d
		}
		d.Action = ActionAdopt
		d.Primary = adopt.Name
		d.PrimaryLSN = adopt.Position()
		d.Reason = fmt.Sprintf("%s is already primary on timeline %d", adopt.Name, adopt.Timeline)
		// Standbys of the old primary's timeline follow the adopted node as
		// they would have followed its promotion.
		d.Follow, d.Rejoin = followers(obs, adopt.Name, obs.Timeline, fenced)
		return d
	}

	// Rule 3: candidates.
	var cands []NodeObservation
	var why []string // why nodes are not candidates, for the reason text
	for _, n := range obs.Nodes {
		switch {
		case n.Name == obs.OldPrimary:
			continue
		case fenced[n.Name]:
			why = append(why, n.Name+" runs as a stale primary")
		case !n.Reachable:
			why = append(why, n.Name+" is unreachable")
		case n.Timeline < current:
			why = append(why, fmt.Sprintf("%s is on stale timeline %d (current %d)", n.Name, n.Timeline, current))
		default:
			cands = append(cands, n)
		}
	}
	if obs.Target != "" {
		t, ok := find(obs.Nodes, obs.Target)
		switch {
		case !ok:
			return wait(d, fmt.Sprintf("%s is not a node of this cluster", obs.Target))
		case obs.Target == obs.OldPrimary:
			return wait(d, fmt.Sprintf("%s is the old primary; it can only rejoin as a replica", obs.Target))
		case fenced[obs.Target]:
			return wait(d, fmt.Sprintf("%s runs as a primary on stale timeline %d", obs.Target, t.Timeline))
		case !t.Reachable:
			return wait(d, fmt.Sprintf("%s is unreachable", obs.Target))
		case t.Timeline < current:
			return wait(d, fmt.Sprintf("%s is on stale timeline %d (current %d); rejoin it first", obs.Target, t.Timeline, current))
		}
	}
	if len(cands) == 0 {
		return wait(d, "no replica can be promoted: "+strings.Join(why, ", "))
	}

	// Rule 4: the most WAL, then the synchronous one, then priority order.
	order := map[string]int{}
	for i, n := range obs.Nodes {
		order[n.Name] = i
	}
	slices.SortStableFunc(cands, func(a, b NodeObservation) int {
		if c := cmp.Compare(b.Position(), a.Position()); c != 0 {
			return c
		}
		if c := cmp.Compare(syncRank(a.LastSyncState), syncRank(b.LastSyncState)); c != 0 {
			return c
		}
		return cmp.Compare(order[a.Name], order[b.Name])
	})
	best := cands[0]
	if obs.Target != "" {
		best, _ = find(cands, obs.Target)
	}

	// Rule 5: never lose an acknowledged commit unless forced.
	furthest := max(obs.PrimaryFlushLSN, obs.AckedLSN)
	var risks []string
	if best.Position() < obs.AckedLSN {
		risks = append(risks, fmt.Sprintf("%s WAL position %s is behind %s acknowledged by the last primary",
			best.Name, best.Position(), obs.AckedLSN))
	}
	for _, c := range cands {
		furthest = max(furthest, c.Position())
		if c.Name != best.Name && c.Position() > best.Position() {
			risks = append(risks, fmt.Sprintf("%s WAL position %s is behind %s of %s",
				best.Name, best.Position(), c.Position(), c.Name))
		}
	}
	for _, u := range obs.Nodes {
		if u.Name == obs.OldPrimary || u.Reachable {
			continue
		}
		furthest = max(furthest, u.LastFlushLSN)
		switch {
		case !obs.PrimaryObserved:
			risks = append(risks, fmt.Sprintf("%s is unreachable and the old primary was never observed, so it may hold acknowledged commits %s lacks",
				u.Name, best.Name))
		case syncCandidate(u.LastSyncState):
			risks = append(risks, fmt.Sprintf("%s (last seen %s at %s) is unreachable and may hold acknowledged commits %s (at %s) lacks",
				u.Name, u.LastSyncState, u.LastFlushLSN, best.Name, best.Position()))
		case u.SyncListed:
			risks = append(risks, fmt.Sprintf("%s is unreachable and named in synchronous_standby_names, so it may hold acknowledged commits %s (at %s) lacks",
				u.Name, best.Name, best.Position()))
		}
	}
	loss := furthest.Minus(best.Position())
	if len(risks) > 0 && !obs.Force {
		reason := "refusing to promote " + best.Name + ": " + strings.Join(risks, "; ")
		if loss > 0 {
			reason += fmt.Sprintf("; forcing would lose up to %d bytes of WAL", loss)
		} else {
			reason += "; forcing may lose commits made after the last observation"
		}
		return wait(d, reason)
	}

	d.Action = ActionPromote
	d.Primary = best.Name
	d.PrimaryLSN = best.Position()
	d.Follow, d.Rejoin = followers(obs, best.Name, current, fenced)
	switch {
	case len(risks) > 0:
		d.MayLoseBytes = loss
		d.Reason = fmt.Sprintf("forced promotion of %s at %s: %s; up to %d bytes of WAL may be lost",
			best.Name, best.Position(), strings.Join(risks, "; "), loss)
	case obs.Target != "":
		d.Reason = fmt.Sprintf("promote %s at %s as asked; it holds every acknowledged commit", best.Name, best.Position())
	default:
		d.Reason = fmt.Sprintf("promote %s: the most WAL (%s) of %d candidate(s), last seen %q",
			best.Name, best.Position(), len(cands), best.LastSyncState)
	}
	return d
}

// syncCandidate reports whether a standby last seen in state s was a
// candidate of synchronous_standby_names then: it acknowledged commits, or
// would have as soon as the one before it in the list left.
func syncCandidate(s string) bool {
	switch s {
	case SyncStateSync, SyncStateQuorum, SyncStatePotential:
		return true
	default: // async standbys are not in the list; "" was not streaming
		return false
	}
}

// followers splits the nodes other than the new primary into those that
// follow it as they are and those that must be rewound first.
func followers(obs Observation, primary string, current int, fenced map[string]bool) (follow, rejoin []string) {
	for _, n := range obs.Nodes {
		switch {
		case n.Name == primary:
		case n.Name == obs.OldPrimary || fenced[n.Name] || (n.Reachable && n.Timeline < current):
			rejoin = append(rejoin, n.Name)
		default:
			follow = append(follow, n.Name)
		}
	}
	return follow, rejoin
}

func syncRank(s string) int {
	switch s {
	case SyncStateSync:
		return 0
	case SyncStateQuorum:
		return 1
	case SyncStatePotential:
		return 2
	case SyncStateAsync:
		return 3
	}
	return 4
}

func find(nodes []NodeObservation, name string) (NodeObservation, bool) {
	for _, n := range nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeObservation{}, false
}

func wait(d Decision, reason string) Decision {
	d.Action = ActionWait
	d.Reason = reason
	return d
}
