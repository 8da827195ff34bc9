package counter_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// TestEventBounds: every kind is valid, and each bound holds exactly at its
// edge with the reason that names it.
func TestEventBounds(t *testing.T) {
	ok := counter.Event{ID: "01900000-0000-7000-8000-000000000001", Kind: counter.KindMessageSent,
		UserID: "01900000-0000-7000-8000-000000000002", PeerID: "01900000-0000-7000-8000-000000000003", Seq: 1}
	cases := []struct {
		name   string
		change func(*counter.Event)
		want   string
	}{
		{"message_sent", func(*counter.Event) {}, ""},
		{"dialog_read", func(e *counter.Event) { e.Kind = counter.KindDialogRead }, ""},
		{"unread_reset", func(e *counter.Event) { e.Kind = counter.KindUnreadReset }, ""},
		{"seq at the bound", func(e *counter.Event) { e.Seq = counter.MaxSeq }, ""},
		{"seq over the bound", func(e *counter.Event) { e.Seq = counter.MaxSeq + 1 }, "seq must be at most 9007199254740992"},
		{"seq 2^62", func(e *counter.Event) { e.Seq = 1 << 62 }, "seq must be at most 9007199254740992"},
		{"seq 0", func(e *counter.Event) { e.Seq = 0 }, "seq must be at least 1"},
		{"unread at the bound", func(e *counter.Event) { e.Unread = counter.MaxUnread }, ""},
		{"unread over the bound", func(e *counter.Event) { e.Unread = counter.MaxUnread + 1 }, "unread must be at most 2147483647"},
		{"unread 0", func(e *counter.Event) { e.Unread = 0 }, ""},
		{"unread -1", func(e *counter.Event) { e.Unread = -1 }, "unread must not be negative"},
		{"outbox id 0", func(e *counter.Event) { e.OutboxID = 0 }, ""},
		{"outbox id -1", func(e *counter.Event) { e.OutboxID = -1 }, "outbox_id must not be negative"},
		{"id with an upper-case A", func(e *counter.Event) { e.ID = "01900000-0000-7000-8000-00000000000A" }, "id must be a UUID"},
		{"id with an upper-case F", func(e *counter.Event) { e.ID = "01900000-0000-7000-8000-00000000000F" }, "id must be a UUID"},
		{"id with a lower-case f", func(e *counter.Event) { e.ID = "01900000-0000-7000-8000-00000000000f" }, ""},
		{"id in braces", func(e *counter.Event) { e.ID = "{01900000-0000-7000-8000-000000000001}" }, "id must be a UUID"},
		{"id without dashes", func(e *counter.Event) { e.ID = "01900000000070008000000000000001" }, "id must be a UUID"},
		{"kind unknown", func(e *counter.Event) { e.Kind = strings.Repeat("k", 50) },
			`kind "` + strings.Repeat("k", 40) + `" is not one of message_sent, dialog_read, unread_reset`},
		{"user id", func(e *counter.Event) { e.UserID = "me" }, "user_id must be a UUID"},
		{"peer id", func(e *counter.Event) { e.PeerID = "you" }, "peer_id must be a UUID"},
		{"self", func(e *counter.Event) { e.PeerID = e.UserID }, "user_id and peer_id must differ"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := ok
			tc.change(&e)
			if got := e.Validate(); got != tc.want {
				t.Errorf("Validate() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestResultDelivered(t *testing.T) {
	got := map[string]bool{}
	for _, o := range []string{counter.OutcomeApplied, counter.OutcomeStale, counter.OutcomeDuplicate, counter.OutcomeRejected, counter.OutcomeFailed} {
		got[o] = counter.Result{Outcome: o}.Delivered()
	}
	want := map[string]bool{"applied": true, "stale": true, "duplicate": true, "rejected": false, "failed": false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Delivered by outcome (-want +got):\n%s", diff)
	}
}

// TestApplyRecordsWhatItReceived: the inbox keeps each first delivery with
// its commit time (none when the sender gave none), and the delivery
// latency is observed once per first delivery that has one.
func TestApplyRecordsWhatItReceived(t *testing.T) {
	store, db, reg := mustStore(t)
	ctx := context.Background()
	u, p := newUUID(t), newUUID(t)
	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
	timed := counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: u, PeerID: p, Seq: 1, Unread: 1, CommittedAt: at}
	untimed := counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: u, PeerID: p, Seq: 2, Unread: 2}
	stale := counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: u, PeerID: p, Seq: 1, Unread: 7, CommittedAt: at}
	for _, b := range [][]counter.Event{{timed, untimed}, {stale, timed}} {
		if _, err := store.Apply(ctx, counter.Batch{Events: b}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	err := db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		rows, err := q.Query(ctx, `SELECT event_id::text, outcome, coalesce(committed_at::text, 'none') FROM inbox`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, outcome, committed string
			if err := rows.Scan(&id, &outcome, &committed); err != nil {
				return err
			}
			got[id] = outcome + " " + committed
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	var committed string
	if err := db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT $1::timestamptz::text`, at).Scan(&committed)
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{timed.ID: "stale " + committed, untimed.ID: "applied none", stale.ID: "stale " + committed}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inbox (-want +got):\n%s", diff)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var observed uint64
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "socnet_counter_delivery_latency_seconds" {
			observed, sum = mf.GetMetric()[0].GetHistogram().GetSampleCount(), mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	if observed != 2 || sum < 2*60 {
		t.Errorf("latency observed %d times, %.0fs in all; want 2 (the timed first deliveries), at least a minute each", observed, sum)
	}
}

// TestApplyIsolatesWhatTheDatabaseRefuses: when the database refuses one
// event of a batch (here a trigger standing in for any constraint), the
// others still apply, one at a time, and only that one fails, with the
// reason.
func TestApplyIsolatesWhatTheDatabaseRefuses(t *testing.T) {
	store, db, _ := mustStore(t)
	ctx := context.Background()
	poisoned := newUUID(t)
	err := db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		_, err := q.Exec(ctx, fmt.Sprintf(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF NEW.user_id = '%s' THEN RAISE EXCEPTION 'refused for the test'; END IF;
				RETURN NEW;
			END $$;
			CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION refuse();`, poisoned))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	u, p := newUUID(t), newUUID(t)
	ev := func(user string, seq int64) counter.Event {
		return counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: user, PeerID: p, Seq: seq, Unread: int(seq)}
	}
	batch := []counter.Event{ev(u, 1), ev(poisoned, 1), ev(u, 2)}
	res, err := store.Apply(ctx, counter.Batch{Events: batch})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Results {
		got = append(got, r.Outcome)
	}
	if diff := cmp.Diff([]string{"applied", "failed", "applied"}, got); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if !strings.Contains(res.Results[1].Reason, "refused for the test") {
		t.Errorf("reason of the failed event: %q", res.Results[1].Reason)
	}
	un, err := store.Unread(ctx, u)
	if err != nil || un.Total != 2 {
		t.Errorf("unread of the healthy direction: %+v, %v; want 2", un, err)
	}
	// The failed event is not in the inbox: a retry applies it once the
	// database takes it.
	if _, err := db.Primary().Exec(ctx, `DROP TRIGGER refuse ON counters`); err != nil {
		t.Fatal(err)
	}
	res, err = store.Apply(ctx, counter.Batch{Events: batch[1:2]})
	if err != nil || res.Results[0].Outcome != counter.OutcomeApplied {
		t.Errorf("retry after the database takes it: %+v, %v; want applied", res, err)
	}
}

// TestApplyRejectsWithoutTheDatabase: a batch of nothing but invalid events
// is answered from validation alone, even with the database gone.
func TestApplyRejectsWithoutTheDatabase(t *testing.T) {
	store, db, _ := mustStore(t)
	db.Close()
	bad := counter.Event{ID: "x"}
	res, err := store.Apply(context.Background(), counter.Batch{Events: []counter.Event{bad, bad}, Session: newUUID(t)})
	if err != nil {
		t.Fatalf("Apply of invalid events without a database: %v", err)
	}
	want := counter.BatchResult{Results: []counter.Result{
		{ID: "x", Outcome: counter.OutcomeRejected, Reason: "id must be a UUID"},
		{ID: "x", Outcome: counter.OutcomeRejected, Reason: "id must be a UUID"},
	}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
}

// TestPruneInboxInChunks: more rows than one chunk are all pruned, the
// recent ones kept.
func TestPruneInboxInChunks(t *testing.T) {
	store, db, _ := mustStore(t)
	ctx := context.Background()
	err := db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		_, err := q.Exec(ctx, `INSERT INTO inbox (event_id, outbox_id, kind, user_id, peer_id, seq, outcome, received_at)
			SELECT gen_random_uuid(), i, 'message_sent', gen_random_uuid(), gen_random_uuid(), 1, 'applied',
				CASE WHEN i <= 10001 THEN now() - interval '2 days' ELSE now() END
			FROM generate_series(1, 10003) i`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := store.PruneInbox(ctx, time.Now().Add(-24*time.Hour))
	if err != nil || n != 10001 {
		t.Errorf("PruneInbox = %d, %v; want 10001", n, err)
	}
	var left int
	if err := db.Primary().QueryRow(ctx, `SELECT count(*) FROM inbox`).Scan(&left); err != nil || left != 2 {
		t.Errorf("%d rows left (%v), want the 2 recent ones", left, err)
	}
}

// TestApplyStopsWhenTheDatabaseGoesAway: applying one at a time after a
// refusal stops at the first event the database cannot take for being
// unavailable, and the whole batch is then unavailable (retried by the
// sender), not failed event by event.
func TestApplyStopsWhenTheDatabaseGoesAway(t *testing.T) {
	store, db, _ := mustStore(t)
	ctx := context.Background()
	refused, away := "00000000-0000-7000-8000-000000000001", "00000000-0000-7000-8000-000000000002"
	_, err := db.Primary().Exec(ctx, fmt.Sprintf(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.user_id = '%s' THEN RAISE EXCEPTION 'refused for the test'; END IF;
			IF NEW.user_id = '%s' THEN RAISE EXCEPTION 'shutting down for the test' USING ERRCODE = '57P01'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON counters FOR EACH ROW EXECUTE FUNCTION refuse();`, refused, away))
	if err != nil {
		t.Fatal(err)
	}
	p := newUUID(t)
	batch := []counter.Event{
		{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: refused, PeerID: p, Seq: 1, Unread: 1},
		{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: away, PeerID: p, Seq: 1, Unread: 1},
	}
	res, err := store.Apply(ctx, counter.Batch{Events: batch})
	if social.ErrorCode(err) != social.EUNAVAILABLE {
		t.Errorf("Apply = %+v, %v; want EUNAVAILABLE", res, err)
	}
}
