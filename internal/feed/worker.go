package feed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jackc/pgx/v5"
)

// WorkerLockKey is the advisory lock a worker holds while it applies a
// batch ("socnet-f" in ASCII): batches are applied one at a time, in outbox
// order, whichever worker claims them.
const WorkerLockKey int64 = 0x736f636e65742d66

// Worker defaults, applied by NewWorker to zero fields.
const (
	DefaultWorkerBatch = 100
	DefaultWorkerPoll  = 50 * time.Millisecond
	// DefaultBatchTimeout bounds the claim, fan-out and delete of one batch.
	DefaultBatchTimeout = 2 * time.Minute
	workerBackoffMax    = 5 * time.Second
)

// WorkerConfig tunes a Worker.
type WorkerConfig struct {
	// Batch is the most events claimed at once.
	Batch int
	// Poll is the pause when the outbox is empty or another worker is busy.
	Poll time.Duration
	// BatchTimeout bounds one batch.
	BatchTimeout time.Duration
}

// Worker delivers feed_outbox to Redis at least once. In one transaction
// on the primary it takes WorkerLockKey, claims the oldest events (FOR
// UPDATE SKIP LOCKED), applies them through an Applier and deletes them;
// an event is deleted only by the transaction that applied it, so a worker
// killed mid fan-out leaves its batch to the next one, which applies it
// again.
type Worker struct {
	app *Applier
	wc  WorkerConfig
	m   *workerMetrics
}

// NewWorker returns a worker over cfg with wc's zero fields set to the
// defaults.
func NewWorker(cfg Config, wc WorkerConfig) (*Worker, error) {
	app, err := NewApplier(cfg)
	if err != nil {
		return nil, err
	}
	if wc.Batch <= 0 {
		wc.Batch = DefaultWorkerBatch
	}
	if wc.Poll <= 0 {
		wc.Poll = DefaultWorkerPoll
	}
	if wc.BatchTimeout <= 0 {
		wc.BatchTimeout = DefaultBatchTimeout
	}
	m, err := newWorkerMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Worker{app: app, wc: wc, m: m}, nil
}

// errBusy says that another worker holds the lock.
var errBusy = errors.New("another feed worker is applying a batch")

// Run applies events until ctx ends, retrying with backoff while Redis or
// the primary fail. Beside it, it drops the keys of earlier formats once
// (DropStaleKeys). It returns nil when ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		n, err := DropStaleKeys(ctx, w.app.cfg.Redis)
		switch {
		case err != nil && ctx.Err() == nil:
			w.app.cfg.Log.Warn("feed worker: drop keys of an earlier format", "err", err, "dropped", n)
		case n > 0:
			w.app.cfg.Log.Info("feed worker: dropped keys of an earlier format", "keys", n)
		}
	})
	failures := 0
	for ctx.Err() == nil {
		n, err := w.Step(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errBusy), err == nil && n < w.wc.Batch:
			failures = 0
			sleep(ctx, w.wc.Poll)
		case err != nil:
			failures++
			d := min(w.wc.Poll<<min(failures, 10), workerBackoffMax)
			w.app.cfg.Log.Warn("feed worker: batch failed; retrying", "err", err, "attempt", failures, "retry_in", d)
			sleep(ctx, d)
		default:
			failures = 0
		}
	}
	return nil
}

// Drain applies events until the outbox is empty and returns how many it
// applied.
func (w *Worker) Drain(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := w.Step(ctx)
		total += n
		switch {
		case errors.Is(err, errBusy):
			if !sleep(ctx, w.wc.Poll) {
				return total, ctx.Err()
			}
		case err != nil:
			return total, err
		case n == 0:
			return total, nil
		}
	}
}

// Step claims, applies and deletes one batch and returns its size.
func (w *Worker) Step(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.wc.BatchTimeout)
	defer cancel()
	pool := w.app.cfg.DB.Primary()
	var applied []Event
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, WorkerLockKey).Scan(&locked); err != nil {
			return fmt.Errorf("take feed worker lock: %w", err)
		}
		if !locked {
			return errBusy
		}
		// Losing this transaction in a failover loses nothing: the events
		// stay in the outbox and are applied again, which is harmless
		// (applying is idempotent). So its COMMIT does not wait for the
		// synchronous standby, and a standby slowed by load does not hold
		// the next batch back.
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = local`); err != nil {
			return fmt.Errorf("feed worker: %w", err)
		}
		events, err := claim(ctx, tx, w.wc.Batch)
		if err != nil || len(events) == 0 {
			return err
		}
		if err := w.app.Apply(ctx, events); err != nil {
			return err
		}
		ids := make([]int64, len(events))
		for i, e := range events {
			ids[i] = e.ID
		}
		if _, err := tx.Exec(ctx, `DELETE FROM feed_outbox WHERE id = ANY($1)`, ids); err != nil {
			return fmt.Errorf("delete applied feed events: %w", err)
		}
		applied = events
		return nil
	})
	if err != nil {
		return 0, err
	}
	now := time.Now()
	for _, e := range applied {
		w.m.events.WithLabelValues(e.Kind).Inc()
		w.m.latency.Observe(now.Sub(e.CreatedAt).Seconds())
	}
	return len(applied), nil
}

// sleep waits d or until ctx ends and reports whether ctx is still alive.
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

// DropStaleKeys unlinks the feed's keys of earlier formats (see keyPrefix)
// and returns how many it dropped. Readers never look at them, so they only
// take memory until dropped; a Redis started empty has none.
//
// Upgrading a running stack: stop the workers of the old format before
// starting new ones. An old worker applies events to the old keys only and
// deletes them from feed_outbox, so a new-format timeline cached meanwhile
// would miss them.
func DropStaleKeys(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	n := 0
	iter := rdb.Scan(ctx, 0, stalePattern, 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, batch...).Err()
		n += len(batch)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := flush(); err != nil {
				return n, wrap("drop stale feed keys", err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return n, wrap("scan stale feed keys", err)
	}
	return n, wrap("drop stale feed keys", flush())
}
