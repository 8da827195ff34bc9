package counter_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"socnet/internal/counter"
)

// TestReconcileRepairsDriftWhileEventsRace plants drift (messages marked
// read without events, a drift no later event heals) in four directions, then repairs it while messages and
// read marks keep flowing in exactly those directions. Every event of a
// direction is acknowledged through an ackTap, so the test knows each
// direction's whole history, and with the exact change of every live event
// (+1 per message, minus the count of every read) it knows the true count
// after each state. The repair must not overwrite a live event's effect:
// from the repair on, every state of a direction, the repair's and each
// live event's after it, must carry the true count; and with no repair
// after the traffic stops, the counters end equal to the unread messages.
func TestReconcileRepairsDriftWhileEventsRace(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	tap := s.startTappedRelay(t)
	ids := s.mustUsers(t, 4)
	ctx := context.Background()
	var dirs []direction // reader, sender
	for _, reader := range ids[:2] {
		for _, sender := range ids[2:] {
			dirs = append(dirs, direction{user: reader, peer: sender})
		}
	}
	for _, d := range dirs {
		for range 5 {
			s.mustSend(t, d.peer, d.user)
		}
	}
	s.mustConverge(t, 30*time.Second)
	// Messages read behind the saga's back: the dialogs database's running
	// count and every event after it count them as unread, until a repair.
	const planted = 3
	for _, d := range dirs {
		_, err := s.admin.Exec(ctx, `UPDATE messages SET read_at = now() WHERE id IN (
			SELECT id FROM messages WHERE from_user_id = $1 AND to_user_id = $2 ORDER BY created_at LIMIT $3)`, d.peer, d.user, planted)
		if err != nil {
			t.Fatal(err)
		}
	}
	// The starting point of the live history: each direction's state
	// number and its true count.
	startSeq := map[direction]int64{}
	for d, seq := range s.recordedStates(t) {
		startSeq[direction{d.User, d.Peer}] = seq
	}
	startTruth := s.truth(t)
	for _, d := range dirs {
		if startSeq[d] != 5 || startTruth[d] != 5-planted {
			t.Fatalf("direction %v starts at seq %d with %d unread; want 5 and %d", d, startSeq[d], startTruth[d], 5-planted)
		}
	}

	var mu sync.Mutex
	readCount := map[string]int{} // event id of each read -> messages it marked
	var sends atomic.Int64
	stop := startTraffic(t, 3, func(w, i int) error {
		d := dirs[(w+i)%len(dirs)]
		if w < 2 {
			if err := s.send(d.peer, d.user); err != nil {
				return err
			}
			sends.Add(1)
			return nil
		}
		// As the API: commit the read, then apply it directly.
		r, err := s.dialogs.MarkRead(ctx, d.user, d.peer)
		if err != nil {
			return err
		}
		mu.Lock()
		readCount[r.EventID] = r.Count
		mu.Unlock()
		if err := s.client.ApplyRead(ctx, r); err != nil {
			return fmt.Errorf("ApplyRead: %w", err)
		}
		time.Sleep(20 * time.Millisecond) // let messages pile up between reads
		return nil
	})
	waitSends := func(n int64) {
		at := sends.Load()
		waitFor(t, 30*time.Second, "messages flowing", func() error {
			if sends.Load() < at+n {
				return context.DeadlineExceeded
			}
			return nil
		})
	}
	waitSends(40)
	repaired := map[direction]bool{}
	for run := 0; len(repaired) < len(dirs) && run < 6; run++ {
		rep := s.reconcile(t, true)
		for _, d := range rep.Drifts {
			if d.RepairError != "" {
				t.Errorf("repair of %s <- %s: %s", d.UserID, d.PeerID, d.RepairError)
			}
			if d.Repaired {
				repaired[direction{d.UserID, d.PeerID}] = true
			}
		}
		t.Logf("reconciliation %d under traffic: compared %d, %d drifts, %d unsettled", run+1, rep.Compared, len(rep.Drifts), rep.Unsettled)
	}
	if len(repaired) != len(dirs) {
		t.Fatalf("repaired %d of the %d drifting directions", len(repaired), len(dirs))
	}
	waitSends(40) // live events after the repairs too
	stop()
	s.waitDrained(t, 60*time.Second)

	// Each direction's history as counterd acknowledged it, by seq.
	history := map[direction][]counter.Event{}
	for _, e := range tap.events() {
		d := direction{e.UserID, e.PeerID}
		if e.Seq > startSeq[d] {
			history[d] = append(history[d], e)
		}
	}
	for _, d := range dirs {
		h := history[d]
		slices.SortFunc(h, func(a, b counter.Event) int { return cmp.Compare(a.Seq, b.Seq) })
		truth := startTruth[d]
		resetAt, before, after := int64(0), 0, 0
		wrong := false // report the first wrong state of a direction only
		for i, e := range h {
			if want := startSeq[d] + int64(i) + 1; e.Seq != want {
				t.Fatalf("direction %v: acknowledged states jump from %d to %d: an event was never acknowledged", d, want-1, e.Seq)
			}
			switch e.Kind {
			case counter.KindMessageSent:
				truth++
			case counter.KindDialogRead:
				mu.Lock()
				n, ok := readCount[e.ID]
				mu.Unlock()
				if !ok {
					t.Fatalf("direction %v: read event %s that the test did not make", d, e.ID)
				}
				truth -= n
			case counter.KindUnreadReset:
				if resetAt == 0 {
					resetAt = e.Seq
				}
			}
			switch {
			case resetAt == 0:
				before++
				// Before the repair the planted reads are not counted.
				if e.Unread != truth+planted && !wrong {
					wrong = true
					t.Errorf("direction %v seq %d (%s, before the repair): unread %d, want %d", d, e.Seq, e.Kind, e.Unread, truth+planted)
				}
			default:
				if e.Kind != counter.KindUnreadReset {
					after++
				}
				if e.Unread != truth && !wrong {
					wrong = true
					t.Errorf("direction %v seq %d (%s, after the repair at seq %d): unread %d, want the true %d",
						d, e.Seq, e.Kind, resetAt, e.Unread, truth)
				}
			}
		}
		if resetAt == 0 || before == 0 || after == 0 {
			t.Errorf("direction %v: repair at seq %d with %d live events before it and %d after; want a repair amid live events",
				d, resetAt, before, after)
		}
		t.Logf("direction %v: repair at seq %d, %d live events before, %d after, ends with %d unread", d, resetAt, before, after, truth)
	}
	// No repair since the traffic stopped: the counters are exact by the
	// events alone.
	if diff := diffCounts(s.counters(t), s.truth(t)); diff != "" {
		t.Errorf("counters differ from the unread messages:\n%s", diff)
	}
	s.mustConverge(t, 30*time.Second)
}
