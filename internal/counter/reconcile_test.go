package counter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/postgres"
)

// TestReconcileFindsAndRepairsDrift makes the counters drift in three ways
// the saga cannot see (messages stored without events, a corrupted counter,
// a counter of a dialog that does not exist), reports the drift without
// touching anything, then repairs it.
func TestReconcileFindsAndRepairsDrift(t *testing.T) {
	s := mustStack(t, stackOptions{})
	ids := s.mustUsers(t, 3)
	a, b, c := ids[0], ids[1], ids[2]
	ctx := context.Background()
	for range 2 {
		s.mustSend(t, a, b)
		s.mustSend(t, a, c)
	}
	s.mustConverge(t, 30*time.Second)

	// Three messages a -> b stored the way a bulk load would: no events.
	_, err := s.admin.Exec(ctx, `INSERT INTO messages (id, from_user_id, to_user_id, text)
		SELECT gen_random_uuid(), $1, $2, 'загружено' FROM generate_series(1, 3)`, a, b)
	if err != nil {
		t.Fatal(err)
	}
	err = s.counterDB.ReadPrimary(ctx, func(q dbroute.Querier) error {
		// c's counter of a is corrupted; a gets a counter of c, who never wrote.
		if _, err := q.Exec(ctx, `UPDATE counters SET unread = 42 WHERE user_id = $1 AND peer_id = $2`, c, a); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `INSERT INTO counters (user_id, peer_id, unread, seq) VALUES ($1, $2, 5, 3)`, a, c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []counter.Drift{
		{UserID: b, PeerID: a, Counter: 2, Truth: 5, Recorded: 2, CounterSeq: 2, RecordedSeq: 2},
		{UserID: c, PeerID: a, Counter: 42, Truth: 2, Recorded: 2, CounterSeq: 2, RecordedSeq: 2},
		{UserID: a, PeerID: c, Counter: 5, Truth: 0, Recorded: 0, CounterSeq: 3, RecordedSeq: 0},
	}
	byUser := cmpopts.SortSlices(func(x, y counter.Drift) bool { return x.UserID+x.PeerID < y.UserID+y.PeerID })

	rep := s.reconcile(t, false)
	if diff := cmp.Diff(want, rep.Drifts, byUser); diff != "" {
		t.Errorf("drift found by a check (-want +got):\n%s", diff)
	}
	if rep.DriftMessages() != 3+40+5 || rep.Remaining != 3 {
		t.Errorf("drift of %d messages, %d remaining; want 48 and 3", rep.DriftMessages(), rep.Remaining)
	}
	if again := s.reconcile(t, false); len(again.Drifts) != 3 {
		t.Errorf("a check changed something: the next one finds %d drifts", len(again.Drifts))
	}

	rep = s.reconcile(t, true)
	for i := range want {
		want[i].Repaired = true
	}
	if diff := cmp.Diff(want, rep.Drifts, byUser); diff != "" {
		t.Errorf("drift repaired (-want +got):\n%s", diff)
	}
	if rep.Remaining != 0 {
		t.Errorf("%d drifts remain after repair", rep.Remaining)
	}
	s.mustConverge(t, 30*time.Second)
}

// TestPoisonEventIsDeadLettered: an event the relay cannot deliver is tried
// MaxAttempts times, then moved to the dead-letter table with the reason;
// its message stays stored and listed, and reconciliation repairs its
// dialog's count. The relay runs as the API's database role.
func TestPoisonEventIsDeadLettered(t *testing.T) {
	// The relay runs with the API's rights only: dead-lettering needs no more.
	s := mustStack(t, stackOptions{maxAttempts: 3, relayAsApp: true})
	ids := s.mustUsers(t, 3)
	a, b, c := ids[0], ids[1], ids[2]
	ctx := context.Background()
	s.mustSend(t, a, b)
	s.mustConverge(t, 30*time.Second)

	// A message whose event was written without the state stamp, and an
	// event of a kind nobody knows.
	err := pgx.BeginFunc(ctx, mustConn(t, s.mainDSN), func(tx pgx.Tx) error {
		stmts := []string{
			`ALTER TABLE outbox DISABLE TRIGGER outbox_stamp_unread`,
			`INSERT INTO messages (id, from_user_id, to_user_id, text) VALUES (gen_random_uuid(), '` + a + `', '` + b + `', 'яд')`,
			`INSERT INTO outbox (aggregate, kind, payload) VALUES ('` + postgres.DialogKey(a, b) + `', 'message_sent',
				jsonb_build_object('event_id', gen_random_uuid(), 'from', '` + a + `', 'to', '` + b + `'))`,
			`INSERT INTO outbox (aggregate, kind, payload) VALUES ('` + postgres.DialogKey(a, c) + `', 'message_edited', '{}')`,
			`ALTER TABLE outbox ENABLE TRIGGER outbox_stamp_unread`,
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mustSend(t, a, b) // behind the poison in its dialog
	s.mustSend(t, c, b)

	type dead struct {
		Kind     string
		Attempts int
		Reason   string
	}
	var got []dead
	waitFor(t, 30*time.Second, "two dead letters", func() error {
		got = got[:0]
		rows, err := s.admin.Query(ctx, `SELECT kind, attempts, reason FROM outbox_dead_letters ORDER BY id`)
		if err != nil {
			return err
		}
		got, err = pgx.CollectRows(rows, pgx.RowToStructByPos[dead])
		if err == nil && len(got) != 2 {
			err = context.DeadlineExceeded
		}
		return err
	})
	want := []dead{
		{"message_sent", 3, "payload has no seq and unread (written without the outbox trigger)"},
		{"message_edited", 3, `outbox kind "message_edited" carries no counter event`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	waitFor(t, 30*time.Second, "the outbox drained", func() error {
		if s.outboxLen(t) > 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	// The poisoned message is still a message of the dialog.
	msgs, err := s.dialogs.Dialog(ctx, a, b)
	if err != nil || len(msgs) != 3 {
		t.Errorf("dialog lists %d messages (%v), want 3", len(msgs), err)
	}
	rep := s.reconcile(t, false)
	wantDrift := []counter.Drift{{UserID: b, PeerID: a, Counter: 2, Truth: 3, Recorded: 2, CounterSeq: 2, RecordedSeq: 2}}
	if diff := cmp.Diff(wantDrift, rep.Drifts); diff != "" || rep.DeadLetters != 2 {
		t.Errorf("drift after the poison, %d dead letters (-want +got):\n%s", rep.DeadLetters, diff)
	}
	if rep = s.reconcile(t, true); rep.Remaining != 0 {
		t.Errorf("%d drifts remain after repair", rep.Remaining)
	}
	s.mustConverge(t, 30*time.Second)
}

func mustConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestRelayHoldsBackTheDialogOfAFailingEvent runs a relay against a counterd
// that fails one event: the later events of that dialog wait in the outbox
// while other dialogs flow, and all of them go once the event succeeds.
func TestRelayHoldsBackTheDialogOfAFailingEvent(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	ids := s.mustUsers(t, 3)
	a, b, c := ids[0], ids[1], ids[2]
	ctx := context.Background()
	s.mustSend(t, a, b)
	poison := s.outboxEvents(t)[0].ID
	s.mustSend(t, a, b)
	s.mustSend(t, c, b)

	// counterd, but it fails the poison event while failing is set.
	store, _, reg := mustStore(t)
	real, err := counter.NewServer(testLogger(t, "counterd:"), store, reg)
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	failing.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var batch counter.Batch
		if json.Unmarshal(body, &batch) != nil || !failing.Load() {
			r.Body = io.NopCloser(bytes.NewReader(body))
			real.ServeHTTP(w, r)
			return
		}
		res := counter.BatchResult{}
		var rest []counter.Event
		for _, e := range batch.Events {
			if e.ID != poison {
				rest = append(rest, e)
			}
		}
		applied, err := store.Apply(r.Context(), counter.Batch{Events: rest})
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		for _, e := range batch.Events {
			if e.ID == poison {
				res.Results = append(res.Results, counter.Result{ID: e.ID, Outcome: counter.OutcomeFailed, Reason: "injected"})
				continue
			}
			res.Results = append(res.Results, applied.Results[0])
			applied.Results = applied.Results[1:]
		}
		json.NewEncoder(w).Encode(res)
	}))
	defer srv.Close()

	relay, err := counter.NewRelay(counter.RelayConfig{
		// One event per batch, so that the failing one is alone in its batch.
		MainDSNs: []string{s.mainDSN}, Counter: counter.NewClient(srv.URL), Poll: 20 * time.Millisecond, Batch: 1,
		MaxAttempts: 1000, Backoff: counter.Backoff{Base: 300 * time.Millisecond, Max: 300 * time.Millisecond},
	}, testLogger(t, "relay:"))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	defer func() { stop(); <-done }()

	unread := func(user string) map[string]int {
		u, err := store.Unread(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, d := range u.Dialogs {
			out[d.PeerID] = d.Unread
		}
		return out
	}
	waitFor(t, 10*time.Second, "the other dialog delivered", func() error {
		if unread(b)[c] != 1 {
			return context.DeadlineExceeded
		}
		return nil
	})
	var attempts []int
	rows, err := s.admin.Query(ctx, `SELECT attempts FROM outbox WHERE aggregate = $1 ORDER BY id`, postgres.DialogKey(a, b))
	if err != nil {
		t.Fatal(err)
	}
	if attempts, err = pgx.CollectRows(rows, pgx.RowTo[int]); err != nil {
		t.Fatal(err)
	}
	sort.Ints(attempts)
	if len(attempts) != 2 || attempts[1] < 1 || attempts[0] != 0 {
		t.Errorf("attempts of the dialog's events in the outbox: %v, want the failing one retried and the next one waiting", attempts)
	}
	if n, ok := unread(b)[a]; ok {
		t.Errorf("the held-back dialog shows %d unread", n)
	}
	failing.Store(false)
	waitFor(t, 10*time.Second, "the held-back dialog delivered", func() error {
		if unread(b)[a] != 2 || s.outboxLen(t) != 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
}

// TestCounterdReconcilesPeriodically: with --reconcile-every, counterd finds
// and repairs drift by itself and reports it in its metrics.
func TestCounterdReconcilesPeriodically(t *testing.T) {
	s := mustStack(t, stackOptions{reconcileEvery: 300 * time.Millisecond})
	ids := s.mustUsers(t, 2)
	s.mustSend(t, ids[0], ids[1])
	_, err := s.admin.Exec(context.Background(), `INSERT INTO messages (id, from_user_id, to_user_id, text)
		SELECT gen_random_uuid(), $1, $2, 'загружено' FROM generate_series(1, 4)`, ids[0], ids[1])
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.counterdAddr
	waitFor(t, 30*time.Second, "the drift repaired by counterd", func() error {
		if diff := diffCounts(s.counters(t), s.truth(t)); diff != "" {
			return errors.New(diff)
		}
		return nil
	})
	waitFor(t, 10*time.Second, "the run with drift counted", func() error {
		if metric(t, base, `socnet_counter_reconcile_runs_total{result="drift"}`) < 1 {
			return errors.New("no run with drift counted")
		}
		return nil
	})
	if n := metric(t, base, "socnet_counter_reconcile_repairs_total"); n < 1 {
		t.Errorf("%v repairs counted", n)
	}
	waitFor(t, 10*time.Second, "a clean run", func() error {
		if metric(t, base, "socnet_counter_reconcile_drift_dialogs") != 0 {
			return errors.New("the last run still found drift")
		}
		return nil
	})
	s.mustConverge(t, 30*time.Second)
}

// TestReconcileUnderTrafficFindsNoDrift reconciles every 200 ms while
// messages are sent and dialogs read: events in flight must never be taken
// for drift (the comparison waits for the outbox watermark), so no repair
// is ever written.
func TestReconcileUnderTrafficFindsNoDrift(t *testing.T) {
	s := mustStack(t, stackOptions{reconcileEvery: 200 * time.Millisecond})
	ids := s.mustUsers(t, 4)
	base := "http://" + s.counterdAddr
	ctx := context.Background()
	stop := startTraffic(t, 3, func(w, i int) error {
		from, to := ids[(w+i)%4], ids[(w+i+1+i%3)%4]
		if err := s.send(from, to); err != nil {
			return err
		}
		if i%5 == 4 {
			_, err := s.dialogs.MarkRead(ctx, to, from)
			return err
		}
		return nil
	})
	waitFor(t, 60*time.Second, "ten reconciliations under traffic", func() error {
		if n := metric(t, base, `socnet_counter_reconcile_runs_total{result="drift"}`); n != 0 {
			t.Fatalf("%v runs found drift under traffic", n)
		}
		if n := metric(t, base, `socnet_counter_reconcile_runs_total{result="clean"}`); n < 10 {
			return fmt.Errorf("%v clean runs", n)
		}
		return nil
	})
	stop()
	if n := metric(t, base, "socnet_counter_reconcile_repairs_total"); n != 0 {
		t.Errorf("%v repairs written while nothing drifted", n)
	}
	if n := metric(t, base, `socnet_counter_reconcile_runs_total{result="drift"}`); n != 0 {
		t.Errorf("%v runs found drift under traffic", n)
	}
	// Busy dialogs are compared too (under their row lock), not skipped.
	if n := metric(t, base, "socnet_counter_reconcile_compared_total"); n < 10*8 {
		t.Errorf("only %v directions compared in ten runs over 12 busy directions", n)
	}
	s.mustConverge(t, 30*time.Second)
}

// TestReconcileLockedCompareSeesDeliveryBetweenReads delivers a busy
// direction's events exactly between the locked comparison's reads of the
// outbox and of the counter: the delivery empties the outbox, so whichever
// read comes second must not pair an old counter with an empty outbox and
// report drift that the delivery healed.
func TestReconcileLockedCompareSeesDeliveryBetweenReads(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	ids := s.mustUsers(t, 2)
	for range 3 {
		s.mustSend(t, ids[1], ids[0])
	}
	delivered := 0
	counter.SetLockedReadsHook(func() {
		if delivered++; delivered == 1 {
			s.startRelay(t)
			s.waitDrained(t, 30*time.Second)
		}
	})
	t.Cleanup(func() { counter.SetLockedReadsHook(nil) })

	rc, err := counter.NewReconciler([]string{s.mainDSN}, s.counterDB, nil, testLogger(t, "reconcile:"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A short drain timeout leaves the undelivered direction busy, for the
	// locked comparison.
	rep, err := rc.Run(ctx, counter.ReconcileOptions{DrainTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if delivered == 0 {
		t.Fatal("the locked comparison never ran")
	}
	if len(rep.Drifts) > 0 || rep.Unsettled > 0 || rep.Compared != 1 {
		t.Errorf("compared %d, %d unsettled, drifts %+v; want 1 compared without drift", rep.Compared, rep.Unsettled, rep.Drifts)
	}
	s.mustConverge(t, 30*time.Second)
}
