package cluster_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"socnet/internal/cluster"
)

// lsn parses an LSN literal of a test table.
func lsn(tb testing.TB, s string) cluster.LSN {
	tb.Helper()
	l, err := cluster.ParseLSN(s)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func TestLSN(t *testing.T) {
	for _, s := range []string{"0/0", "0/3000148", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		l := lsn(t, s)
		if got := l.String(); got != s {
			t.Errorf("ParseLSN(%q).String() = %q", s, got)
		}
	}
	if got := lsn(t, "0/3000200").Minus(lsn(t, "0/3000148")); got != 0xB8 {
		t.Errorf("Minus = %d, want %d", got, 0xB8)
	}
	if got := lsn(t, "0/3000148").Minus(lsn(t, "0/3000200")); got != 0 {
		t.Errorf("Minus of a later LSN = %d, want 0", got)
	}
	for _, bad := range []string{"3000148", "x/1", "1/y", "1/100000000"} {
		if _, err := cluster.ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) succeeded", bad)
		}
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	// node builds a NodeObservation: reachable standbys on timeline 1 unless
	// changed by the options.
	type opt func(*cluster.NodeObservation)
	node := func(name string, opts ...opt) cluster.NodeObservation {
		n := cluster.NodeObservation{Name: name, Reachable: true, InRecovery: true, Timeline: 1}
		for _, o := range opts {
			o(&n)
		}
		return n
	}
	down := func(n *cluster.NodeObservation) { n.Reachable = false; n.InRecovery = false; n.Timeline = 0 }
	at := func(recv, replay string) opt {
		return func(n *cluster.NodeObservation) {
			n.ReceiveLSN, n.ReplayLSN = lsn(t, recv), lsn(t, replay)
		}
	}
	seen := func(state, flush string) opt {
		return func(n *cluster.NodeObservation) { n.LastSyncState, n.LastFlushLSN = state, lsn(t, flush) }
	}
	listed := func(n *cluster.NodeObservation) { n.SyncListed = true }
	tl := func(tli int) opt { return func(n *cluster.NodeObservation) { n.Timeline = tli } }
	primaryAt := func(flush string) opt {
		return func(n *cluster.NodeObservation) { n.InRecovery = false; n.FlushLSN = lsn(t, flush) }
	}
	obs := func(nodes ...cluster.NodeObservation) cluster.Observation {
		return cluster.Observation{
			ID: "f1", Now: now, OldPrimary: "main-1", Timeline: 1, PrimaryObserved: true,
			PrimaryFlushLSN: lsn(t, "0/3000300"), AckedLSN: lsn(t, "0/3000200"), Nodes: nodes,
		}
	}
	with := func(o cluster.Observation, f func(*cluster.Observation)) cluster.Observation { f(&o); return o }

	tests := []struct {
		name string
		obs  cluster.Observation
		want cluster.Decision
		// reason holds substrings the reason must contain.
		reason []string
	}{
		{
			name: "sync ahead",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000200")),
				node("main-3", at("0/3000100", "0/3000100"), seen("potential", "0/3000100"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000300"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "async ahead of sync is promoted: it holds every acknowledged commit too",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000200", "0/3000200"), seen("sync", "0/3000200")),
				node("main-3", at("0/3000300", "0/3000280"), seen("potential", "0/3000300"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000300"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "equal LSNs prefer the synchronous replica",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000250", "0/3000250"), seen("potential", "0/3000250")),
				node("main-3", at("0/3000250", "0/3000250"), seen("sync", "0/3000250"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000250"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "equal LSNs and equal states prefer priority order",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000250", "0/3000250"), seen("quorum", "0/3000250")),
				node("main-3", at("0/3000250", "0/3000250"), seen("quorum", "0/3000250"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000250"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "split LSNs: receive ahead of replay counts",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000200", "0/3000290"), seen("sync", "0/3000200")),
				node("main-3", at("0/3000300", "0/3000100"), seen("potential", "0/3000300"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000300"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "restarted standby: replay ahead of an unknown receive LSN",
			obs: obs(node("main-1", down),
				node("main-2", at("0/0", "0/3000280"), seen("sync", "0/3000280")),
				node("main-3", at("0/3000100", "0/3000100"), seen("potential", "0/3000100"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000280"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "both replicas down",
			obs: obs(node("main-1", down),
				node("main-2", down, seen("sync", "0/3000200")),
				node("main-3", down, seen("potential", "0/3000100"))),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"no replica can be promoted", "main-2 is unreachable", "main-3 is unreachable"},
		},
		{
			name: "sync down: the potential one may lack acknowledged commits",
			obs: obs(node("main-1", down),
				node("main-2", down, seen("sync", "0/3000200")),
				node("main-3", at("0/3000200", "0/3000200"), seen("potential", "0/3000200"))),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"refusing to promote main-3", "main-2 (last seen sync at 0/3000200) is unreachable", "forcing would lose up to 256 bytes"},
		},
		{
			name: "async down: the sync one is promoted",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000200", "0/3000200"), seen("sync", "0/3000200")),
				node("main-3", down, seen("async", "0/3000280"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000200"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			// The last view is up to a probe interval old: main-3 may have
			// become sync since (main-2 left the list for a moment) and
			// acknowledged commits main-2 lacks.
			name: "stale sync state: potential down, sync reachable",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/1000", "0/1000"), seen("sync", "0/1000")),
				node("main-3", down, seen("potential", "0/1000"))),
				func(o *cluster.Observation) { o.AckedLSN, o.PrimaryFlushLSN = lsn(t, "0/1000"), lsn(t, "0/1000") }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"refusing to promote main-2", "main-3 (last seen potential at 0/1000) is unreachable", "forcing may lose commits made after the last observation"},
		},
		{
			name: "stale sync state forced: what may be lost counts the unreachable standby's last flush",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/1000", "0/1000"), seen("sync", "0/1000")),
				node("main-3", down, seen("potential", "0/1100"))),
				func(o *cluster.Observation) {
					o.AckedLSN, o.PrimaryFlushLSN, o.Force = lsn(t, "0/1000"), lsn(t, "0/1000"), true
				}),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/1000"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}, MayLoseBytes: 0x100},
			reason: []string{"forced promotion of main-2", "up to 256 bytes"},
		},
		{
			name: "stale sync state: both were potential, one is down",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("potential", "0/3000300")),
				node("main-3", down, seen("potential", "0/3000100"))),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 (last seen potential at 0/3000100) is unreachable"},
		},
		{
			name: "a standby named in the setting but not streaming at the last view may have become sync",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", down, listed)),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 is unreachable and named in synchronous_standby_names"},
		},
		{
			name: "a standby seen async but named in the setting since may have become sync",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", down, seen("async", "0/3000100"), listed)),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 is unreachable and named in synchronous_standby_names"},
		},
		{
			name: "a listed standby that answers does not block: its WAL is compared",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300"), listed),
				node("main-3", at("0/3000200", "0/3000200"), listed)),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000300"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "the old primary named in the setting does not block",
			obs: obs(node("main-1", down, seen("sync", "0/3000900"), listed),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000300"),
				Rejoin: []string{"main-1"}},
		},
		{
			name: "a replica that was not streaming cannot hold acknowledged commits",
			obs: obs(node("main-1", down),
				node("main-2", down),
				node("main-3", at("0/3000200", "0/3000200"), seen("sync", "0/3000200"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000200"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "quorum peer down: may hold acknowledged commits",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000250", "0/3000250"), seen("quorum", "0/3000250")),
				node("main-3", down, seen("quorum", "0/3000200"))),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 (last seen quorum at 0/3000200) is unreachable"},
		},
		{
			name: "primary never observed and a replica down",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/3000250", "0/3000250")),
				node("main-3", down)), func(o *cluster.Observation) {
				o.PrimaryObserved, o.AckedLSN, o.PrimaryFlushLSN = false, 0, 0
			}),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 is unreachable and the old primary was never observed"},
		},
		{
			name: "primary never observed but every replica answers",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/3000250", "0/3000250")),
				node("main-3", at("0/3000260", "0/3000250"))), func(o *cluster.Observation) {
				o.PrimaryObserved, o.AckedLSN, o.PrimaryFlushLSN = false, 0, 0
			}),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000260"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "only candidate behind the acknowledged LSN",
			obs: obs(node("main-1", down),
				node("main-2", down, seen("sync", "0/3000200")),
				node("main-3", at("0/3000148", "0/3000148"), seen("potential", "0/3000148"))),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 WAL position 0/3000148 is behind 0/3000200 acknowledged by the last primary", "lose up to 440 bytes"},
		},
		{
			name: "forced promotion reports what may be lost",
			obs: with(obs(node("main-1", down),
				node("main-2", down, seen("sync", "0/3000200")),
				node("main-3", at("0/3000148", "0/3000148"), seen("potential", "0/3000148"))),
				func(o *cluster.Observation) { o.Force = true }),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000148"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}, MayLoseBytes: 0x3000300 - 0x3000148},
			reason: []string{"forced promotion of main-3"},
		},
		{
			name: "replica on a stale timeline is not a candidate",
			obs: with(obs(node("main-1", down, seen("", "0/0")),
				node("main-2", at("0/5000000", "0/5000000"), tl(1)),
				node("main-3", at("0/4000100", "0/4000100"), tl(2), seen("sync", "0/4000100"))),
				func(o *cluster.Observation) {
					o.Timeline, o.OldPrimary, o.AckedLSN, o.PrimaryFlushLSN = 2, "main-1", lsn(t, "0/4000100"), lsn(t, "0/4000100")
				}),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/4000100"),
				Rejoin: []string{"main-1", "main-2"}},
		},
		{
			name: "only a stale replica left",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/5000000", "0/5000000"), tl(1)),
				node("main-3", down)),
				func(o *cluster.Observation) { o.Timeline = 2 }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-2 is on stale timeline 1 (current 2)", "main-3 is unreachable"},
		},
		{
			name: "old primary back as a primary during promotion is fenced, never used",
			obs: obs(node("main-1", primaryAt("0/3000400")),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", at("0/3000300", "0/3000300"), seen("potential", "0/3000300"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000300"),
				Fence: []string{"main-1"}, Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "old primary back as a standby is not a candidate",
			obs: obs(node("main-1", at("0/3000900", "0/3000900")),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", at("0/3000200", "0/3000200"), seen("potential", "0/3000200"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000300"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "a promotion that already happened is adopted",
			obs: obs(node("main-1", down),
				node("main-2", primaryAt("0/3000500"), tl(2)),
				node("main-3", at("0/3000300", "0/3000300"), seen("potential", "0/3000300"))),
			want: cluster.Decision{Action: cluster.ActionAdopt, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000500"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
			reason: []string{"main-2 is already primary on timeline 2"},
		},
		{
			name: "two primaries on new timelines: the newest is adopted, the other fenced",
			obs: obs(node("main-1", down),
				node("main-2", primaryAt("0/3000400"), tl(2)),
				node("main-3", primaryAt("0/3000100"), tl(3))),
			want: cluster.Decision{Action: cluster.ActionAdopt, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000100"),
				Fence: []string{"main-2"}, Rejoin: []string{"main-1", "main-2"}},
			reason: []string{"main-3 is already primary on timeline 3"},
		},
		{
			name: "two primaries on the same new timeline: the one with more WAL is adopted, the other fenced",
			obs: obs(node("main-1", down),
				node("main-2", primaryAt("0/3000400"), tl(2)),
				node("main-3", primaryAt("0/3000500"), tl(2))),
			want: cluster.Decision{Action: cluster.ActionAdopt, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000500"),
				Fence: []string{"main-2"}, Rejoin: []string{"main-1", "main-2"}},
		},
		{
			name: "a standby running as primary on the old timeline is fenced, not adopted",
			obs: obs(node("main-1", down),
				node("main-2", primaryAt("0/3000500"), tl(1)),
				node("main-3", at("0/3000300", "0/3000300"), seen("sync", "0/3000300"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000300"),
				Fence: []string{"main-2"}, Rejoin: []string{"main-1", "main-2"}},
		},
		{
			name: "a primary on a timeline older than the old primary's is fenced",
			obs: with(obs(node("main-1", down),
				node("main-2", primaryAt("0/3000500"), tl(1)),
				node("main-3", at("0/3000300", "0/3000300"), tl(2), seen("sync", "0/3000300"))),
				func(o *cluster.Observation) { o.Timeline = 2 }),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000300"),
				Fence: []string{"main-2"}, Rejoin: []string{"main-1", "main-2"}},
		},
		{
			name: "an unreachable node's last timeline and role are ignored",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", down, primaryAt("0/3000900"), tl(5), seen("async", "0/3000100"))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-2", PrimaryLSN: lsn(t, "0/3000300"),
				Follow: []string{"main-3"}, Rejoin: []string{"main-1"}},
		},
		{
			name: "operator target on a stale timeline is refused",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/5000000", "0/5000000"), tl(1)),
				node("main-3", at("0/4000100", "0/4000100"), tl(2), seen("sync", "0/4000100"))),
				func(o *cluster.Observation) {
					o.Timeline, o.AckedLSN, o.PrimaryFlushLSN = 2, lsn(t, "0/4000100"), lsn(t, "0/4000100")
					o.Target, o.Force = "main-2", true
				}),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-2 is on stale timeline 1 (current 2); rejoin it first"},
		},
		{
			name: "a standby on a timeline newer than the old primary's wins over more WAL on the old one",
			obs: obs(node("main-1", down),
				node("main-2", at("0/3000400", "0/3000400"), tl(1)),
				node("main-3", at("0/3000300", "0/3000300"), tl(2))),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000300"),
				Rejoin: []string{"main-1", "main-2"}},
		},
		{
			name: "operator target running as a stale primary is refused",
			obs: with(obs(node("main-1", down),
				node("main-2", primaryAt("0/3000500"), tl(1)),
				node("main-3", at("0/3000300", "0/3000300"))),
				func(o *cluster.Observation) { o.Target, o.Force = "main-2", true }),
			want:   cluster.Decision{Action: cluster.ActionWait, Fence: []string{"main-2"}},
			reason: []string{"main-2 runs as a primary on stale timeline 1"},
		},
		{
			name: "operator target that is already primary",
			obs: with(obs(node("main-1", down),
				node("main-2", primaryAt("0/3000500"), tl(2)),
				node("main-3", at("0/3000300", "0/3000300"))),
				func(o *cluster.Observation) { o.Target = "main-3" }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-2 already runs as primary on timeline 2"},
		},
		{
			name: "operator target behind another replica is refused",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", at("0/3000200", "0/3000200"), seen("potential", "0/3000200"))),
				func(o *cluster.Observation) { o.Target = "main-3" }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 WAL position 0/3000200 is behind 0/3000300 of main-2", "lose up to 256 bytes"},
		},
		{
			name: "operator target forced",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", at("0/3000200", "0/3000200"), seen("potential", "0/3000200"))),
				func(o *cluster.Observation) { o.Target, o.Force = "main-3", true }),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000200"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}, MayLoseBytes: 256},
		},
		{
			name: "operator target unreachable is refused even when forced",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300")),
				node("main-3", down)),
				func(o *cluster.Observation) { o.Target, o.Force = "main-3", true }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-3 is unreachable"},
		},
		{
			name: "operator target is the old primary",
			obs: with(obs(node("main-1", down), node("main-2", at("0/3000300", "0/3000300"))),
				func(o *cluster.Observation) { o.Target = "main-1" }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-1 is the old primary"},
		},
		{
			name: "operator target unknown",
			obs: with(obs(node("main-1", down), node("main-2", at("0/3000300", "0/3000300"))),
				func(o *cluster.Observation) { o.Target = "main-9" }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"main-9 is not a node of this cluster"},
		},
		{
			name: "counter: the only replica is the sync one",
			obs: with(obs(node("counter-1", down),
				node("counter-2", at("0/3000200", "0/3000200"), seen("sync", "0/3000200"))),
				func(o *cluster.Observation) { o.OldPrimary = "counter-1" }),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "counter-2", PrimaryLSN: lsn(t, "0/3000200"),
				Rejoin: []string{"counter-1"}},
		},
		{
			name: "counter: the only replica was not streaming and is behind",
			obs: with(obs(node("counter-1", down),
				node("counter-2", at("0/3000100", "0/3000100"))),
				func(o *cluster.Observation) { o.OldPrimary = "counter-1" }),
			want:   cluster.Decision{Action: cluster.ActionWait},
			reason: []string{"counter-2 WAL position 0/3000100 is behind 0/3000200"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := cluster.Decide(tc.obs)
			tc.want.ID, tc.want.At = "f1", now
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(cluster.Decision{}, "Reason"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Decide (-want +got):\n%s\nreason: %s", diff, got.Reason)
			}
			if got.Reason == "" {
				t.Error("empty reason")
			}
			for _, s := range tc.reason {
				if !strings.Contains(got.Reason, s) {
					t.Errorf("reason %q lacks %q", got.Reason, s)
				}
			}
		})
	}
}

// TestDecideNeverPromotesBehindAcknowledged checks the central promise over
// many generated observations: without Force, a promoted node holds at least
// AckedLSN and at least as much WAL as every other reachable candidate.
func TestDecideNeverPromotesBehindAcknowledged(t *testing.T) {
	states := []string{"", cluster.SyncStateSync, cluster.SyncStatePotential, cluster.SyncStateQuorum}
	positions := []cluster.LSN{0x3000100, 0x3000200, 0x3000300}
	n := 0
	for _, s2 := range states {
		for _, s3 := range states {
			for _, p2 := range positions {
				for _, p3 := range positions {
					for reach := 0; reach < 4; reach++ {
						o := cluster.Observation{
							OldPrimary: "main-1", Timeline: 1, PrimaryObserved: true,
							PrimaryFlushLSN: 0x3000300, AckedLSN: 0x3000200,
							Nodes: []cluster.NodeObservation{
								{Name: "main-1"},
								{Name: "main-2", Reachable: reach&1 != 0, InRecovery: true, Timeline: 1, ReceiveLSN: p2, LastSyncState: s2, LastFlushLSN: p2},
								{Name: "main-3", Reachable: reach&2 != 0, InRecovery: true, Timeline: 1, ReceiveLSN: p3, LastSyncState: s3, LastFlushLSN: p3},
							},
						}
						d := cluster.Decide(o)
						if d.Action != cluster.ActionPromote {
							continue
						}
						n++
						var chosen cluster.NodeObservation
						for _, x := range o.Nodes {
							if x.Name == d.Primary {
								chosen = x
							}
						}
						if chosen.Position() < o.AckedLSN {
							t.Errorf("promoted %s at %s behind acknowledged %s: %+v", d.Primary, chosen.Position(), o.AckedLSN, o)
						}
						for _, x := range o.Nodes[1:] {
							if x.Reachable && x.Position() > chosen.Position() {
								t.Errorf("promoted %s behind %s: %+v", d.Primary, x.Name, o)
							}
							if !x.Reachable && (x.LastSyncState == cluster.SyncStateSync || x.LastSyncState == cluster.SyncStateQuorum) {
								t.Errorf("promoted %s while %s (%s) was unreachable: %+v", d.Primary, x.Name, x.LastSyncState, o)
							}
						}
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no observation led to a promotion")
	}
}
