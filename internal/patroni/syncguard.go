package patroni

import "slices"

// SyncView is what the engine knows of a cluster when it decides the
// nosync tags: who leads and which standbys stream from the leader, as the
// leader's pg_stat_replication shows them.
type SyncView struct {
	// Leader is the node holding Patroni's leader key; "" when none.
	Leader string
	// Streaming are the nodes whose walsender on the leader is streaming.
	Streaming []string
	// Async are the nodes designated asynchronous (tagged nosync by
	// design), such as main's third node.
	Async []string
}

// NoSyncTags decides the nosync tag of each designated asynchronous node
// that is not the leader. The map holds only those nodes; an empty map
// means "change nothing".
//
// Under synchronous_mode_strict a leader acknowledges a commit only once a
// synchronous standby has it, and Patroni never picks a nosync node. After
// a host loss, the promoted standby's only standby may be the asynchronous
// node: strict mode would then hold every write until the lost host
// returns. The rules keep both the guarantee and the availability:
//
//  1. Without a leader nothing changes: there is no standby to pick.
//  2. While no standby other than the designated asynchronous ones streams
//     from the leader, those are released (nosync off), so that Patroni
//     makes one of them the synchronous standby: commits are acknowledged
//     again once it has flushed them, and it may be promoted if the leader
//     is lost too.
//  3. Otherwise they carry nosync, as designed, and Patroni hands the
//     synchronous role back to a designated synchronous standby. The
//     hand-over is Patroni's own (the sync key shrinks before
//     synchronous_standby_names changes), so no commit is acknowledged
//     by a node that could not be promoted.
func NoSyncTags(v SyncView) map[string]bool {
	out := map[string]bool{}
	if v.Leader == "" {
		return out
	}
	others := 0
	for _, n := range v.Streaming {
		if n != v.Leader && !slices.Contains(v.Async, n) {
			others++
		}
	}
	for _, n := range v.Async {
		if n != v.Leader {
			out[n] = others > 0
		}
	}
	return out
}
