package counter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/dbroute"
	"socnet/internal/postgres"
)

// Reconciliation defaults, applied to zero fields of ReconcileOptions.
const (
	DefaultDrainTimeout  = 30 * time.Second
	DefaultReconcilePage = 5000
	reconcileRounds      = 3
	drainPoll            = 50 * time.Millisecond
)

// ReconcileOptions say how a reconciliation runs.
type ReconcileOptions struct {
	// Repair writes, for every drifting direction, an unread_reset event
	// with the truth; without it the run only reports.
	Repair bool
	// DrainTimeout bounds the wait for the relay to deliver the events
	// older than a page's watermark; directions with events still pending
	// then are reported unsettled, not compared.
	DrainTimeout time.Duration
	// Page is how many directions are compared at a time.
	Page int
}

// Drift is one direction whose counter differs from the dialogs database.
type Drift struct {
	UserID string `json:"user_id"` // the reader
	PeerID string `json:"peer_id"` // the sender
	// Counter is counterd's value (0 when it has none), Truth the number of
	// unread messages, Recorded the dialogs database's own running count
	// (dialog_unread; 0 when absent).
	Counter  int `json:"counter"`
	Truth    int `json:"truth"`
	Recorded int `json:"recorded"`
	// CounterSeq and RecordedSeq are the state numbers on either side.
	CounterSeq  int64 `json:"counter_seq"`
	RecordedSeq int64 `json:"recorded_seq"`
	// Repaired is set when a repair event was written; RepairError says
	// why writing it failed.
	Repaired    bool   `json:"repaired"`
	RepairError string `json:"repair_error,omitempty"`
}

// ReconcileReport is the outcome of one reconciliation.
type ReconcileReport struct {
	Started  time.Time `json:"started"`
	Duration string    `json:"duration"`
	// Compared counts directions compared; Unsettled those skipped because
	// their events were still in flight after DrainTimeout.
	Compared  int `json:"compared"`
	Unsettled int `json:"unsettled"`
	// Drifts lists every drifting direction found.
	Drifts []Drift `json:"drifts"`
	// Remaining counts drifts still there after the repairs were delivered
	// (Repair only).
	Remaining   int   `json:"remaining"`
	DeadLetters int64 `json:"dead_letters"`
}

// DriftMessages returns the sum over drifts of |counter - truth|.
func (r ReconcileReport) DriftMessages() int {
	n := 0
	for _, d := range r.Drifts {
		n += max(d.Counter-d.Truth, d.Truth-d.Counter)
	}
	return n
}

// Reconciler recomputes counters from the dialogs database, compares them
// with counterd's at an outbox watermark, and repairs drift through the
// outbox.
//
// A page of directions is read in one REPEATABLE READ snapshot of the
// dialogs primary: the running counts (dialog_unread), the truth (unread
// messages) and the highest outbox id W. It then waits until the relay has
// delivered every event up to W, reads counterd's counters for the page from
// the counter primary, and compares: a counter whose seq is not above the
// snapshot's has received every event the snapshot reflects, so it must
// equal the truth; one whose seq is above moved on and is compared again in
// a newer snapshot. A repair is an unread_reset event written under the
// direction's row lock with the truth counted under that lock: a new state
// with a higher seq, so it cannot count an in-flight event twice, and events
// still in flight, older, are stale when they arrive.
type Reconciler struct {
	mainDSNs []string
	counter  *dbroute.DB
	log      *slog.Logger
	m        *reconcileMetrics
}

// NewReconciler returns a Reconciler of the dialogs database at mainDSNs and
// the counter database counter, registering its metrics on reg (nil: none).
func NewReconciler(mainDSNs []string, counter *dbroute.DB, reg prometheus.Registerer, log *slog.Logger) (*Reconciler, error) {
	if len(mainDSNs) == 0 || counter == nil {
		return nil, errors.New("reconciler: need the dialogs database DSNs and the counter database")
	}
	m, err := newReconcileMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Reconciler{mainDSNs: mainDSNs, counter: counter, log: log, m: m}, nil
}

// key is one direction: user reads what peer sends.
type key struct{ user, peer uuid.UUID }

func (k key) less(o key) bool {
	if c := slices.Compare(k.user[:], o.user[:]); c != 0 {
		return c < 0
	}
	return slices.Compare(k.peer[:], o.peer[:]) < 0
}

// state is a direction's (seq, unread) on one side.
type state struct {
	seq    int64
	unread int
}

// mainView is one snapshot of the dialogs database for some directions.
type mainView struct {
	watermark int64
	recorded  map[key]state // dialog_unread
	truth     map[key]int   // unread messages
	dead      int64
	hi        key  // the page's last direction (range reads)
	last      bool // no directions after hi
}

// Run reconciles every direction and returns the report. It fails only when
// a database cannot be read; drift is in the report, not an error.
func (rc *Reconciler) Run(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.Page <= 0 {
		opts.Page = DefaultReconcilePage
	}
	rep := ReconcileReport{Started: time.Now().UTC(), Drifts: []Drift{}}
	err := rc.run(ctx, opts, &rep)
	rep.Duration = time.Since(rep.Started).Round(time.Millisecond).String()
	result := "clean"
	switch {
	case err != nil:
		result = "error"
	case len(rep.Drifts) > 0:
		result = "drift"
	}
	rc.m.runs.WithLabelValues(result).Inc()
	if err != nil {
		return rep, err
	}
	rc.m.driftPairs.Set(float64(len(rep.Drifts)))
	rc.m.driftUnread.Set(float64(rep.DriftMessages()))
	rc.m.unsettled.Set(float64(rep.Unsettled))
	rc.m.compared.Add(float64(rep.Compared))
	rc.m.deadLetters.Set(float64(rep.DeadLetters))
	return rep, nil
}

func (rc *Reconciler) run(ctx context.Context, opts ReconcileOptions, rep *ReconcileReport) error {
	conn, err := connectPrimary(ctx, rc.mainDSNs)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var lo key
	for {
		view, err := readMainRange(ctx, conn, lo, opts.Page)
		if err != nil {
			return fmt.Errorf("reconcile: read dialogs: %w", err)
		}
		rep.DeadLetters = view.dead
		orphans, err := rc.counterKeys(ctx, lo, view.hi, view.last)
		if err != nil {
			return fmt.Errorf("reconcile: read counters: %w", err)
		}
		keys := view.keys(orphans)
		if err := rc.compare(ctx, conn, opts, view, keys, rep); err != nil {
			return err
		}
		if view.last {
			break
		}
		lo = view.hi
	}
	if !opts.Repair {
		rep.Remaining = len(rep.Drifts)
		return nil
	}
	return rc.repair(ctx, conn, opts, rep)
}

// compare checks keys of view against counterd and appends drifts to rep.
// A direction whose counter moved past the snapshot is compared again in a
// newer snapshot; one that keeps moving (a busy dialog), or whose events did
// not drain in time, is compared under its row lock (compareLocked).
func (rc *Reconciler) compare(ctx context.Context, conn *pgx.Conn, opts ReconcileOptions, view mainView, keys []key, rep *ReconcileReport) error {
	var busy []key
	for round := 1; len(keys) > 0; round++ {
		pending, err := waitDrained(ctx, conn, view.watermark, opts.DrainTimeout)
		if err != nil {
			return fmt.Errorf("reconcile: wait for the outbox: %w", err)
		}
		counters, err := rc.readCounters(ctx, keys)
		if err != nil {
			return fmt.Errorf("reconcile: read counters: %w", err)
		}
		var movedOn []key
		for _, k := range keys {
			if pending[postgres.DialogKey(k.user.String(), k.peer.String())] {
				busy = append(busy, k)
				continue
			}
			c, r := counters[k], view.recorded[k]
			if c.seq > r.seq {
				movedOn = append(movedOn, k)
				continue
			}
			if truth := view.truth[k]; c.unread != truth || r.unread != truth {
				// Confirm under the row lock before calling it drift: the
				// snapshot's comparison can race with an event in flight.
				busy = append(busy, k)
				continue
			}
			rep.compared(k, c, r, view.truth[k])
		}
		if len(movedOn) == 0 || round == reconcileRounds {
			busy = append(busy, movedOn...)
			break
		}
		keys = movedOn
		if view, err = readMainKeys(ctx, conn, keys); err != nil {
			return fmt.Errorf("reconcile: read dialogs: %w", err)
		}
	}
	for _, k := range busy {
		if err := rc.compareLocked(ctx, conn, k, rep); err != nil {
			return err
		}
	}
	return nil
}

// compared records the comparison of direction k: counterd's state c, the
// recorded state r and the truth.
func (rep *ReconcileReport) compared(k key, c, r state, truth int) {
	rep.Compared++
	if c.unread != truth || r.unread != truth {
		rep.Drifts = append(rep.Drifts, Drift{
			UserID: k.user.String(), PeerID: k.peer.String(),
			Counter: c.unread, Truth: truth, Recorded: r.unread,
			CounterSeq: c.seq, RecordedSeq: r.seq,
		})
	}
}

// lockedReadsHook, when set, runs in compareLocked between its reads of the
// outbox and of the counter; tests deliver events there.
var lockedReadsHook func()

// lockedHold bounds how long compareLocked holds a direction's row lock,
// which makes the direction's sends and reads wait.
const lockedHold = time.Second

// compareLocked compares one busy direction while holding its row lock in
// the dialogs database: no event of it can be written meanwhile, so once
// counterd has the recorded seq, or the outbox holds nothing more of the
// dialog, counterd's state is final and must equal the truth. If neither
// happens within lockedHold the direction is unsettled. The transaction is
// rolled back: a check changes nothing.
func (rc *Reconciler) compareLocked(ctx context.Context, conn *pgx.Conn, k key, rep *ReconcileReport) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var r state
	var truth int
	err = func() error {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '1s'`); err != nil {
			return err
		}
		// A direction without a row gets one (0, 0), only for the lock: it
		// goes with the rollback. Users that no longer exist have none.
		if _, err := tx.Exec(ctx, `SAVEPOINT absent`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO dialog_unread (user_id, peer_id, seq, unread) VALUES ($1, $2, 0, 0)
			ON CONFLICT (user_id, peer_id) DO NOTHING`, k.user, k.peer)
		if err != nil {
			if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT absent`); rerr != nil {
				return rerr
			}
		}
		err = tx.QueryRow(ctx, `SELECT seq, unread FROM dialog_unread WHERE user_id = $1 AND peer_id = $2 FOR UPDATE`,
			k.user, k.peer).Scan(&r.seq, &r.unread)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM messages WHERE to_user_id = $1 AND from_user_id = $2 AND read_at IS NULL`,
			k.user, k.peer).Scan(&truth)
	}()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rc.log.Warn("reconcile: could not lock a busy dialog; left unsettled", "user_id", k.user, "peer_id", k.peer, "err", err)
		rep.Unsettled++
		return nil
	}
	agg := postgres.DialogKey(k.user.String(), k.peer.String())
	deadline := time.Now().Add(lockedHold)
	for {
		// The outbox first, then the counter: the relay deletes an event
		// only after counterd committed it, so an outbox found empty means
		// the counter read after it has every event. Read the other way
		// round, the relay could deliver and delete between the two reads,
		// and an old counter would pass for a final one.
		var pending bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox WHERE aggregate = $1)`, agg).Scan(&pending); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		if lockedReadsHook != nil {
			lockedReadsHook()
		}
		counters, err := rc.readCounters(ctx, []key{k})
		if err != nil {
			return fmt.Errorf("reconcile: read counters: %w", err)
		}
		c := counters[k]
		if c.seq >= r.seq || !pending {
			rep.compared(k, c, r, truth)
			return nil
		}
		if time.Now().After(deadline) {
			rep.Unsettled++
			return nil
		}
		if !sleep(ctx, drainPoll/2) {
			return ctx.Err()
		}
	}
}

// repair writes one unread_reset event per drift, waits for the relay to
// deliver them, and counts the drifts that remain.
func (rc *Reconciler) repair(ctx context.Context, conn *pgx.Conn, opts ReconcileOptions, rep *ReconcileReport) error {
	if len(rep.Drifts) == 0 {
		return nil
	}
	var keys []key
	for i := range rep.Drifts {
		d := &rep.Drifts[i]
		k := key{uuid.MustParse(d.UserID), uuid.MustParse(d.PeerID)}
		if err := writeReset(ctx, conn, k, d.CounterSeq); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.RepairError = err.Error()
			rc.log.Error("reconcile: repair failed", "user_id", d.UserID, "peer_id", d.PeerID, "err", err)
			continue
		}
		d.Repaired = true
		rc.m.repairs.Inc()
		keys = append(keys, k)
		rc.log.Warn("reconcile: counter drift repaired", "user_id", d.UserID, "peer_id", d.PeerID,
			"counter", d.Counter, "truth", d.Truth, "recorded", d.Recorded, "counter_seq", d.CounterSeq, "recorded_seq", d.RecordedSeq)
	}
	// Verify: the repairs are outbox events like any other.
	check := ReconcileReport{Drifts: []Drift{}}
	view, err := readMainKeys(ctx, conn, keys)
	if err != nil {
		return fmt.Errorf("reconcile: verify repairs: %w", err)
	}
	if err := rc.compare(ctx, conn, opts, view, keys, &check); err != nil {
		return err
	}
	rep.Remaining = len(check.Drifts) + check.Unsettled + (len(rep.Drifts) - len(keys))
	return nil
}

// writeReset writes, under the direction's row lock, an unread_reset event
// with the unread messages counted under that lock and a seq above
// counterSeq. The floor saturates below MaxSeq, so that no counter state, even
// one written before seq was bounded, can push the dialogs database's seq
// toward bigint's end.
func writeReset(ctx context.Context, conn *pgx.Conn, k key, counterSeq int64) error {
	eventID, err := uuid.NewV7()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Lock the direction first (creating its row if needed), so that no
		// send or read of it commits between the count and the event.
		_, err := tx.Exec(ctx, `INSERT INTO dialog_unread (user_id, peer_id, seq, unread) VALUES ($1, $2, 0, 0)
			ON CONFLICT (user_id, peer_id) DO NOTHING`, k.user, k.peer)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM dialog_unread WHERE user_id = $1 AND peer_id = $2 FOR UPDATE`, k.user, k.peer); err != nil {
			return err
		}
		var truth int
		err = tx.QueryRow(ctx, `SELECT count(*) FROM messages
			WHERE to_user_id = $1 AND from_user_id = $2 AND read_at IS NULL`, k.user, k.peer).Scan(&truth)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO outbox (aggregate, kind, payload)
			VALUES ($3, $4, jsonb_build_object('event_id', $5::uuid, 'user_id', $1::uuid, 'peer_id', $2::uuid,
				'unread', $6::integer, 'seq_floor', $7::bigint))`,
			k.user, k.peer, postgres.DialogKey(k.user.String(), k.peer.String()), KindUnreadReset, eventID, truth, min(counterSeq, MaxSeq-1))
		return err
	})
}

// readMainRange reads, in one snapshot, the directions after lo: up to page
// of them from dialog_unread and every direction with unread messages up to
// the last of those.
func readMainRange(ctx context.Context, conn *pgx.Conn, lo key, page int) (mainView, error) {
	v := mainView{recorded: map[key]state{}, truth: map[key]int{}}
	err := snapshot(ctx, conn, &v, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT user_id, peer_id FROM dialog_unread
			WHERE (user_id, peer_id) > ($1, $2) ORDER BY user_id, peer_id OFFSET $3 LIMIT 1`,
			lo.user, lo.peer, page-1).Scan(&v.hi.user, &v.hi.peer)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			v.last = true
		case err != nil:
			return err
		}
		const rangeCond = `> ($1, $2) AND ($3 OR (%[1]s) <= ($4, $5))`
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT user_id, peer_id, seq, unread FROM dialog_unread
			WHERE (user_id, peer_id) `+rangeCond, "user_id, peer_id"), lo.user, lo.peer, v.last, v.hi.user, v.hi.peer)
		if err != nil {
			return err
		}
		if err := collectRecorded(rows, v.recorded); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, fmt.Sprintf(`SELECT to_user_id, from_user_id, count(*) FROM messages
			WHERE read_at IS NULL AND (to_user_id, from_user_id) `+rangeCond+`
			GROUP BY to_user_id, from_user_id`, "to_user_id, from_user_id"), lo.user, lo.peer, v.last, v.hi.user, v.hi.peer)
		if err != nil {
			return err
		}
		return collectTruth(rows, v.truth)
	})
	return v, err
}

// readMainKeys reads the given directions in one snapshot.
func readMainKeys(ctx context.Context, conn *pgx.Conn, keys []key) (mainView, error) {
	v := mainView{recorded: map[key]state{}, truth: map[key]int{}, last: true}
	users, peers := splitKeys(keys)
	err := snapshot(ctx, conn, &v, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT d.user_id, d.peer_id, d.seq, d.unread
			FROM unnest($1::uuid[], $2::uuid[]) AS k(user_id, peer_id)
			JOIN dialog_unread d USING (user_id, peer_id)`, users, peers)
		if err != nil {
			return err
		}
		if err := collectRecorded(rows, v.recorded); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT k.user_id, k.peer_id,
				(SELECT count(*) FROM messages m
				 WHERE m.to_user_id = k.user_id AND m.from_user_id = k.peer_id AND m.read_at IS NULL)
			FROM unnest($1::uuid[], $2::uuid[]) AS k(user_id, peer_id)`, users, peers)
		if err != nil {
			return err
		}
		return collectTruth(rows, v.truth)
	})
	return v, err
}

// snapshot runs fn in a read-only REPEATABLE READ transaction after reading
// the watermark and the dead-letter count of the same snapshot into v.
func snapshot(ctx context.Context, conn *pgx.Conn, v *mainView, fn func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT coalesce((SELECT max(id) FROM outbox), 0), outbox_dead_letter_count()`).
			Scan(&v.watermark, &v.dead)
		if err != nil {
			return err
		}
		return fn(tx)
	})
}

func collectRecorded(rows pgx.Rows, into map[key]state) error {
	var k key
	var s state
	_, err := pgx.ForEachRow(rows, []any{&k.user, &k.peer, &s.seq, &s.unread}, func() error {
		into[k] = s
		return nil
	})
	return err
}

func collectTruth(rows pgx.Rows, into map[key]int) error {
	var k key
	var n int
	_, err := pgx.ForEachRow(rows, []any{&k.user, &k.peer, &n}, func() error {
		if n > 0 {
			into[k] = n
		}
		return nil
	})
	return err
}

// keys returns every direction of v and of extra, once each, in order.
func (v mainView) keys(extra []key) []key {
	seen := make(map[key]bool, len(v.recorded)+len(v.truth)+len(extra))
	var out []key
	add := func(k key) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for k := range v.recorded {
		add(k)
	}
	for k := range v.truth {
		add(k)
	}
	for _, k := range extra {
		add(k)
	}
	slices.SortFunc(out, func(a, b key) int {
		if a.less(b) {
			return -1
		}
		if b.less(a) {
			return 1
		}
		return 0
	})
	return out
}

func splitKeys(keys []key) (users, peers []uuid.UUID) {
	users, peers = make([]uuid.UUID, len(keys)), make([]uuid.UUID, len(keys))
	for i, k := range keys {
		users[i], peers[i] = k.user, k.peer
	}
	return users, peers
}

// waitDrained waits until the outbox holds no event with an id up to
// watermark, or the timeout passes; it returns the dialogs (aggregates)
// whose events are still there.
func waitDrained(ctx context.Context, conn *pgx.Conn, watermark int64, timeout time.Duration) (map[string]bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		var aggs []string
		err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT aggregate), '{}') FROM outbox WHERE id <= $1`, watermark).Scan(&aggs)
		if err != nil {
			return nil, err
		}
		if len(aggs) == 0 || time.Now().After(deadline) {
			pending := make(map[string]bool, len(aggs))
			for _, a := range aggs {
				pending[a] = true
			}
			return pending, nil
		}
		if !sleep(ctx, drainPoll) {
			return nil, ctx.Err()
		}
	}
}

// readCounters reads counterd's state of keys from the counter primary
// (never a replica: it must include every acknowledged apply).
func (rc *Reconciler) readCounters(ctx context.Context, keys []key) (map[key]state, error) {
	out := make(map[key]state, len(keys))
	users, peers := splitKeys(keys)
	err := rc.counter.ReadPrimary(ctx, func(q dbroute.Querier) error {
		clear(out)
		rows, err := q.Query(ctx, `SELECT c.user_id, c.peer_id, c.seq, c.unread
			FROM unnest($1::uuid[], $2::uuid[]) AS k(user_id, peer_id)
			JOIN counters c USING (user_id, peer_id)`, users, peers)
		if err != nil {
			return err
		}
		return collectRecorded(rows, out)
	})
	return out, err
}

// counterKeys returns the directions counterd has after lo and up to hi
// (or all after lo when last), from the counter primary.
func (rc *Reconciler) counterKeys(ctx context.Context, lo, hi key, last bool) ([]key, error) {
	var out []key
	err := rc.counter.ReadPrimary(ctx, func(q dbroute.Querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, `SELECT user_id, peer_id FROM counters
			WHERE (user_id, peer_id) > ($1, $2) AND ($3 OR (user_id, peer_id) <= ($4, $5))`,
			lo.user, lo.peer, last, hi.user, hi.peer)
		if err != nil {
			return err
		}
		var k key
		_, err = pgx.ForEachRow(rows, []any{&k.user, &k.peer}, func() error {
			out = append(out, k)
			return nil
		})
		return err
	})
	return out, err
}
