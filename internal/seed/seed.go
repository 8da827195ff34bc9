package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"socnet/internal/dbroute"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

// Password is the password of every person the loader creates. Its bcrypt
// hash is computed once per run and stored on every row.
const Password = "socnet-seed"

// Defaults of Options.
const (
	DefaultUsers     = 1_000_000
	DefaultBatchSize = 10_000
)

// Retry policy of a batch whose write fails because the database is
// unavailable (a failover, a restart): up to maxAttempts attempts, waiting
// firstBackoff, doubling up to maxBackoff, about a minute in all.
const (
	maxAttempts  = 25
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 3 * time.Second
)

// Options tune a load.
type Options struct {
	// Users is how many people Run generates; 0 means DefaultUsers.
	Users int
	// Seed selects the people: the same seed gives the same ids, names and
	// everything else.
	Seed int64
	// BatchSize is the number of rows per COPY transaction; 0 means
	// DefaultBatchSize.
	BatchSize int
	// Terminal draws one progress bar line redrawn with \r; otherwise a
	// plain line is printed about every 5%.
	Terminal bool
	// OnBatch, when set, is called after each batch commits with the index
	// of its first row, its size and the ids it wrote (a ledger for failure
	// drills). The ids slice is not reused.
	OnBatch func(first, n int, ids []string)
}

// BadLine is an input line that was not loaded.
type BadLine struct {
	Line   int
	Reason string
}

// Result says what a load did.
type Result struct {
	// Target is the number of rows of the load when complete.
	Target int
	// Existing is the number of rows earlier runs had already loaded.
	Existing int
	// Loaded is the number of rows this call inserted.
	Loaded int
	// Skipped lists the input lines that were not loaded (LoadCSV).
	Skipped []BadLine
	// Elapsed is the wall time of the call.
	Elapsed time.Duration
}

// Run loads opts.Users generated people of opts.Seed into users, in batches
// of opts.BatchSize rows, each one COPY in a transaction that also advances
// the seed_runs row of the seed. The rows and their ids depend only on
// (seed, index), so a load is resumable and exactly-once: a run that
// stopped (cancelled, crashed, the primary lost) continues where the last
// committed batch ended, and a finished one prints "already seeded: N users"
// and does nothing. A larger Users than an earlier run of the same seed
// extends it with the people after those loaded; a smaller Users than the
// rows already loaded is refused. A batch that fails because the database is
// unavailable is retried with backoff (about a minute), so a failover during
// the load does not stop it.
//
// The secondary indexes stay in place while loading: a live database keeps
// serving searches.
func Run(ctx context.Context, db *dbroute.DB, opts Options, progress io.Writer) (Result, error) {
	start := time.Now()
	if opts.Users == 0 {
		opts.Users = DefaultUsers
	}
	if opts.Users < 0 {
		return Result{}, fmt.Errorf("seed: users must not be negative, got %d", opts.Users)
	}
	gen, err := NewGenerator(opts.Seed)
	if err != nil {
		return Result{}, err
	}
	l := &loader{db: db, key: opts.Seed, source: "generated", opts: opts, progress: progress, start: start,
		fill: func(first, n int, rows []social.User) ([]social.User, error) {
			for i := range n {
				rows = append(rows, gen.Person(first+i))
			}
			return rows, nil
		}}
	res, err := l.load(ctx, opts.Users)
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("seed %d: %w", opts.Seed, err)
	}
	return res, nil
}

// loader writes rows [done, target) of one seed_runs entry in batches.
type loader struct {
	db       *dbroute.DB
	key      int64  // seed_runs.seed
	source   string // seed_runs.source: what the rows come from
	opts     Options
	progress io.Writer
	start    time.Time
	// fill appends rows [first, first+n) to rows. It is called with
	// consecutive ranges from the first row not yet loaded.
	fill func(first, n int, rows []social.User) ([]social.User, error)
}

type batch struct {
	first int
	rows  []social.User
	err   error
}

// errConcurrentLoad: another process advanced the same seed_runs row.
var errConcurrentLoad = errors.New("another load of the same seed is running")

func (l *loader) load(ctx context.Context, target int) (Result, error) {
	if l.opts.BatchSize == 0 {
		l.opts.BatchSize = DefaultBatchSize
	}
	if l.opts.BatchSize < 0 {
		return Result{}, fmt.Errorf("batch size must be positive, got %d", l.opts.BatchSize)
	}
	done, err := l.begin(ctx, target)
	res := Result{Target: target, Existing: done}
	if err != nil {
		return res, err
	}
	if done == target {
		fmt.Fprintf(l.progress, "already seeded: %d users\n", target)
		return res, nil
	}
	if done > 0 {
		fmt.Fprintf(l.progress, "resuming at %d of %d users\n", done, target)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.DefaultCost)
	if err != nil {
		return res, fmt.Errorf("hash password: %w", err)
	}

	// Rows are made one batch ahead while the previous batch is written.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan batch, 1)
	go func() {
		defer close(batches)
		for first := done; first < target; first += l.opts.BatchSize {
			n := min(l.opts.BatchSize, target-first)
			rows, err := l.fill(first, n, make([]social.User, 0, n))
			select {
			case batches <- batch{first: first, rows: rows, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	bar := newProgress(l.progress, l.opts.Terminal, done, target)
	for b := range batches {
		if b.err != nil {
			return res, b.err
		}
		if err := l.writeWithRetry(ctx, b, hash); err != nil {
			bar.finish(false)
			return res, err
		}
		res.Loaded += len(b.rows)
		if l.opts.OnBatch != nil {
			ids := make([]string, len(b.rows))
			for i := range b.rows {
				ids[i] = b.rows[i].ID
			}
			l.opts.OnBatch(b.first, len(b.rows), ids)
		}
		bar.update(b.first + len(b.rows))
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	bar.finish(true)
	return res, nil
}

// begin creates or checks the seed_runs row and returns how many rows are
// loaded.
func (l *loader) begin(ctx context.Context, target int) (int, error) {
	var done int
	err := l.withRetry(ctx, "start", func() error {
		return l.db.Transact(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO seed_runs (seed, source, target, done) VALUES ($1, $2, $3, 0)
				ON CONFLICT (seed) DO NOTHING`, l.key, l.source, target)
			if err != nil {
				return err
			}
			var source string
			var was int
			err = tx.QueryRow(ctx, `SELECT source, target, done FROM seed_runs WHERE seed = $1 FOR UPDATE`, l.key).
				Scan(&source, &was, &done)
			switch {
			case err != nil:
				return err
			case source != l.source:
				return fmt.Errorf("seed %d was used by a load of %s, not %s", l.key, source, l.source)
			case target < done:
				return fmt.Errorf("%d users of this seed are already loaded, more than the %d asked for; "+
					"ask for %d or more (a larger number extends the load)", done, target, done)
			case target != was:
				_, err = tx.Exec(ctx, `UPDATE seed_runs SET target = $2, updated_at = now() WHERE seed = $1`, l.key, target)
			}
			return err
		})
	})
	return done, err
}

// writeWithRetry writes one batch, retrying while the database is
// unavailable.
func (l *loader) writeWithRetry(ctx context.Context, b batch, hash []byte) error {
	return l.withRetry(ctx, fmt.Sprintf("batch at %d", b.first), func() error {
		return l.writeBatch(ctx, b, hash)
	})
}

// writeBatch COPYs the batch and advances seed_runs.done in one
// transaction. If an earlier attempt committed but its acknowledgement was
// lost, done already covers the batch and the rows are not written again.
func (l *loader) writeBatch(ctx context.Context, b batch, hash []byte) error {
	end := b.first + len(b.rows)
	return l.db.Transact(ctx, func(tx pgx.Tx) error {
		var done int
		if err := tx.QueryRow(ctx, `SELECT done FROM seed_runs WHERE seed = $1 FOR UPDATE`, l.key).Scan(&done); err != nil {
			return fmt.Errorf("lock seed run: %w", err)
		}
		switch done {
		case end:
			// An earlier attempt committed but its reply was lost. Its
			// commit may be visible here yet unconfirmed by the synchronous
			// standby; committing a write now waits for the standby to hold
			// everything up to this point, that batch included.
			_, err := tx.Exec(ctx, `UPDATE seed_runs SET updated_at = now() WHERE seed = $1`, l.key)
			return err
		case b.first:
		default:
			return fmt.Errorf("%w: expected %d rows loaded, found %d", errConcurrentLoad, b.first, done)
		}
		if _, err := postgres.CopyUsers(ctx, tx, b.rows, hash); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE seed_runs SET done = $2, updated_at = now() WHERE seed = $1`, l.key, end)
		return err
	})
}

// withRetry runs fn until it succeeds, fails for a reason other than an
// unavailable database, ctx ends, or maxAttempts attempts are used.
func (l *loader) withRetry(ctx context.Context, what string, fn func() error) error {
	wait := firstBackoff
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !unavailable(err) || attempt == maxAttempts {
			return fmt.Errorf("%s: %w", what, err)
		}
		if l.opts.Terminal {
			fmt.Fprintln(l.progress) // leave the progress bar's line
		}
		fmt.Fprintf(l.progress, "%s: database unavailable (%v); retry %d in %v\n", what, err, attempt, wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, maxBackoff)
	}
}

func unavailable(err error) bool {
	return dbroute.IsUnavailable(err) || social.ErrorCode(err) == social.EUNAVAILABLE
}
