package counter_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"socnet/internal/counter"
	"socnet/internal/drill"
	"socnet/internal/pgtest"
)

// TestLossCheckSeesADroppedEvent is the negative control of the loss
// check: it drops acknowledged events from the counter primary, as a
// failover to a node that lacks them would, and the check must name each
// one. The first dropped event is a read mark that later messages
// overtook: the counts stay exact and reconciliation finds no drift, so
// only the inbox shows the loss. The second is the last message of its
// dialog, with its effect on the counter undone.
func TestLossCheckSeesADroppedEvent(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	tap := s.startTappedRelay(t)
	ids := s.mustUsers(t, 3)
	a, b, c := ids[0], ids[1], ids[2]
	ctx := context.Background()
	for range 3 {
		s.mustSend(t, a, b)
	}
	read, err := s.dialogs.MarkRead(ctx, b, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.client.ApplyRead(ctx, read); err != nil {
		t.Fatalf("ApplyRead: %v", err)
	}
	tap.add(counter.EventFromReceipt(read))
	for range 2 {
		s.mustSend(t, a, b)
		s.mustSend(t, a, c)
	}
	s.mustConverge(t, 30*time.Second)
	acked := tap.events()
	if lost := drill.JudgeAcknowledged(acked, s.primaryInbox(t)); len(lost) != 0 {
		t.Fatalf("before any drop, the check reports lost events:\n%s", describeLost(lost))
	}
	if lost := drill.JudgeStates(s.recordedStates(t), nil, s.primaryInbox(t)); len(lost) != 0 {
		t.Fatalf("before any drop, the state check reports lost states:\n%s", describeLost(lost))
	}
	var last counter.Event // the last message a -> c
	for _, e := range acked {
		if e.UserID == c && e.PeerID == a && e.Seq > last.Seq {
			last = e
		}
	}
	if read.Seq != 4 || last.Seq != 2 {
		t.Fatalf("read mark at seq %d, last message to c at seq %d; want 4 and 2", read.Seq, last.Seq)
	}

	err = s.counterDB.Transact(ctx, func(q pgx.Tx) error {
		if _, err := q.Exec(ctx, `DELETE FROM inbox WHERE event_id = ANY($1::uuid[])`, []string{read.EventID, last.ID}); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `UPDATE counters SET seq = 1, unread = 1 WHERE user_id = $1 AND peer_id = $2`, c, a)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The counts cannot see the hidden read mark.
	if diff := diffCounts(s.counters(t), s.truth(t)); diff != "user "+c+" peer "+a+": counter 1, unread 2" {
		t.Errorf("counts after the drops differ in:\n%s\nwant only the last message to c", diff)
	}
	want := []drill.LostEvent{
		{ID: read.EventID, Kind: counter.KindDialogRead, Direction: drill.Direction{User: b, Peer: a}, Seq: 4,
			Reason: "not in the inbox"},
		{ID: last.ID, Kind: counter.KindMessageSent, Direction: drill.Direction{User: c, Peer: a}, Seq: 2,
			Reason: "not in the inbox; the counter holds seq 1, older than the event"},
	}
	byDirection := func(l []drill.LostEvent) []drill.LostEvent {
		if len(l) == 2 && l[0].User != b {
			l[0], l[1] = l[1], l[0]
		}
		return l
	}
	if diff := cmp.Diff(want, byDirection(drill.JudgeAcknowledged(acked, s.primaryInbox(t)))); diff != "" {
		t.Errorf("lost events (-want +got):\n%s", diff)
	}
	wantStates := []drill.LostEvent{
		{Direction: drill.Direction{User: b, Peer: a}, Seq: 4, Reason: "not in the inbox"},
		{Direction: drill.Direction{User: c, Peer: a}, Seq: 2, Reason: "not in the inbox"},
		{Direction: drill.Direction{User: c, Peer: a}, Seq: 2, Reason: "the counter holds seq 1, older than the last acknowledged state"},
	}
	gotStates := drill.JudgeStates(s.recordedStates(t), nil, s.primaryInbox(t))
	if len(gotStates) == 3 && gotStates[0].User != b {
		gotStates = append(gotStates[2:], gotStates[:2]...)
	}
	if diff := cmp.Diff(wantStates, gotStates); diff != "" {
		t.Errorf("lost states (-want +got):\n%s", diff)
	}
	// A dead-lettered state is not expected in the inbox.
	dead := map[drill.Direction][]int64{{User: b, Peer: a}: {4}, {User: c, Peer: a}: {2}}
	if lost := drill.JudgeStates(s.recordedStates(t), dead, s.primaryInbox(t)); len(lost) != 0 {
		t.Errorf("with both states dead-lettered, the state check reports:\n%s", describeLost(lost))
	}
}

// TestLossCheckSeesAPromotedReplicaThatLacksEvents is the negative control
// of the failover check: the counter database's replica stops receiving
// WAL, counterd acknowledges more events on the primary, the primary is
// SIGKILLed and the replica promoted. The check on the promoted node must
// name exactly the events acknowledged after the cut.
func TestLossCheckSeesAPromotedReplicaThatLacksEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	primary := pgtest.MustNode(t, "counter-p", nil)
	replica := mustReplica(t, ctx, "counter-r", primary)
	s := mustStack(t, stackOptions{counterDSNs: []string{primary.DSN(""), replica.DSN("")}, noRelay: true})
	tap := s.startTappedRelay(t)
	ids := s.mustUsers(t, 3)
	a, b, c := ids[0], ids[1], ids[2]
	sendAndRead := func() {
		for range 3 {
			s.mustSend(t, a, b)
			s.mustSend(t, c, b)
		}
		r, err := s.dialogs.MarkRead(ctx, b, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.client.ApplyRead(ctx, r); err != nil {
			t.Fatalf("ApplyRead: %v", err)
		}
		tap.add(counter.EventFromReceipt(r))
		s.mustSend(t, a, b)
	}
	sendAndRead()
	s.mustConverge(t, 30*time.Second)

	// The replica replays everything so far, then hears no more.
	pconn, rconn := mustConn(t, primary.DSN("")), mustConn(t, replica.DSN(""))
	var target string
	if err := pconn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the replica caught up", func() error {
		var ok bool
		if err := rconn.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, target).Scan(&ok); err != nil || !ok {
			return fmt.Errorf("replayed up to %s: %v, %v", target, ok, err)
		}
		return nil
	})
	for _, q := range []string{`ALTER SYSTEM SET primary_conninfo = ''`, `SELECT pg_reload_conf()`} {
		if _, err := rconn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the replica's WAL receiver gone", func() error {
		var n int
		if err := pconn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication`).Scan(&n); err != nil || n > 0 {
			return fmt.Errorf("%d replication connections (%v)", n, err)
		}
		return nil
	})
	before := len(tap.events())
	sendAndRead()
	s.waitDrained(t, 30*time.Second)
	after := tap.events()[before:]
	if len(after) != 8 {
		t.Fatalf("%d events acknowledged after the cut, want 8", len(after))
	}
	if lost := drill.JudgeAcknowledged(tap.events(), s.primaryInbox(t)); len(lost) != 0 {
		t.Fatalf("the primary lacks acknowledged events:\n%s", describeLost(lost))
	}

	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	lost := drill.JudgeAcknowledged(tap.events(), nodeInbox(t, replica.DSN("")))
	var want, got []string
	for _, e := range after {
		want = append(want, e.ID)
	}
	for _, l := range lost {
		got = append(got, l.ID)
		if !strings.HasPrefix(l.Reason, "not in the inbox") {
			t.Errorf("lost %s: %s", l.ID, l.Reason)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events reported lost on the promoted replica (-want +got):\n%s", diff)
	}
	t.Logf("the promoted replica lacks %d events, all named:\n%s", len(lost), describeLost(lost))
}
