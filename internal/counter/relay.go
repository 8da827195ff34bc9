package counter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/social"
)

// RelayLockKey is the session advisory lock, on the dialogs primary, that
// only the active relay holds ("socnet-r" in ASCII).
const RelayLockKey int64 = 0x736f636e65742d72

// Relay defaults, applied by NewRelay to zero fields of RelayConfig.
const (
	DefaultRelayBatch       = 500
	DefaultRelayPoll        = 50 * time.Millisecond
	DefaultRelayMaxAttempts = 5
	DefaultRelayBackoffBase = 100 * time.Millisecond
	DefaultRelayBackoffMax  = 5 * time.Second
	DefaultRelayStatsEvery  = time.Second
	relayLockPoll           = time.Second
	relayQueryTimeout       = 10 * time.Second
)

// RelayConfig says where the outbox is and where its events go.
type RelayConfig struct {
	// MainDSNs are the nodes of the dialogs database; the relay works on
	// whichever accepts writes.
	MainDSNs []string
	// Counter delivers batches to counterd.
	Counter *Client
	// Batch is the most events per delivery.
	Batch int
	// Poll is the pause when the outbox has nothing due.
	Poll time.Duration
	// MaxAttempts is how often an event may fail before it moves to the
	// dead-letter table.
	MaxAttempts int
	// Backoff spaces retries: of a whole batch that counterd did not
	// acknowledge, of one failing event, and of reconnecting.
	Backoff Backoff
	// StatsEvery is how often the backlog gauges are refreshed.
	StatsEvery time.Duration
	// MaxBacklog is the backlog (OutboxBacklog's estimate) above which the
	// relay alerts: an error in the log when it is crossed and every minute
	// while above, and the gauge socnet_relay_outbox_backlog_over_max. The
	// API keeps accepting messages (docs/COUNTER.md, "Outbox bounds"). 0
	// means DefaultMaxBacklog.
	MaxBacklog int64
	// Registry receives the relay's metrics (nil: none).
	Registry prometheus.Registerer
}

// Relay delivers the outbox of the dialogs database to counterd. Exactly one
// relay is active at a time: the one holding RelayLockKey on the primary;
// the others wait for it. It reads due events in outbox id order, posts them
// in batches, and deletes an event only after counterd acknowledged it, so
// delivery is at least once; counterd's inbox turns that into exactly once
// in effect. An event that fails is retried with backoff and holds back the
// later events of its dialog; after MaxAttempts failures it moves to
// outbox_dead_letters with the reason. A batch counterd does not
// acknowledge at all (counterd or its database down) is retried with backoff
// and counts against no event.
type Relay struct {
	cfg    RelayConfig
	log    *slog.Logger
	m      *relayMetrics
	active atomic.Bool
	over   atomic.Bool
	// alertedAt is when the last backlog alert was logged (session only).
	alertedAt time.Time
}

// backlogAlertEvery spaces the error logs of a backlog above the maximum.
const backlogAlertEvery = time.Minute

// OverMaxBacklog reports whether the last estimate of the backlog was above
// the configured maximum.
func (r *Relay) OverMaxBacklog() bool { return r.over.Load() }

// NewRelay returns a relay with cfg's zero fields set to the defaults.
func NewRelay(cfg RelayConfig, log *slog.Logger) (*Relay, error) {
	if len(cfg.MainDSNs) == 0 || cfg.Counter == nil {
		return nil, errors.New("relay: need the dialogs database DSNs and a counterd client")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultRelayBatch
	}
	cfg.Batch = min(cfg.Batch, MaxBatch)
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultRelayPoll
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultRelayMaxAttempts
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff.Base = DefaultRelayBackoffBase
	}
	if cfg.Backoff.Max <= 0 {
		cfg.Backoff.Max = DefaultRelayBackoffMax
	}
	cfg.Backoff.Max = max(cfg.Backoff.Max, cfg.Backoff.Base)
	if cfg.StatsEvery <= 0 {
		cfg.StatsEvery = DefaultRelayStatsEvery
	}
	if cfg.MaxBacklog <= 0 {
		cfg.MaxBacklog = DefaultMaxBacklog
	}
	m, err := newRelayMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Relay{cfg: cfg, log: log, m: m}, nil
}

// Active reports whether this relay holds the lock and delivers.
func (r *Relay) Active() bool { return r.active.Load() }

// Run delivers until ctx ends, reconnecting with backoff when the dialogs
// database or its primary changes. It returns nil when ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		conn, err := connectPrimary(ctx, r.cfg.MainDSNs)
		if err == nil {
			failures = 0
			err = r.session(ctx, conn)
			conn.Close(context.Background())
			r.setActive(false)
		}
		if ctx.Err() != nil {
			break
		}
		failures++
		d := r.cfg.Backoff.Delay(failures)
		r.log.Warn("relay lost the dialogs primary; reconnecting", "err", err, "attempt", failures, "retry_in", d)
		sleep(ctx, d)
	}
	return nil
}

func (r *Relay) setActive(on bool) {
	r.active.Store(on)
	if on {
		r.m.active.Set(1)
	} else {
		r.m.active.Set(0)
	}
}

// session waits for the relay lock on conn, then delivers until conn fails
// or ctx ends. The lock goes with the connection.
func (r *Relay) session(ctx context.Context, conn *pgx.Conn) error {
	for waited := false; ; waited = true {
		var got bool
		if err := queryRow(ctx, conn, `SELECT pg_try_advisory_lock($1)`, []any{RelayLockKey}, &got); err != nil {
			return fmt.Errorf("take relay lock: %w", err)
		}
		if got {
			break
		}
		if !waited {
			r.log.Info("another relay is active; standing by")
		}
		if !sleep(ctx, relayLockPoll) {
			return ctx.Err()
		}
	}
	r.setActive(true)
	r.log.Info("relay active", "batch", r.cfg.Batch, "max_attempts", r.cfg.MaxAttempts)
	var statsAt time.Time
	failures := 0
	for ctx.Err() == nil {
		if time.Since(statsAt) >= r.cfg.StatsEvery {
			if err := r.refreshStats(ctx, conn); err != nil {
				return err
			}
			statsAt = time.Now()
		}
		rows, err := fetchDue(ctx, conn, r.cfg.Batch)
		if err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		if len(rows) == 0 {
			sleep(ctx, r.cfg.Poll)
			continue
		}
		nack, err := r.deliver(ctx, conn, rows)
		if err != nil {
			return err
		}
		if nack != nil {
			failures++
			d := r.cfg.Backoff.Delay(failures)
			r.log.Warn("counterd did not acknowledge a batch; retrying", "events", len(rows), "attempt", failures,
				"retry_in", d, "err", nack)
			sleep(ctx, d)
			continue
		}
		failures = 0
		if len(rows) < r.cfg.Batch {
			sleep(ctx, r.cfg.Poll)
		}
	}
	return ctx.Err()
}

// outboxRow is one event of the outbox.
type outboxRow struct {
	id        int64
	aggregate string
	kind      string
	payload   []byte
	createdAt time.Time
	attempts  int
}

// fetchDueSQL selects the next due events in id order. An event waiting for
// a retry holds back the later events of its dialog (aggregate), so each
// dialog's events reach counterd in outbox order.
const fetchDueSQL = `SELECT id, aggregate, kind, payload, created_at, attempts
FROM outbox o
WHERE (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
  AND NOT EXISTS (SELECT 1 FROM outbox b
                  WHERE b.next_attempt_at > now() AND b.aggregate = o.aggregate AND b.id < o.id)
ORDER BY id
LIMIT $1`

func fetchDue(ctx context.Context, conn *pgx.Conn, limit int) ([]outboxRow, error) {
	ctx, cancel := context.WithTimeout(ctx, relayQueryTimeout)
	defer cancel()
	rows, err := conn.Query(ctx, fetchDueSQL, limit)
	if err != nil {
		return nil, err
	}
	var out []outboxRow
	var o outboxRow
	_, err = pgx.ForEachRow(rows, []any{&o.id, &o.aggregate, &o.kind, &o.payload, &o.createdAt, &o.attempts}, func() error {
		o.payload = append([]byte(nil), o.payload...)
		out = append(out, o)
		return nil
	})
	return out, err
}

// outboxPayload is what a stamped outbox event carries for the counter.
type outboxPayload struct {
	EventID string `json:"event_id"`
	UserID  string `json:"user_id"`
	PeerID  string `json:"peer_id"`
	Seq     *int64 `json:"seq"`
	Unread  *int   `json:"unread"`
}

// eventOf turns an outbox row into the counter event it carries, or says
// why it cannot.
func eventOf(o outboxRow) (Event, string) {
	switch o.kind {
	case KindMessageSent, KindDialogRead, KindUnreadReset:
	default:
		return Event{}, fmt.Sprintf("outbox kind %q carries no counter event", truncate(o.kind, 40))
	}
	var p outboxPayload
	if err := json.Unmarshal(o.payload, &p); err != nil {
		return Event{}, "payload is not a JSON object: " + err.Error()
	}
	if p.Seq == nil || p.Unread == nil {
		return Event{}, "payload has no seq and unread (written without the outbox trigger)"
	}
	e := Event{
		ID: p.EventID, OutboxID: o.id, Kind: o.kind, UserID: p.UserID, PeerID: p.PeerID,
		Seq: *p.Seq, Unread: *p.Unread, CommittedAt: o.createdAt,
	}
	if reason := e.Validate(); reason != "" {
		return Event{}, reason
	}
	return e, ""
}

// deliver posts rows to counterd and records the answer in the outbox:
// acknowledged events are deleted, failed ones rescheduled or dead-lettered.
// When counterd acknowledged nothing it changes nothing and returns why as
// nack. Its error is the dialogs database's.
func (r *Relay) deliver(ctx context.Context, conn *pgx.Conn, rows []outboxRow) (nack, err error) {
	events := make([]Event, 0, len(rows))
	sent := make([]int, 0, len(rows)) // index in rows of each event
	failed := map[int]string{}        // index in rows -> reason
	for i, o := range rows {
		e, reason := eventOf(o)
		if reason != "" {
			failed[i] = reason
			continue
		}
		events = append(events, e)
		sent = append(sent, i)
	}
	var delivered []int64
	if len(events) > 0 {
		res, err := r.cfg.Counter.Apply(ctx, Batch{Events: events})
		if bad := invalidEvents(err, len(events)); len(bad) > 0 {
			// counterd refused the batch for these events (it validates
			// differently, a newer version): they fail, the others go again
			// in the next batch.
			r.m.batches.WithLabelValues("error").Inc()
			for j, reason := range bad {
				failed[sent[j]] = OutcomeRejected + ": " + reason
			}
			res, err = BatchResult{}, nil
		}
		if err != nil {
			r.m.batches.WithLabelValues("error").Inc()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return err, nil
		}
		r.m.batches.WithLabelValues("ok").Inc()
		now := time.Now()
		for j, res := range res.Results {
			i := sent[j]
			r.m.events.WithLabelValues(res.Outcome).Inc()
			if res.Delivered() {
				delivered = append(delivered, rows[i].id)
				r.m.latency.Observe(max(now.Sub(rows[i].createdAt), 0).Seconds())
				continue
			}
			failed[i] = res.Outcome + ": " + res.Reason
		}
	}
	dead, err := r.ack(ctx, conn, rows, delivered, failed)
	if err != nil {
		return nil, fmt.Errorf("record deliveries in the outbox: %w", err)
	}
	if dead > 0 {
		r.m.deadTotal.Add(float64(dead))
	}
	return nil, nil
}

// invalidEvents returns, by index, the events that counterd's EINVALID
// answer err names (fields "events[i]"), or nil.
func invalidEvents(err error, n int) map[int]string {
	var e *social.Error
	if !errors.As(err, &e) || e.Code != social.EINVALID {
		return nil
	}
	bad := map[int]string{}
	for f, reason := range e.Fields {
		var i int
		if _, serr := fmt.Sscanf(f, "events[%d]", &i); serr == nil && 0 <= i && i < n {
			bad[i] = reason
		}
	}
	return bad
}

// ack deletes the delivered events and, for each failed one, either
// schedules its next attempt or moves it to the dead-letter table, in one
// transaction. It returns how many events became dead letters.
func (r *Relay) ack(ctx context.Context, conn *pgx.Conn, rows []outboxRow, delivered []int64, failed map[int]string) (int, error) {
	var retryIDs, deadIDs []int64
	var retryReasons, deadReasons []string
	var retryDelays []float64
	for i, reason := range failed {
		o := rows[i]
		reason = truncate(reason, 500)
		if o.attempts+1 >= r.cfg.MaxAttempts {
			deadIDs, deadReasons = append(deadIDs, o.id), append(deadReasons, reason)
			r.log.Error("outbox event moved to the dead-letter table", "outbox_id", o.id, "kind", o.kind,
				"attempts", o.attempts+1, "reason", reason)
			continue
		}
		retryIDs, retryReasons = append(retryIDs, o.id), append(retryReasons, reason)
		retryDelays = append(retryDelays, r.cfg.Backoff.Delay(o.attempts+1).Seconds())
		r.log.Warn("outbox event failed; will retry", "outbox_id", o.id, "kind", o.kind, "attempts", o.attempts+1, "reason", reason)
	}
	ctx, cancel := context.WithTimeout(ctx, relayQueryTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if len(delivered) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, delivered); err != nil {
				return err
			}
		}
		if len(retryIDs) > 0 {
			_, err := tx.Exec(ctx, `UPDATE outbox o
				SET attempts = o.attempts + 1, last_error = f.reason,
					next_attempt_at = now() + make_interval(secs => f.delay)
				FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS f(id, reason, delay)
				WHERE o.id = f.id`, retryIDs, retryReasons, retryDelays)
			if err != nil {
				return err
			}
		}
		if len(deadIDs) > 0 {
			// A function of the schema: it needs no rights on the
			// dead-letter table from the relay's role.
			if _, err := tx.Exec(ctx, `SELECT outbox_dead_letter($1, $2)`, deadIDs, deadReasons); err != nil {
				return err
			}
		}
		return nil
	})
	return len(deadIDs), err
}

// refreshStats updates the backlog and dead-letter gauges, and alerts when
// the backlog is above the maximum.
func (r *Relay) refreshStats(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, relayQueryTimeout)
	defer cancel()
	b, err := OutboxBacklog(ctx, conn)
	if err != nil {
		return err
	}
	var dead int64
	if err := conn.QueryRow(ctx, `SELECT outbox_dead_letter_count()`).Scan(&dead); err != nil {
		return fmt.Errorf("outbox statistics: %w", err)
	}
	r.m.backlog.Set(float64(b.Events))
	r.m.oldest.Set(b.OldestSeconds)
	r.m.deadLetters.Set(float64(dead))
	over := b.Events > r.cfg.MaxBacklog
	was := r.over.Swap(over)
	switch {
	case over:
		r.m.overMax.Set(1)
		if !was || time.Since(r.alertedAt) >= backlogAlertEvery {
			r.alertedAt = time.Now()
			r.log.Error("outbox backlog above its maximum: counterd is down, refusing or too slow; messages are still accepted",
				"backlog", b.Events, "max_backlog", r.cfg.MaxBacklog, "oldest_seconds", int64(b.OldestSeconds))
		}
	case was:
		r.m.overMax.Set(0)
		r.log.Info("outbox backlog back under its maximum", "backlog", b.Events, "max_backlog", r.cfg.MaxBacklog)
	}
	return nil
}

// queryRow runs one query on conn with the relay's query timeout.
func queryRow(ctx context.Context, conn *pgx.Conn, sql string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, relayQueryTimeout)
	defer cancel()
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
