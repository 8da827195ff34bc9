package postgres_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"socnet/internal/postgres"
	"socnet/internal/social"
)

// unreadEvent is the counter state an outbox event was stamped with.
type unreadEvent struct {
	Kind    string
	EventID string `json:"event_id"`
	UserID  string `json:"user_id"`
	PeerID  string `json:"peer_id"`
	Seq     int64  `json:"seq"`
	Unread  int    `json:"unread"`
	Count   *int   `json:"count"`
}

// unreadEvents returns the outbox events about direction (user reads peer)
// in seq order.
func (e *env) unreadEvents(tb testing.TB, user, peer string) []unreadEvent {
	tb.Helper()
	rows, err := e.admin.Query(context.Background(), `SELECT kind, payload FROM outbox
		WHERE payload->>'user_id' = $1 AND payload->>'peer_id' = $2 ORDER BY (payload->>'seq')::bigint`, user, peer)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []unreadEvent
	for rows.Next() {
		var kind string
		var payload []byte
		if err := rows.Scan(&kind, &payload); err != nil {
			tb.Fatal(err)
		}
		ev := unreadEvent{Kind: kind}
		if err := json.Unmarshal(payload, &ev); err != nil {
			tb.Fatalf("payload %s: %v", payload, err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func (e *env) mustSend(tb testing.TB, from, to string) {
	tb.Helper()
	if err := e.dialogs.SendMessage(context.Background(), &social.Message{From: from, To: to, Text: "привет"}); err != nil {
		tb.Fatalf("send %s -> %s: %v", from, to, err)
	}
}

func TestSendMessageStampsTheDirectionsState(t *testing.T) {
	e := mustEnv(t)
	a, b := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков")
	for range 3 {
		e.mustSend(t, a.ID, b.ID)
	}
	e.mustSend(t, b.ID, a.ID)

	type state struct {
		Kind   string
		Seq    int64
		Unread int
	}
	var got []state
	for _, ev := range e.unreadEvents(t, b.ID, a.ID) {
		got = append(got, state{ev.Kind, ev.Seq, ev.Unread})
	}
	want := []state{{"message_sent", 1, 1}, {"message_sent", 2, 2}, {"message_sent", 3, 3}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events of b reading a (-want +got):\n%s", diff)
	}
	if n := len(e.unreadEvents(t, a.ID, b.ID)); n != 1 {
		t.Errorf("%d events of a reading b, want 1", n)
	}
}

func TestMarkRead(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a, b, c := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков"), e.mustUser(t, "Вера", "Галкина")
	for range 3 {
		e.mustSend(t, a.ID, b.ID)
	}
	for range 2 {
		e.mustSend(t, c.ID, b.ID)
	}
	e.mustSend(t, b.ID, a.ID)

	r, err := e.dialogs.MarkRead(ctx, b.ID, a.ID)
	if err != nil {
		t.Fatalf("MarkRead: %v", err)
	}
	if _, err := uuid.Parse(r.EventID); err != nil || r.OutboxID == 0 || r.At.IsZero() {
		t.Errorf("receipt %+v lacks its event", r)
	}
	want := social.ReadReceipt{UserID: b.ID, PeerID: a.ID, Count: 3, Seq: 4, Unread: 0}
	got := r
	got.EventID, got.OutboxID, got.At = "", 0, want.At
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("receipt (-want +got):\n%s", diff)
	}
	// Only a's messages to b are read.
	unread := func(from, to string) int {
		return e.count(t, `SELECT count(*) FROM messages WHERE from_user_id = $1 AND to_user_id = $2 AND read_at IS NULL`, from, to)
	}
	if n := unread(a.ID, b.ID); n != 0 {
		t.Errorf("%d messages a -> b still unread", n)
	}
	if n, m := unread(c.ID, b.ID), unread(b.ID, a.ID); n != 2 || m != 1 {
		t.Errorf("unread c -> b %d (want 2), b -> a %d (want 1): another dialog was marked", n, m)
	}
	// The event was written by the transaction that marked the messages.
	var same bool
	err = e.admin.QueryRow(ctx, `SELECT bool_and(o.xmin = m.xmin) FROM outbox o, messages m
		WHERE o.id = $1 AND m.from_user_id = $2 AND m.to_user_id = $3`, r.OutboxID, a.ID, b.ID).Scan(&same)
	if err != nil || !same {
		t.Errorf("the read and its event are not one transaction (same=%v, err=%v)", same, err)
	}
	evs := e.unreadEvents(t, b.ID, a.ID)
	last := evs[len(evs)-1]
	if last.Kind != postgres.OutboxDialogRead || last.EventID != r.EventID || last.Count == nil || *last.Count != 3 {
		t.Errorf("last event %+v, want the read's with count 3", last)
	}
	var aggregate string
	if err := e.admin.QueryRow(ctx, `SELECT aggregate FROM outbox WHERE id = $1`, r.OutboxID).Scan(&aggregate); err != nil || aggregate != postgres.DialogKey(a.ID, b.ID) {
		t.Errorf("aggregate %q (%v), want the dialog's key", aggregate, err)
	}

	// Again: nothing more to read, a new state all the same.
	r2, err := e.dialogs.MarkRead(ctx, b.ID, a.ID)
	if err != nil {
		t.Fatalf("second MarkRead: %v", err)
	}
	if r2.Count != 0 || r2.Seq != 5 || r2.Unread != 0 || r2.EventID == r.EventID {
		t.Errorf("second receipt %+v, want count 0, seq 5, unread 0, a new event", r2)
	}
}

func TestMarkReadErrorsWriteNothing(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a := e.mustUser(t, "Анна", "Белова")
	missing := "01900000-0000-7000-8000-000000000001"
	cases := []struct {
		name       string
		user, peer string
		code       string
	}{
		{"malformed user", "nope", a.ID, social.EINVALID},
		{"malformed peer", a.ID, "0190-x", social.EINVALID},
		{"yourself", a.ID, a.ID, social.EINVALID},
		{"missing peer", a.ID, missing, social.ENOTFOUND},
		{"missing reader", missing, a.ID, social.ENOTFOUND},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.dialogs.MarkRead(ctx, tc.user, tc.peer)
			wantCode(t, err, tc.code)
		})
	}
	if n := e.count(t, `SELECT count(*) FROM outbox`) + e.count(t, `SELECT count(*) FROM dialog_unread`); n != 0 {
		t.Errorf("%d rows written by refused reads", n)
	}
}

// TestMarkReadRacingSends reads a dialog while its messages keep coming:
// every message is counted once, the running count always equals the
// unread messages, and the states form one gap-free sequence.
func TestMarkReadRacingSends(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a, b := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков")
	const senders, each, reads = 4, 15, 12
	var wg sync.WaitGroup
	errs := make(chan error, senders*each+reads)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				errs <- e.dialogs.SendMessage(ctx, &social.Message{From: a.ID, To: b.ID, Text: "ещё"})
			}
		}()
	}
	read := 0
	var readMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range reads {
			r, err := e.dialogs.MarkRead(ctx, b.ID, a.ID)
			errs <- err
			readMu.Lock()
			read += r.Count
			readMu.Unlock()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	unread := e.count(t, `SELECT count(*) FROM messages WHERE to_user_id = $1 AND read_at IS NULL`, b.ID)
	if unread+read != senders*each {
		t.Errorf("unread %d + read %d != sent %d", unread, read, senders*each)
	}
	evs := e.unreadEvents(t, b.ID, a.ID)
	if len(evs) != senders*each+reads {
		t.Fatalf("%d events, want %d", len(evs), senders*each+reads)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: the sequence has a gap or a repeat", i, ev.Seq)
		}
	}
	if last := evs[len(evs)-1]; last.Unread != unread {
		t.Errorf("last state says %d unread, the messages %d", last.Unread, unread)
	}
	var recorded int
	if err := e.admin.QueryRow(ctx, `SELECT unread FROM dialog_unread WHERE user_id = $1 AND peer_id = $2`, b.ID, a.ID).Scan(&recorded); err != nil || recorded != unread {
		t.Errorf("dialog_unread says %d (%v), the messages %d", recorded, err, unread)
	}
}
