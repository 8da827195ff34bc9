package drill

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/seed"
)

// FillOptions tune RunFill. Zero fields take the defaults.
type FillOptions struct {
	// Users is how many users the load writes; default seed.DefaultUsers.
	Users int
	// KillAt is the fraction of Users acknowledged at which the primary is
	// killed, in (0, 1); default 0.3.
	KillAt float64
	// BatchSize is the rows per COPY transaction; default seed's.
	BatchSize int
	// Seed selects the generated users; 0 draws a fresh one, so that the
	// load starts from nothing and cannot collide with earlier loads.
	Seed int64
	// FailoverTimeout bounds the wait for the promotion after the kill.
	FailoverTimeout time.Duration
	// RejoinTimeout bounds the wait for the old primary to stream again.
	RejoinTimeout time.Duration
	// ReplayTimeout bounds the wait for each replica to replay up to the
	// primary before it is verified.
	ReplayTimeout time.Duration
	// HealthyTimeout bounds the wait for a healthy cluster before the load.
	HealthyTimeout time.Duration
	// Bucket is the width of the timeline's buckets; default 1 s (a batch
	// is thousands of rows).
	Bucket time.Duration
	// Progress receives the loader's progress lines; nil discards them.
	Progress io.Writer
	// Log receives the drill's progress; nil discards it.
	Log *slog.Logger
}

// idChunk is how many ids one verification query checks.
const idChunk = 10_000

// RunFill runs the experiment of the course's document: it bulk-loads
// opt.Users users with seed.Run through db (a dbroute.DB over every node of
// the cluster), recording each batch the loader acknowledges; when
// opt.KillAt of them are in, it SIGKILLs the primary; the loader retries
// and resumes on the new primary. When the load has ended and the old
// primary streams again, it verifies on every node that every acknowledged
// row is present, that no row is there twice (count(*) = count(DISTINCT id)
// = the count before the load + Users) and that the nodes agree. The users
// table must receive no other writes meanwhile.
func RunFill(ctx context.Context, db *dbroute.DB, c Cluster, opt FillOptions) (Run, error) {
	if opt.Users <= 0 {
		opt.Users = seed.DefaultUsers
	}
	if opt.KillAt <= 0 || opt.KillAt >= 1 {
		opt.KillAt = 0.3
	}
	for opt.Seed == 0 {
		opt.Seed = rand.Int64()
	}
	setDefault(&opt.FailoverTimeout, DefaultFailoverTimeout)
	setDefault(&opt.RejoinTimeout, DefaultRejoinTimeout)
	setDefault(&opt.ReplayTimeout, DefaultReplayTimeout)
	setDefault(&opt.HealthyTimeout, DefaultHealthyTimeout)
	setDefault(&opt.Bucket, time.Second)
	if opt.Progress == nil {
		opt.Progress = io.Discard
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	nodes, err := WaitHealthy(ctx, c, opt.HealthyTimeout)
	if err != nil {
		return Run{}, fmt.Errorf("fill drill: %w", err)
	}
	old := primaryOf(nodes)
	var before int64
	for _, n := range nodes {
		if n.Name == old {
			err = withConn(ctx, n.DSN, func(conn *pgx.Conn) error {
				return conn.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&before)
			})
		}
	}
	if err != nil {
		return Run{}, fmt.Errorf("fill drill: count users on %s: %w", old, err)
	}

	run := Run{
		RunID:      NewRunID(time.Now()),
		Drill:      DrillFill,
		Cluster:    c.Name(),
		Writes:     fmt.Sprintf("bulk load of %d users (seed %d) in COPY batches through dbroute", opt.Users, opt.Seed),
		Writers:    1,
		BucketMS:   int(opt.Bucket / time.Millisecond),
		OldPrimary: old,
		Errors:     map[string]int{},
		Problems:   []string{},
	}
	ledger := &BatchLedger{}
	threshold := int(float64(opt.Users) * opt.KillAt)
	killNow := make(chan struct{})
	acked, triggered := 0, false
	sopts := seed.Options{Users: opt.Users, Seed: opt.Seed, BatchSize: opt.BatchSize,
		OnBatch: func(first, n int, ids []string) {
			ledger.OnBatch(first, n, ids)
			acked += n
			if !triggered && acked >= threshold {
				triggered = true
				close(killNow)
			}
		}}
	type loadResult struct {
		res seed.Result
		err error
	}
	loaded := make(chan loadResult, 1)
	run.Started = time.Now()
	log.Info("drill: loading", "users", opt.Users, "seed", opt.Seed, "kill_at", threshold)
	go func() {
		res, err := seed.Run(ctx, db, sopts, opt.Progress)
		loaded <- loadResult{res, err}
	}()

	var killedAt time.Time
	var lr loadResult
	done := false
	select {
	case <-killNow:
	case lr = <-loaded:
		done = true
		run.Problems = append(run.Problems, "the load ended before the kill")
	case <-ctx.Done():
		<-loaded
		return Run{}, fmt.Errorf("fill drill: %w", ctx.Err())
	}
	var repaired <-chan repair
	if !done {
		log.Info("drill: killing the primary", "node", old, "acknowledged_rows", threshold)
		killedAt, err = c.Kill(ctx, old)
		if err != nil {
			<-loaded
			return Run{}, fmt.Errorf("fill drill: %w", err)
		}
		run.Events = append(run.Events, Event{Kind: EventKill, Node: old, At: killedAt, Detail: "SIGKILL to the postmaster and its children"})
		repaired = watchRepair(ctx, c, old, killedAt, FailoverOptions{Fault: FaultPostmaster,
			FailoverTimeout: opt.FailoverTimeout, RejoinTimeout: opt.RejoinTimeout}, log)
		lr = <-loaded
	}
	run.Stopped = time.Now()
	run.Events = append(run.Events, Event{Kind: EventStop, At: run.Stopped, Detail: "load ended"})
	if lr.err != nil {
		run.Problems = append(run.Problems, fmt.Sprintf("the load failed: %v", lr.err))
		run.Errors["load"]++
	}

	if repaired != nil {
		rep := <-repaired
		if ctx.Err() != nil {
			return Run{}, fmt.Errorf("fill drill: %w", ctx.Err())
		}
		rep.record(&run, old, killedAt, log)
	}

	batches := ledger.Batches()
	attempts := ledger.Attempts()
	if !killedAt.IsZero() {
		if at, ok := FirstAckAfter(attempts, killedAt); ok {
			run.UnavailableMS = msPtr(at.Sub(killedAt))
		}
	}
	nodes, err = c.Nodes(ctx)
	if err != nil {
		run.Problems = append(run.Problems, fmt.Sprintf("could not list the nodes to verify: %v", err))
	}
	counts := countFill(ctx, nodes, batches, opt.ReplayTimeout)
	v := JudgeFill(opt.Users, batches, before+int64(opt.Users), lr.err == nil, counts)
	run.Fill = &v
	run.Problems = append(run.Problems, v.Problems...)
	errs := run.Errors
	fillFigures(&run, attempts, opt.Bucket)
	for k, n := range errs {
		run.Errors[k] += n
	}
	return run, ctx.Err()
}

// countFill counts, on every node, the rows of users and the acknowledged
// ids present.
func countFill(ctx context.Context, nodes []Node, batches []Batch, replayTimeout time.Duration) []FillNode {
	out := make([]FillNode, len(nodes))
	var ids []string
	for _, b := range batches {
		ids = append(ids, b.IDs...)
	}
	errs := onEveryNode(ctx, nodes, replayTimeout, func(i int, conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT id) FROM users`).Scan(&out[i].Rows, &out[i].Distinct); err != nil {
			return fmt.Errorf("count users: %w", err)
		}
		for start := 0; start < len(ids); start += idChunk {
			chunk := ids[start:min(start+idChunk, len(ids))]
			var n int64
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM users WHERE id = ANY($1::text[]::uuid[])`, chunk).Scan(&n); err != nil {
				return fmt.Errorf("count acknowledged ids: %w", err)
			}
			out[i].AckedPresent += n
		}
		return nil
	})
	for i, n := range nodes {
		out[i].Node, out[i].Role, out[i].Err = n.Name, n.Role, errs[i]
	}
	return out
}
