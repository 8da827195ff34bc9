package counter_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
	"socnet/internal/social"
)

// mustStore returns a Store over a fresh, migrated counter database.
func mustStore(t *testing.T) (*counter.Store, *dbroute.DB, *prometheus.Registry) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.MustDatabase(t)
	log := testLogger(t, "store:")
	if err := counter.Migrate(ctx, []string{dsn}, log); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	// Twice is a no-op.
	if err := counter.Migrate(ctx, []string{dsn}, log); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "counter", Primary: dsn, MaxConns: 4}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	reg := prometheus.NewRegistry()
	store, err := counter.NewStore(db, reg)
	if err != nil {
		t.Fatal(err)
	}
	return store, db, reg
}

func newUUID(t testing.TB) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// TestEventsInAnyOrder applies the events a real dialog produced (sends and
// reads racing) in several orders, each twice, to fresh counter databases:
// the counts always end equal to the unread messages.
func TestEventsInAnyOrder(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	ids := s.mustUsers(t, 3)
	ctx := context.Background()
	for i := range 30 {
		s.mustSend(t, ids[i%3], ids[(i+1)%3])
		if i%7 == 6 {
			if _, err := s.dialogs.MarkRead(ctx, ids[(i+1)%3], ids[i%3]); err != nil {
				t.Fatal(err)
			}
		}
	}
	events := s.outboxEvents(t)
	truth := s.truth(t)

	orders := map[string]func([]counter.Event){
		"outbox order": func([]counter.Event) {},
		"reversed":     slices.Reverse[[]counter.Event],
		"shuffled": func(es []counter.Event) {
			rand.New(rand.NewPCG(7, 7)).Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
		},
	}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			store, _, _ := mustStore(t)
			es := slices.Clone(events)
			order(es)
			for _, batch := range [][]counter.Event{es, es} { // everything twice
				for len(batch) > 0 {
					n := min(len(batch), 5)
					if _, err := store.Apply(ctx, counter.Batch{Events: batch[:n]}); err != nil {
						t.Fatalf("apply: %v", err)
					}
					batch = batch[n:]
				}
			}
			got := map[direction]int{}
			for _, u := range ids {
				un, err := store.Unread(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				sum := 0
				for _, d := range un.Dialogs {
					if d.Unread > 0 {
						got[direction{u, d.PeerID}] = d.Unread
					}
					sum += d.Unread
				}
				if sum != un.Total {
					t.Errorf("total %d is not the sum %d of the dialogs", un.Total, sum)
				}
			}
			if diff := diffCounts(got, truth); diff != "" {
				t.Errorf("counts after applying %s:\n%s", name, diff)
			}
		})
	}
}

func TestApplyOutcomes(t *testing.T) {
	store, _, _ := mustStore(t)
	ctx := context.Background()
	u, p := newUUID(t), newUUID(t)
	ev := func(seq int64, unread int) counter.Event {
		return counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: u, PeerID: p, Seq: seq, Unread: unread,
			CommittedAt: time.Now()}
	}
	e5, e3, e7 := ev(5, 5), ev(3, 3), ev(7, 2)
	bad := ev(8, 1)
	bad.PeerID = u
	res, err := store.Apply(ctx, counter.Batch{Events: []counter.Event{e5, e3, e5, bad}})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := func(r counter.BatchResult) []string {
		var out []string
		for _, x := range r.Results {
			out = append(out, x.Outcome)
		}
		return out
	}
	want := []string{counter.OutcomeApplied, counter.OutcomeStale, counter.OutcomeDuplicate, counter.OutcomeRejected}
	if diff := cmp.Diff(want, outcomes(res)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if res.Results[3].Reason == "" {
		t.Error("a rejection without a reason")
	}
	res, err = store.Apply(ctx, counter.Batch{Events: []counter.Event{e7, e3}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{counter.OutcomeApplied, counter.OutcomeDuplicate}, outcomes(res)); diff != "" {
		t.Errorf("second batch outcomes (-want +got):\n%s", diff)
	}
	got, err := store.Unread(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(social.Unread{Total: 2, Dialogs: []social.DialogUnread{{PeerID: p, Unread: 2}}}, got); diff != "" {
		t.Errorf("unread (-want +got):\n%s", diff)
	}
	if _, err := store.Unread(ctx, "not-a-uuid"); social.ErrorCode(err) != social.EINVALID {
		t.Errorf("Unread of a bad id: %v, want EINVALID", err)
	}
}

func TestEventValidate(t *testing.T) {
	ok := counter.Event{ID: "01900000-0000-7000-8000-000000000001", Kind: counter.KindDialogRead,
		UserID: "01900000-0000-7000-8000-000000000002", PeerID: "01900000-0000-7000-8000-000000000003", Seq: 1}
	cases := []struct {
		name   string
		change func(*counter.Event)
		valid  bool
	}{
		{"valid", func(*counter.Event) {}, true},
		{"bad id", func(e *counter.Event) { e.ID = "x" }, false},
		{"upper-case id", func(e *counter.Event) { e.UserID = "01900000-0000-7000-8000-00000000000A" }, false},
		{"unknown kind", func(e *counter.Event) { e.Kind = "message_deleted" }, false},
		{"same user and peer", func(e *counter.Event) { e.PeerID = e.UserID }, false},
		{"seq 0", func(e *counter.Event) { e.Seq = 0 }, false},
		{"negative unread", func(e *counter.Event) { e.Unread = -1 }, false},
		{"negative outbox id", func(e *counter.Event) { e.OutboxID = -1 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := ok
			tc.change(&e)
			if got := e.Validate(); (got == "") != tc.valid {
				t.Errorf("Validate() = %q, want valid=%v", got, tc.valid)
			}
		})
	}
}

func TestPruneInbox(t *testing.T) {
	store, db, _ := mustStore(t)
	ctx := context.Background()
	u, p := newUUID(t), newUUID(t)
	e := counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: u, PeerID: p, Seq: 1, Unread: 1}
	if _, err := store.Apply(ctx, counter.Batch{Events: []counter.Event{e}}); err != nil {
		t.Fatal(err)
	}
	n, err := store.PruneInbox(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PruneInbox = %d, %v; want 1", n, err)
	}
	// A redelivery after pruning is no longer a duplicate, but stale.
	res, err := store.Apply(ctx, counter.Batch{Events: []counter.Event{e}})
	if err != nil || res.Results[0].Outcome != counter.OutcomeStale {
		t.Errorf("redelivery after pruning: %+v, %v; want stale", res, err)
	}
	var unread int
	err = db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT unread FROM counters WHERE user_id = $1`, u).Scan(&unread)
	})
	if err != nil || unread != 1 {
		t.Errorf("counter %d (%v), want 1", unread, err)
	}
}

func TestBackoff(t *testing.T) {
	b := counter.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for _, r := range []float64{0, 0.999} {
		b.Rand = func() float64 { return r }
		var got []time.Duration
		for attempt := 1; attempt <= 6; attempt++ {
			got = append(got, b.Delay(attempt).Round(10*time.Millisecond))
		}
		want := []time.Duration{50, 100, 200, 400, 500, 500}
		if r > 0 {
			want = []time.Duration{100, 200, 400, 800, 1000, 1000}
		}
		for i := range want {
			want[i] *= time.Millisecond
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("delays with rand %v (-want +got):\n%s", r, diff)
		}
	}
	b.Rand = nil
	for range 100 {
		if d := b.Delay(50); d < 500*time.Millisecond || d > time.Second {
			t.Fatalf("delay %v outside [Max/2, Max]", d)
		}
	}
}
