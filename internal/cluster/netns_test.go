package cluster_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/drill"
	"socnet/internal/netns"
	"socnet/internal/netns/netnstest"
)

// TestClusterOnHosts runs the main cluster with every node on its own
// network host, cuts the primary's host off under a stream of commits,
// and checks that the supervisor (in the machine's own namespace, a client
// like any other) fails over to a replica, that the old primary comes back
// as a streaming replica once healed, that no acknowledged commit is lost,
// and that a watch of every node never saw two primaries nor a commit
// acknowledged by the old primary after the promotion.
func TestClusterOnHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster on three hosts with a cut: not in -short")
	}
	ctx := context.Background()
	if err := netns.Check(ctx); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not found: install the Debian package util-linux")
	}
	spec := testSpec(cluster.MainSpec())
	home := t.TempDir()
	// First, so that its clean-up runs after the cluster has stopped.
	n := netnstest.Up(t, home, spec.NodeNames()...)
	opts := testOptions(t)
	opts.Placement = func(node string) cluster.Placement {
		a, _ := n.Addr(node)
		return cluster.Placement{Host: a.String(), Netns: n.Netns(node), ClientNet: n.Subnet().String()}
	}
	h := &harness{home: home, spec: spec, log: testLogger(t)}
	c, err := cluster.Open(cluster.Dir(home, spec.Name), spec, h.log, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	h.c = c
	t.Cleanup(func() { h.close(t) })
	h.up(t)
	h.startSupervisor(t)

	old := "main-1"
	s := h.waitHealthy(t, old, 90*time.Second)
	portNode := map[string]string{}
	var watched []drill.Node
	for _, ns := range s.Nodes {
		a, _ := n.Addr(ns.Name)
		if ns.Host != a.String() || ns.Netns != n.Netns(ns.Name) || !strings.Contains(ns.DSN, "@"+a.String()+":") {
			t.Errorf("status of %s: host %s, netns %q, dsn host in %s; want %s in %s", ns.Name, ns.Host, ns.Netns, ns.DSN, a, n.Netns(ns.Name))
		}
		portNode[fmt.Sprint(ns.Port)] = ns.Name
		watched = append(watched, drill.Node{Name: ns.Name, DSN: c.Node(ns.Name).DSN("")})
		if hp := net.JoinHostPort(a.String(), fmt.Sprint(ns.Port)); !strings.Contains(c.FailoverDSN(""), hp) {
			t.Errorf("failover DSN %s does not name %s at %s", c.FailoverDSN(""), ns.Name, hp)
		}
	}

	// A rewind keeps the old primary's files; a rebuild from a base backup
	// makes new ones.
	pgVersion := filepath.Join(c.Node(old).Config().DataDir, "PG_VERSION")
	inodeBefore := inode(t, pgVersion)

	watch := drill.StartWatch(ctx, watched, 0, 0)
	defer watch.Stop()
	l := h.startLedger(t)
	l.waitAcks(t, 50, 30*time.Second)
	oldPort := fmt.Sprint(c.Node(old).Config().Port)
	cut := time.Now()
	if err := n.Cut(ctx, old); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut %s off after %d acknowledged inserts", old, l.count())
	var first time.Time
	waitFor(t, 90*time.Second, "first commit on a new primary", func() (bool, string) {
		var ok bool
		first, ok = l.firstAckAfter(cut, oldPort)
		return ok, describe(h.status(t))
	})
	newPrimary := c.Primary()
	if newPrimary == old {
		t.Fatalf("primary is still %s", old)
	}
	t.Logf("cut of %s -> first commit on %s: %v", old, newPrimary, first.Sub(cut).Round(time.Millisecond))
	l.waitAcks(t, 50, 30*time.Second)

	// Heal after a while on the other side.
	time.Sleep(2 * time.Second)
	if err := n.Heal(ctx, old); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	h.waitHealthy(t, newPrimary, 2*time.Minute)
	t.Logf("heal -> %s streams again: %v", old, time.Since(healed).Round(time.Millisecond))
	l.waitAcks(t, 50, 30*time.Second)
	l.stop()

	l.mu.Lock()
	var acks []drill.NodeAck
	for i, id := range l.acked {
		// The ledger knows when each commit returned, not when it began:
		// its start is at most the insert timeout earlier.
		acks = append(acks, drill.NodeAck{Node: portNode[l.ackOn[i]], Tag: fmt.Sprint(id), Start: l.ackAt[i].Add(-5 * time.Second), End: l.ackAt[i]})
	}
	l.mu.Unlock()
	v := drill.JudgePartition(watch.Stop(), acks)
	t.Logf("watch: %d samples, unreached %v, no primary for at most %.0f ms, tenures %+v", v.Samples, v.Unreached, v.NoPrimaryMS, v.Tenures)
	if !v.OK() {
		t.Errorf("partition verdict: %v", v.Problems)
	}
	if v.Unreached[old] == 0 {
		t.Errorf("the watch reached %s all along the cut", old)
	}

	if inode(t, pgVersion) != inodeBefore {
		t.Errorf("%s was rebuilt from a base backup, not rewound: its data was dropped while its host was cut off", old)
	}

	vctx := testCtx(t, time.Minute)
	for _, node := range c.Nodes() {
		if node != newPrimary {
			h.waitCaughtUp(t, node, 30*time.Second)
		}
		l.verify(t, vctx, node)
	}
}

// inode returns the inode number of the file at path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
