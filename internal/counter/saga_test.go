package counter_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/counter"
	"socnet/internal/drill"
	"socnet/internal/social"
)

// TestConcurrentSendersToOneRecipient: several peers write to one user at
// once; every dialog's count and the total are exact.
func TestConcurrentSendersToOneRecipient(t *testing.T) {
	s := mustStack(t, stackOptions{})
	ids := s.mustUsers(t, 6)
	me, peers := ids[0], ids[1:]
	const each = 30
	// Peer i sends each+i messages, so that every dialog has its own count.
	stop := startTraffic(t, len(peers), func(w, i int) error {
		if i == each+w {
			return errDone
		}
		return s.send(peers[w], me)
	})
	// Some traffic the other way, which must not count for me.
	for range 5 {
		s.mustSend(t, me, peers[0])
	}
	waitFor(t, 30*time.Second, "every message sent", func() error {
		if n := len(s.truth(t)); n < len(peers)+1 {
			return fmt.Errorf("%d directions with unread messages", n)
		}
		var sent int
		if err := s.admin.QueryRow(context.Background(), `SELECT count(*) FROM messages WHERE to_user_id = $1`, me).Scan(&sent); err != nil {
			return err
		}
		if want := len(peers)*each + len(peers)*(len(peers)-1)/2; sent != want {
			return fmt.Errorf("%d of %d messages sent", sent, want)
		}
		return nil
	})
	stop()
	s.mustConverge(t, 30*time.Second)

	got, err := s.client.Unread(context.Background(), me)
	if err != nil {
		t.Fatalf("Unread: %v", err)
	}
	want := social.Unread{}
	for i := len(peers) - 1; i >= 0; i-- { // most unread first
		want.Dialogs = append(want.Dialogs, social.DialogUnread{PeerID: peers[i], Unread: each + i})
		want.Total += each + i
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unread of the recipient (-want +got):\n%s", diff)
	}
	other, err := s.client.Unread(context.Background(), peers[0])
	if err != nil || other.Total != 5 {
		t.Errorf("unread of the first peer: %+v, %v; want a total of 5", other, err)
	}
}

// outboxEvents returns the counter events in the outbox, decoded from the
// payloads as the relay's contract describes them.
func (s *stack) outboxEvents(t *testing.T) []counter.Event {
	t.Helper()
	rows, err := s.admin.Query(context.Background(), `SELECT id, kind, payload, created_at FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []counter.Event
	for rows.Next() {
		var e counter.Event
		var payload []byte
		if err := rows.Scan(&e.OutboxID, &e.Kind, &payload, &e.CommittedAt); err != nil {
			t.Fatal(err)
		}
		var p struct {
			EventID string `json:"event_id"`
			UserID  string `json:"user_id"`
			PeerID  string `json:"peer_id"`
			Seq     int64  `json:"seq"`
			Unread  int    `json:"unread"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Fatal(err)
		}
		e.ID, e.UserID, e.PeerID, e.Seq, e.Unread = p.EventID, p.UserID, p.PeerID, p.Seq, p.Unread
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEveryEventDeliveredTwice delivers each event a second time on
// purpose, in a shuffled order: nothing changes and every one is counted as
// a discarded duplicate.
func TestEveryEventDeliveredTwice(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	ids := s.mustUsers(t, 4)
	for i := range 40 {
		s.mustSend(t, ids[i%4], ids[(i%4+1+(i/4)%3)%4])
	}
	for _, r := range [][2]string{{ids[1], ids[0]}, {ids[2], ids[1]}} {
		if _, err := s.dialogs.MarkRead(context.Background(), r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	for range 6 {
		s.mustSend(t, ids[0], ids[1])
	}
	events := s.outboxEvents(t)
	if len(events) != 48 {
		t.Fatalf("%d events in the outbox, want 48", len(events))
	}
	s.startRelay(t)
	s.mustConverge(t, 30*time.Second)
	before := s.counters(t)
	base := "http://" + s.counterdAddr
	dup0 := metric(t, base, `socnet_counter_events_total{outcome="duplicate"}`)

	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	for len(events) > 0 {
		n := min(len(events), 7)
		res, err := s.client.Apply(context.Background(), counter.Batch{Events: events[:n]})
		if err != nil {
			t.Fatalf("deliver again: %v", err)
		}
		for _, r := range res.Results {
			if r.Outcome != counter.OutcomeDuplicate {
				t.Errorf("event %s delivered again: %s %s, want duplicate", r.ID, r.Outcome, r.Reason)
			}
		}
		events = events[n:]
	}
	if diff := diffCounts(s.counters(t), before); diff != "" {
		t.Errorf("counters changed by duplicates:\n%s", diff)
	}
	if dup := metric(t, base, `socnet_counter_events_total{outcome="duplicate"}`) - dup0; dup != 48 {
		t.Errorf("%v duplicates counted, want 48", dup)
	}
	s.mustConverge(t, 10*time.Second)
}

// TestKilledProcessesConverge SIGKILLs counterd, the relay and an API-like
// sender while messages flow and reads happen. It judges what the killed
// processes acknowledged where they acknowledged it: every event counterd
// acknowledged to the relay (recorded on the wire by an ackTap) must be in
// counterd's inbox and reflected by its counter after its SIGKILLs, and
// every acknowledged message, those of the killed sender included, must be
// stored with its event acknowledged by counterd. Then the counters are
// exact.
func TestKilledProcessesConverge(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	tap := s.startTappedRelay(t)
	ids := s.mustUsers(t, 5)
	senderEnv := func(seed, n int) []string {
		return []string{envMainDB + "=" + s.mainDSN, envCounterURL + "=http://" + s.counterdAddr,
			envUsers + "=" + strings.Join(ids, ","), envMessages + "=" + strconv.Itoa(n),
			envReadEvery + "=7", envSeed + "=" + strconv.Itoa(seed)}
	}
	victim, survivor := newLedger(), newLedger()
	killed := startProc(t, "sender-1", victim, senderEnv(1, 100000)...)
	steady := startProc(t, "sender-2", survivor, senderEnv(2, 1000)...)

	// Each kill happens once the stream is visibly moving.
	progress := func(l *ledger, n int) {
		waitFor(t, 30*time.Second, "sends to go on", func() error {
			if len(l.acked()) < n {
				return context.DeadlineExceeded
			}
			return nil
		})
	}
	progress(survivor, 100)
	s.counterd.kill()
	t.Log("counterd killed")
	progress(survivor, 300)
	if n := s.outboxLen(t); n == 0 {
		t.Error("the outbox stayed empty while counterd was dead")
	}
	s.counterd.start()
	progress(survivor, 400)
	s.relay.kill()
	t.Log("relay killed")
	progress(survivor, 550)
	killed.kill()
	t.Log("sender-1 killed after", len(victim.acked()), "acknowledged sends")
	s.relay.start()
	progress(survivor, 650)
	s.counterd.restart()
	t.Log("counterd killed and restarted")
	progress(survivor, 750)
	s.relay.restart()
	t.Log("relay killed and restarted")
	if err := steady.wait(2 * time.Minute); err != nil {
		t.Fatal(err)
	}

	for _, l := range []*ledger{victim, survivor} {
		acked := l.acked()
		var stored int
		err := s.admin.QueryRow(context.Background(), `SELECT count(*) FROM messages WHERE id = ANY($1::uuid[])`, acked).Scan(&stored)
		if err != nil || stored != len(acked) {
			t.Errorf("%d of %d acknowledged messages stored (%v)", stored, len(acked), err)
		}
	}
	s.waitHealthy(t)
	s.waitDrained(t, 60*time.Second)

	// Every event counterd acknowledged, before or after its SIGKILLs, is
	// in its inbox: an apply is acknowledged only after it committed.
	events := tap.events()
	if lost := drill.JudgeAcknowledged(events, s.primaryInbox(t)); len(lost) != 0 {
		t.Fatalf("%d of %d events counterd acknowledged are not in its inbox:\n%s", len(lost), len(events), describeLost(lost))
	}
	// Each stored message has one message_sent event, acknowledged by
	// counterd once the outbox drained (nothing was dead-lettered).
	sentEvents := map[direction]int{}
	for _, e := range events {
		if e.Kind == counter.KindMessageSent {
			sentEvents[direction{e.UserID, e.PeerID}]++
		}
	}
	if diff := diffCounts(sentEvents, s.messagesByDirection(t)); diff != "" {
		t.Errorf("message_sent events counterd acknowledged differ from the stored messages:\n%s", diff)
	}
	t.Logf("%d events acknowledged by counterd, all in its inbox", len(events))
	s.mustConverge(t, 60*time.Second)
}

// messagesByDirection counts the stored messages of every direction, read
// or not.
func (s *stack) messagesByDirection(t testing.TB) map[direction]int { return s.countMessages(t, "") }

// waitHealthy waits for counterd to answer again after a restart.
func (s *stack) waitHealthy(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "counterd healthy", func() error {
		return s.client.Healthy(context.Background())
	})
}

// TestReadAndSendRacing marks a dialog read, as the API does (commit, then
// apply the receipt directly), while its messages keep coming: the count
// ends equal to the messages still unread.
func TestReadAndSendRacing(t *testing.T) {
	s := mustStack(t, stackOptions{})
	ids := s.mustUsers(t, 3)
	me, peer, other := ids[0], ids[1], ids[2]
	ctx := context.Background()
	senders := []string{peer, peer, other}
	stop := startTraffic(t, len(senders), func(w, _ int) error { return s.send(senders[w], me) })
	for range 25 {
		r, err := s.dialogs.MarkRead(ctx, me, peer)
		if err != nil {
			t.Fatalf("MarkRead: %v", err)
		}
		if err := s.client.ApplyRead(ctx, r); err != nil {
			t.Fatalf("ApplyRead: %v", err)
		}
	}
	stop()
	if _, err := s.dialogs.MarkRead(ctx, me, other); err != nil {
		t.Fatal(err)
	}
	s.mustConverge(t, 30*time.Second)
}
