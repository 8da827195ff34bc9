package cluster_test

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"pgregory.net/rapid"

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
			reason: []string{`promote main-2: the most WAL (0/3000300) of 2 candidate(s), last seen "sync"`},
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
			name: "operator target that holds every acknowledged commit",
			obs: with(obs(node("main-1", down),
				node("main-2", at("0/3000300", "0/3000300"), seen("sync", "0/3000300")),
				node("main-3", at("0/3000300", "0/3000300"), seen("potential", "0/3000300"))),
				func(o *cluster.Observation) { o.Target = "main-3" }),
			want: cluster.Decision{Action: cluster.ActionPromote, Primary: "main-3", PrimaryLSN: lsn(t, "0/3000300"),
				Follow: []string{"main-2"}, Rejoin: []string{"main-1"}},
			reason: []string{"promote main-3 at 0/3000300 as asked; it holds every acknowledged commit"},
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

// genObservation draws an observation of a cluster of 2 to 5 nodes whose
// primary died: any node may be the old primary; each node may be reachable
// or not, a standby or a primary, on a timeline around the old primary's,
// with receive, replay and flush LSNs drawn apart; the last view may be
// missing; each node may have been sync, potential, quorum, async or not
// streaming in it, and named in synchronous_standby_names or not; an
// operator may name a target (possibly unknown) and force. LSNs come from a
// few values so that ties and equal positions are common.
func genObservation(t *rapid.T) cluster.Observation {
	lsns := rapid.SampledFrom([]cluster.LSN{0, 0x100, 0x200, 0x300, 0x400})
	states := rapid.SampledFrom([]string{"", cluster.SyncStateSync, cluster.SyncStatePotential,
		cluster.SyncStateQuorum, cluster.SyncStateAsync})
	often := func(label string) bool { return rapid.IntRange(0, 3).Draw(t, label) != 0 }

	k := rapid.IntRange(2, 5).Draw(t, "nodes")
	o := cluster.Observation{
		ID:              "f1",
		Now:             time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Timeline:        rapid.IntRange(1, 3).Draw(t, "timeline"),
		PrimaryObserved: often("observed"),
		Force:           rapid.Bool().Draw(t, "force"),
	}
	names := make([]string, k)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
	}
	o.OldPrimary = rapid.SampledFrom(names).Draw(t, "old")
	if o.PrimaryObserved {
		o.PrimaryFlushLSN = lsns.Draw(t, "primary_flush")
		o.AckedLSN = lsns.Draw(t, "acked")
	}
	for _, name := range names {
		n := cluster.NodeObservation{
			Name:       name,
			Reachable:  often(name + ".reachable"),
			InRecovery: often(name + ".recovery"),
			Timeline:   rapid.IntRange(o.Timeline-1, o.Timeline+2).Draw(t, name+".timeline"),
			ReceiveLSN: lsns.Draw(t, name+".receive"),
			ReplayLSN:  lsns.Draw(t, name+".replay"),
			FlushLSN:   lsns.Draw(t, name+".flush"),
			SyncListed: rapid.Bool().Draw(t, name+".listed"),
		}
		if o.PrimaryObserved {
			n.LastSyncState = states.Draw(t, name+".last_state")
			n.LastFlushLSN = lsns.Draw(t, name+".last_flush")
		}
		o.Nodes = append(o.Nodes, n)
	}
	o.Target = rapid.SampledFrom(append([]string{"", "", "n9"}, names...)).Draw(t, "target")
	return o
}

// model answers, from an observation alone, the questions the safety
// properties ask; it is written from the rules' statement, not from Decide.
type model struct {
	o cluster.Observation
	// current is the newest timeline: the old primary's or a reachable
	// node's.
	current int
}

func newModel(o cluster.Observation) model {
	m := model{o: o, current: o.Timeline}
	for _, n := range o.Nodes {
		if n.Reachable {
			m.current = max(m.current, n.Timeline)
		}
	}
	return m
}

func (m model) node(name string) (cluster.NodeObservation, bool) {
	for _, n := range m.o.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return cluster.NodeObservation{}, false
}

// writable reports whether n accepts writes now.
func writable(n cluster.NodeObservation) bool { return n.Reachable && !n.InRecovery }

// newerPrimary reports whether n is a primary that finished a promotion
// after the old primary's timeline: the one to adopt, if any.
func (m model) newerPrimary(n cluster.NodeObservation) bool {
	return writable(n) && n.Name != m.o.OldPrimary && n.Timeline > m.o.Timeline
}

// candidate reports whether n may be promoted at all, forced or not.
func (m model) candidate(n cluster.NodeObservation) bool {
	return n.Name != m.o.OldPrimary && n.Reachable && n.InRecovery && n.Timeline >= m.current
}

// mayHoldAcked reports whether the unreachable node u may hold an
// acknowledged commit that no answering node shows: it was a candidate of
// synchronous_standby_names at the last view or is named in the setting,
// or there was no view at all.
func (m model) mayHoldAcked(u cluster.NodeObservation) bool {
	if u.Name == m.o.OldPrimary || u.Reachable {
		return false
	}
	switch u.LastSyncState {
	case cluster.SyncStateSync, cluster.SyncStateQuorum, cluster.SyncStatePotential:
		return true
	}
	return !m.o.PrimaryObserved || u.SyncListed
}

// mayLack reports why promoting c may lose an acknowledged commit, or "".
func (m model) mayLack(c cluster.NodeObservation) string {
	if c.Position() < m.o.AckedLSN {
		return "behind the acknowledged LSN"
	}
	for _, n := range m.o.Nodes {
		if m.candidate(n) && n.Position() > c.Position() {
			return "behind " + n.Name
		}
		if m.mayHoldAcked(n) {
			return n.Name + " is unreachable and may hold acknowledged commits"
		}
	}
	return ""
}

// furthest is the furthest WAL position seen anywhere that a promoted node
// could lack: the old primary's last flush, the acknowledged LSN, every
// candidate's position and every unreachable standby's last flush.
func (m model) furthest() cluster.LSN {
	f := max(m.o.PrimaryFlushLSN, m.o.AckedLSN)
	for _, n := range m.o.Nodes {
		switch {
		case m.candidate(n):
			f = max(f, n.Position())
		case !n.Reachable && n.Name != m.o.OldPrimary:
			f = max(f, n.LastFlushLSN)
		}
	}
	return f
}

// checkDecision states the properties every decision must have; it returns
// the violated one, or "".
func checkDecision(m model, d cluster.Decision) string {
	o := m.o
	if d.ID != o.ID || !d.At.Equal(o.Now) || d.Reason == "" {
		return "decision lacks the observation's id, time or a reason"
	}
	fence := map[string]int{}
	for _, f := range d.Fence {
		fence[f]++
	}

	// Never two writable primaries, never the old one: every node running as
	// a primary is fenced, except the one adopted.
	for _, n := range o.Nodes {
		keep := d.Action == cluster.ActionAdopt && n.Name == d.Primary ||
			d.Action == cluster.ActionWait && writable(n) && m.newerPrimary(n) && o.Target != "" && fence[n.Name] == 0
		switch {
		case writable(n) && !keep && fence[n.Name] != 1:
			return fmt.Sprintf("%s runs as a primary and is not fenced once", n.Name)
		case !writable(n) && fence[n.Name] != 0:
			return fmt.Sprintf("%s is fenced but does not run as a primary", n.Name)
		}
	}
	primaries := 0
	for _, n := range o.Nodes {
		if writable(n) && fence[n.Name] == 0 || d.Action == cluster.ActionPromote && n.Name == d.Primary {
			primaries++
		}
	}
	if primaries > 1 {
		return fmt.Sprintf("%d writable primaries after the decision", primaries)
	}

	// A promotion that finished is adopted, never redone; only one on a
	// timeline newer than the old primary's.
	var adopt *cluster.NodeObservation
	for i, n := range o.Nodes {
		if m.newerPrimary(n) && (adopt == nil || n.Timeline > adopt.Timeline ||
			n.Timeline == adopt.Timeline && n.Position() > adopt.Position()) {
			adopt = &o.Nodes[i]
		}
	}
	switch {
	case adopt != nil && d.Action == cluster.ActionPromote:
		return fmt.Sprintf("promoted %s while %s runs as primary on timeline %d", d.Primary, adopt.Name, adopt.Timeline)
	case adopt == nil && d.Action == cluster.ActionAdopt:
		return fmt.Sprintf("adopted %s, which is not a primary on a timeline newer than %d", d.Primary, o.Timeline)
	case adopt != nil && d.Action == cluster.ActionAdopt && d.Primary != adopt.Name:
		return fmt.Sprintf("adopted %s instead of %s", d.Primary, adopt.Name)
	case adopt != nil && d.Action == cluster.ActionWait && (o.Target == "" || o.Target == adopt.Name):
		return fmt.Sprintf("waits although %s can be adopted", adopt.Name)
	}

	switch d.Action {
	case cluster.ActionWait:
		if d.Primary != "" || d.MayLoseBytes != 0 || d.Follow != nil || d.Rejoin != nil {
			return "a wait names a primary, a loss or followers"
		}
		if adopt != nil {
			return ""
		}
		// Refuse only what must be refused.
		var best *cluster.NodeObservation
		for i, n := range o.Nodes {
			if m.candidate(n) && (best == nil || n.Position() > best.Position()) {
				best = &o.Nodes[i]
			}
		}
		if o.Target != "" {
			best = nil
			if t, ok := m.node(o.Target); ok && m.candidate(t) {
				best = &t
			}
		}
		if best != nil && (o.Force || m.mayLack(*best) == "") {
			return fmt.Sprintf("waits although %s may be promoted", best.Name)
		}
		return ""
	case cluster.ActionPromote, cluster.ActionAdopt:
	default:
		return "unknown action " + string(d.Action)
	}

	p, ok := m.node(d.Primary)
	if !ok {
		return fmt.Sprintf("new primary %q is not a node", d.Primary)
	}
	if d.PrimaryLSN != p.Position() {
		return fmt.Sprintf("primary LSN %s, want %s", d.PrimaryLSN, p.Position())
	}
	current := m.current
	if d.Action == cluster.ActionAdopt {
		// Never the old timeline.
		if !m.newerPrimary(p) {
			return fmt.Sprintf("adopted %s on timeline %d, not newer than %d", p.Name, p.Timeline, o.Timeline)
		}
		current = o.Timeline
	} else {
		// Never an unreachable node, the old primary or a stale timeline,
		// even forced; an operator's target or else the most WAL.
		if !m.candidate(p) {
			return fmt.Sprintf("promoted %s, which is not a reachable standby on timeline %d", p.Name, m.current)
		}
		if o.Target != "" && p.Name != o.Target {
			return fmt.Sprintf("promoted %s, not the target %s", p.Name, o.Target)
		}
		for _, n := range o.Nodes {
			if o.Target == "" && m.candidate(n) && n.Position() > p.Position() {
				return fmt.Sprintf("promoted %s behind %s", p.Name, n.Name)
			}
		}
		// Never lose an acknowledged commit unless forced, and then say how
		// much WAL may be lost.
		why := m.mayLack(p)
		switch {
		case why != "" && !o.Force:
			return fmt.Sprintf("promoted %s without force, but %s", p.Name, why)
		case why != "" && d.MayLoseBytes != m.furthest().Minus(p.Position()):
			return fmt.Sprintf("may lose %d bytes, want %d", d.MayLoseBytes, m.furthest().Minus(p.Position()))
		case why == "" && d.MayLoseBytes != 0:
			return fmt.Sprintf("a safe promotion may lose %d bytes", d.MayLoseBytes)
		}
	}

	// Every other node follows the new primary, or rejoins when it may have
	// diverged from it.
	for _, n := range o.Nodes {
		rejoin := n.Name == o.OldPrimary || fence[n.Name] > 0 || n.Reachable && n.Timeline < current
		in := func(l []string) int {
			c := 0
			for _, x := range l {
				if x == n.Name {
					c++
				}
			}
			return c
		}
		want := [2]int{0, 0}
		switch {
		case n.Name == p.Name:
		case rejoin:
			want[1] = 1
		default:
			want[0] = 1
		}
		if got := [2]int{in(d.Follow), in(d.Rejoin)}; got != want {
			return fmt.Sprintf("%s in follow/rejoin %d/%d times, want %d/%d", n.Name, got[0], got[1], want[0], want[1])
		}
	}
	return ""
}

// TestDecideProperties checks the safety properties over generated
// observations (RAPID_CHECKS or -rapid.checks sets how many; 20000 by
// default).
func TestDecideProperties(t *testing.T) {
	setDefaultChecks(20000)
	rapid.Check(t, func(t *rapid.T) {
		o := genObservation(t)
		d := cluster.Decide(o)
		if why := checkDecision(newModel(o), d); why != "" {
			t.Fatalf("%s\nobservation: %+v\ndecision: %+v", why, o, d)
		}
	})
}

// setDefaultChecks raises rapid's number of checks unless the command line
// or RAPID_CHECKS chose one.
func setDefaultChecks(n int) {
	set := os.Getenv("RAPID_CHECKS") != ""
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if !set {
		_ = flag.Set("rapid.checks", fmt.Sprint(n))
	}
}

// TestDecidePropertiesSeeTheCases makes sure the generator reaches the
// observations the properties are about, so that they are not vacuously
// true.
func TestDecidePropertiesSeeTheCases(t *testing.T) {
	seen := map[string]int{}
	setDefaultChecks(20000)
	rapid.Check(t, func(t *rapid.T) {
		o := genObservation(t)
		m := newModel(o)
		d := cluster.Decide(o)
		for _, n := range o.Nodes {
			if n.ReceiveLSN != n.ReplayLSN && m.candidate(n) {
				seen["candidate with replay apart from receive"]++
			}
			if m.mayHoldAcked(n) && n.LastSyncState == cluster.SyncStatePotential && d.Action == cluster.ActionWait {
				seen["refused for an unreachable potential standby"]++
			}
			if m.newerPrimary(n) && d.Action == cluster.ActionAdopt {
				seen["adopted"]++
			}
			if writable(n) && n.Name == o.OldPrimary {
				seen["old primary back as a primary"]++
			}
			if n.Reachable && n.Timeline < m.current && n.Name != o.OldPrimary {
				seen["stale standby"]++
			}
		}
		if d.Action == cluster.ActionPromote {
			seen["promoted"]++
			if o.Force && d.MayLoseBytes > 0 {
				seen["forced with a loss"]++
			}
			if o.Target != "" {
				seen["promoted a target"]++
			}
			if !o.PrimaryObserved {
				seen["promoted without a view"]++
			}
		}
		if o.Target != "" && d.Action == cluster.ActionWait {
			seen["refused a target"]++
		}
	})
	want := []string{"candidate with replay apart from receive", "refused for an unreachable potential standby",
		"adopted", "old primary back as a primary", "stale standby", "promoted", "forced with a loss",
		"promoted a target", "promoted without a view", "refused a target"}
	var missing []string
	for _, k := range want {
		if seen[k] == 0 {
			missing = append(missing, k)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("the generator never produced: %s (saw %v)", strings.Join(missing, ", "), seen)
	}
}
