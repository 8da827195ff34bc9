package drill_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"socnet/internal/drill"
)

// TestWrongPromotionIsSeen is the negative control of the failover drill's
// verdict: with the asynchronous replica held back as the drill holds it,
// the primary SIGKILLed, and the held replica promoted by force (the
// promotion a wrong decision would make), verification must report the
// writes acknowledged during the hold as lost on the new primary.
func TestWrongPromotionIsSeen(t *testing.T) {
	s := mustCluster(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes, err := drill.WaitHealthy(ctx, s.target.Cluster, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var primary, async string
	for _, n := range nodes {
		switch {
		case n.Role == drill.RolePrimary:
			primary = n.Name
		case n.SyncState != "sync" && n.SyncState != "quorum":
			async = n.Name
		}
	}
	if primary == "" || async == "" {
		t.Fatalf("no primary or no asynchronous replica in %+v", nodes)
	}

	l := drill.NewLedger(drill.NewRunID(time.Now()))
	write := func(n int) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range n {
					seq, tag := l.Next()
					start := time.Now()
					res := s.target.Writer.Write(ctx, tag)
					l.Record(drill.Attempt{Seq: seq, Tag: tag, Outcome: res.Outcome, ID: res.ID, Error: res.Error, Start: start, End: time.Now()})
				}
			})
		}
		wg.Wait()
	}
	write(10)
	// The writes so far reach the replica before the hold, so that what
	// it lacks is exactly what the hold kept from it.
	caughtUp := time.Now().Add(30 * time.Second)
	for {
		gap, err := drill.ReceiveGap(ctx, nodes, async)
		if err != nil {
			t.Fatal(err)
		}
		if gap == 0 {
			break
		}
		if time.Now().After(caughtUp) {
			t.Fatalf("%s still %d bytes behind after 30 s", async, gap)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hold, err := drill.HoldBack(ctx, nodes, async)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Release() })
	write(10)
	gap, err := drill.ReceiveGap(ctx, nodes, async)
	if err != nil {
		t.Fatal(err)
	}
	if gap <= 0 {
		t.Fatalf("the held replica %s is %d bytes behind", async, gap)
	}
	var heldAcks []string
	for _, a := range l.Attempts() {
		if a.Outcome != drill.Acknowledged {
			t.Fatalf("write %s not acknowledged: %+v", a.Tag, a)
		}
		if a.Start.After(hold.At) {
			heldAcks = append(heldAcks, a.Tag)
		}
	}

	if _, err := s.target.Cluster.Kill(ctx, primary); err != nil {
		t.Fatal(err)
	}
	if err := hold.Release(); err != nil {
		t.Fatal(err)
	}
	out, err := s.c.Promote(ctx, async, true)
	if err != nil {
		t.Fatalf("forced promotion of %s: %v", async, err)
	}
	t.Logf("forced promotion: %s", out.Message)

	v, err := drill.VerifyWrites(ctx, s.target, l.Prefix(), l.Attempts(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verdict: %+v", v)
	if v.OK() || v.Lost == 0 {
		t.Fatalf("the verdict after promoting the held-back replica: ok %v, lost %d", v.OK(), v.Lost)
	}
	if v.Reference != async {
		t.Errorf("reference node %s, want the promoted %s", v.Reference, async)
	}
	i := slices.IndexFunc(v.Nodes, func(n drill.NodeVerdict) bool { return n.Node == async })
	if i < 0 {
		t.Fatalf("no verdict on %s", async)
	}
	nv := v.Nodes[i]
	if nv.Err != "" || nv.Lost == 0 || len(nv.LostTags) == 0 {
		t.Fatalf("%s: lost %d %q (error %q), want the writes of the hold", async, nv.Lost, nv.LostTags, nv.Err)
	}
	// Every write the new primary lacks was acknowledged while it was
	// held back: the loss is the hold's, and all of it is seen (the
	// report quotes a few tags and counts the rest).
	for _, tag := range nv.LostTags {
		if !slices.Contains(heldAcks, tag) {
			t.Errorf("%s lacks %s, which was acknowledged before the hold", async, tag)
		}
	}
	if nv.Lost != len(heldAcks) {
		t.Errorf("%s lacks %d writes, want the %d acknowledged while it was held back", async, nv.Lost, len(heldAcks))
	}
}

// TestStaleReadsAreSeen is the negative control of the history check on a
// real cluster: an API that lets a replica lag an hour serves reads from
// the asynchronous replica while the drill holds it back, and the check,
// which holds reads to apiLag+apiHealth, must report stale reads.
func TestStaleReadsAreSeen(t *testing.T) {
	s := mustCluster(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sessions := mustAPI(t, ctx, s.c, testLog(t), time.Hour)
	nodes, err := drill.WaitHealthy(ctx, s.target.Cluster, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var async string
	for _, n := range nodes {
		if n.Role == drill.RoleReplica && n.SyncState != "sync" && n.SyncState != "quorum" {
			async = n.Name
		}
	}
	hold, err := drill.HoldBack(ctx, nodes, async)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Release() })
	ops, err := sessions.Record(ctx, drill.NewRunID(time.Now()), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v := drill.CheckHistory(ops, apiLag+apiHealth)
	t.Logf("history: %d ops, counts %v, problems %q", v.Ops, v.Counts, v.Problems())
	if v.Counts[drill.ViolationStale] == 0 {
		t.Fatalf("no stale read reported while %s was held back and still served reads", async)
	}
	for _, e := range v.Examples {
		if e.Kind != drill.ViolationStale {
			continue
		}
		w, r := e.Ops[0], e.Ops[1]
		if w.Kind != drill.OpWrite || r.Kind != drill.OpRead || w.Key != r.Key || w.Outcome != drill.Acknowledged ||
			r.Invoke.Sub(w.Complete) <= apiLag+apiHealth || slices.Contains(r.Seen, w.Value) {
			t.Errorf("the example does not show a stale read: %+v", e)
		}
	}
	// Dialogs are read from the primary: read-your-writes holds.
	if n := v.Counts[drill.ViolationRYW]; n != 0 {
		t.Errorf("%d read-your-writes violations on dialogs read from the primary", n)
	}
}

// TestKillWaitsForAHeldAck: the failover drill's kill waits for a write
// acknowledged after the hold, so that a hold that took the whole time to
// the kill (a busy machine) still leaves writes the held replica lacks.
func TestKillWaitsForAHeldAck(t *testing.T) {
	ctx := context.Background()
	l := drill.NewLedger("run")
	held := time.Now()
	l.Record(drill.Attempt{Seq: 1, Outcome: drill.Acknowledged, Start: held.Add(-time.Millisecond), End: held})
	go func() {
		time.Sleep(200 * time.Millisecond)
		l.Record(drill.Attempt{Seq: 2, Outcome: drill.Failed, Start: time.Now(), End: time.Now()})
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		l.Record(drill.Attempt{Seq: 3, Outcome: drill.Acknowledged, Start: start, End: time.Now()})
	}()
	began := time.Now()
	if err := drill.WaitAckAfter(ctx, l, held, time.Minute); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited < 300*time.Millisecond {
		t.Errorf("returned after %v, before the first write acknowledged after the hold", waited)
	}
	if !l.LatestAckStart().After(held) {
		t.Errorf("no acknowledged write after the hold when the wait ended")
	}

	// With no such write, the wait ends at its limit.
	began = time.Now()
	if err := drill.WaitAckAfter(ctx, drill.NewLedger("none"), time.Now(), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited < 100*time.Millisecond || waited > 30*time.Second {
		t.Errorf("wait without acknowledgements lasted %v, want its limit", waited)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := drill.WaitAckAfter(cctx, drill.NewLedger("cancelled"), time.Now(), time.Minute); err == nil {
		t.Error("a cancelled wait returned no error")
	}
}
