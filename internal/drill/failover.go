package drill

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"socnet/internal/stack"
)

// Defaults of the drills' options.
const (
	DefaultDuration        = 10 * time.Second
	DefaultKillAfter       = 3 * time.Second
	DefaultWriters         = 8
	DefaultFailoverTimeout = 60 * time.Second
	DefaultRejoinTimeout   = 120 * time.Second
	DefaultReplayTimeout   = 30 * time.Second
	DefaultHealthyTimeout  = 120 * time.Second
	DefaultSettle          = 5 * time.Second
	DefaultBucket          = 100 * time.Millisecond
)

// errorPause is how long a writer waits after a write that was not
// acknowledged, so that a refused connection does not become a busy loop.
const errorPause = 50 * time.Millisecond

// FailoverOptions tune RunFailover. Zero fields take the defaults.
type FailoverOptions struct {
	// Duration is how long the writers write at least.
	Duration time.Duration
	// KillAfter is when the primary is killed, from the first write.
	KillAfter time.Duration
	// RandomKill kills at a uniformly random moment between 20% and 80% of
	// Duration instead of KillAfter.
	RandomKill bool
	// Writers is the number of concurrent writers.
	Writers int
	// FailoverTimeout bounds how long writing goes on after the kill while
	// no write is acknowledged, and the wait for the promotion.
	FailoverTimeout time.Duration
	// RejoinTimeout bounds the wait for the old primary to stream again.
	RejoinTimeout time.Duration
	// ReplayTimeout bounds the wait for each replica to replay up to the
	// primary before it is verified.
	ReplayTimeout time.Duration
	// HealthyTimeout bounds the wait, before the run, for a primary and
	// every replica streaming.
	HealthyTimeout time.Duration
	// Settle is how long the healthy cluster must keep its primary and
	// each replica's sync state before the run starts: an engine may move
	// the synchronous role once every replica streams again (Patroni's
	// does), and a run that began meanwhile would hold back and measure a
	// cluster in transition.
	Settle time.Duration
	// Bucket is the width of the timeline's buckets.
	Bucket time.Duration
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// Rand draws the random kill moment in [0, 1); nil uses math/rand/v2.
	Rand func() float64
	// Fault is what is done to the primary; default FaultPostmaster.
	Fault Fault
	// NoHold leaves the asynchronous replica alone. By default the drill
	// holds it back (HoldBack) from half-way to the kill until the kill, so
	// that promoting it would lose the writes acknowledged meanwhile.
	NoHold bool
}

func (o FailoverOptions) withDefaults() FailoverOptions {
	setDefault(&o.Duration, DefaultDuration)
	setDefault(&o.KillAfter, DefaultKillAfter)
	setDefault(&o.FailoverTimeout, DefaultFailoverTimeout)
	setDefault(&o.RejoinTimeout, DefaultRejoinTimeout)
	setDefault(&o.ReplayTimeout, DefaultReplayTimeout)
	setDefault(&o.HealthyTimeout, DefaultHealthyTimeout)
	setDefault(&o.Settle, DefaultSettle)
	setDefault(&o.Bucket, DefaultBucket)
	if o.Writers <= 0 {
		o.Writers = DefaultWriters
	}
	if o.Fault == "" {
		o.Fault = FaultPostmaster
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	return o
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// RunFailover runs the failover drill once: it writes with opt.Writers
// concurrent writers, breaks the cluster's primary with opt.Fault at the
// chosen moment, keeps writing while the engine repairs the cluster (at
// least opt.Duration in all, and until a write is acknowledged after the
// kill or opt.FailoverTimeout passes), stops, waits for the old primary to
// stream again as a replica (unless the engine restarted it in place), and
// verifies every write on every node once the replicas have replayed up to
// the primary.
//
// The error is for a drill that could not run (no healthy cluster, the
// kill failed, ctx ended); what the drill found, a loss or a repair that
// did not happen, is in Run.Problems.
func RunFailover(ctx context.Context, t Target, opt FailoverOptions) (Run, error) {
	opt = opt.withDefaults()
	log := opt.Log
	nodes, err := WaitSettled(ctx, t.Cluster, opt.HealthyTimeout, opt.Settle)
	if err != nil {
		return Run{}, fmt.Errorf("failover drill: %w", err)
	}
	old := primaryOf(nodes)
	killAfter := opt.KillAfter
	if opt.RandomKill {
		killAfter = time.Duration((0.2 + 0.6*opt.Rand()) * float64(opt.Duration))
	}

	run := newRun(DrillFailover, t, opt.Writers, opt.Bucket)
	run.OldPrimary = old
	run.Fault = string(opt.Fault)
	if run.Engine, err = t.Cluster.Engine(ctx); err != nil {
		return Run{}, fmt.Errorf("failover drill: %w", err)
	}
	if err := checkHostFault(opt.Fault, run.Engine, nodes, old); err != nil {
		return Run{}, fmt.Errorf("failover drill: %w", err)
	}
	ledger := NewLedger(run.RunID)
	log.Info("drill: writing", "run", run.RunID, "cluster", run.Cluster, "writers", opt.Writers, "kill_after", killAfter)
	pool := startWriters(ctx, t, ledger, opt.Writers, &run)
	run.Started = pool.started

	var hold *Hold
	defer func() { _ = hold.Release() }()
	if !opt.NoHold && len(first(pickVictims(PhaseAsync, nodes))) == 1 {
		if err := sleepCtx(ctx, time.Until(run.Started.Add(killAfter/2))); err != nil {
			pool.stop()
			return Run{}, fmt.Errorf("failover drill: %w", err)
		}
		// The engine may have moved the synchronous role since the cluster
		// was healthy (Patroni's does while a replica reconnects): the
		// replica to hold is the asynchronous one of now.
		if fresh, err := t.Cluster.Nodes(ctx); err == nil && primaryOf(fresh) == old && len(first(pickVictims(PhaseAsync, fresh))) == 1 {
			nodes = fresh
		}
		victim := first(pickVictims(PhaseAsync, nodes))
		if hold, err = HoldBack(ctx, nodes, victim[0]); err != nil {
			run.Problems = append(run.Problems, err.Error())
		} else {
			log.Info("drill: holding back the asynchronous replica", "node", hold.Node, "wal_sender", hold.Sender)
			run.Events = append(run.Events, Event{Kind: EventHold, Node: hold.Node, At: hold.At, Detail: "its WAL sender stopped (SIGSTOP)"})
		}
	}

	// The kill.
	if err := sleepCtx(ctx, time.Until(run.Started.Add(killAfter))); err != nil {
		pool.stop()
		return Run{}, fmt.Errorf("failover drill: %w", err)
	}
	var held *HeldBack
	if hold != nil {
		// On a busy machine the hold can take most of the time to the
		// kill; the kill waits for one write acknowledged while the replica
		// is held, without which the verdict could not tell a promotion of
		// the wrong replica.
		if err := waitAckAfter(ctx, ledger, hold.At, heldAckWait); err != nil {
			pool.stop()
			return Run{}, fmt.Errorf("failover drill: %w", err)
		}
		held = &HeldBack{Node: hold.Node, At: hold.At}
		if held.GapBytes, err = ReceiveGap(ctx, nodes, hold.Node); err != nil {
			run.Problems = append(run.Problems, err.Error())
		}
	}
	log.Info("drill: killing the primary", "node", old, "fault", opt.Fault)
	var killedAt time.Time
	detail := "SIGKILL to the postmaster and its children"
	if opt.Fault == FaultHost {
		killedAt, detail, err = t.Cluster.KillHost(ctx, old)
	} else {
		killedAt, err = t.Cluster.Kill(ctx, old)
	}
	if err != nil {
		pool.stop()
		return Run{}, fmt.Errorf("failover drill: %w", err)
	}
	if opt.Fault == FaultHost && run.Engine == stack.EngineSocnet {
		detail += "; no agent runs on the node under this engine"
	}
	run.Events = append(run.Events, Event{Kind: EventKill, Node: old, At: killedAt, Detail: detail})
	if err := hold.Release(); err != nil {
		run.Problems = append(run.Problems, err.Error())
	}

	repaired := watchRepair(ctx, t.Cluster, old, killedAt, opt, log)

	// Keep writing for the rest of the duration, and until writes work again.
	end := run.Started.Add(opt.Duration)
	giveUp := killedAt.Add(opt.FailoverTimeout)
	for {
		now := time.Now()
		back := !ledger.LatestAckStart().Before(killedAt)
		if now.After(giveUp) || (back && !now.Before(end)) {
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			pool.stop()
			return Run{}, fmt.Errorf("failover drill: %w", err)
		}
	}
	stoppedAt := pool.stop()
	run.Stopped = stoppedAt
	run.Events = append(run.Events, Event{Kind: EventStop, At: stoppedAt, Detail: "writers stopped"})
	attempts := ledger.Attempts()
	log.Info("drill: writers stopped", "attempts", len(attempts))

	rep := <-repaired
	if ctx.Err() != nil {
		return Run{}, fmt.Errorf("failover drill: %w", ctx.Err())
	}
	rep.record(&run, old, killedAt, log)
	if held != nil {
		held.judge(&run, attempts, killedAt)
	}

	if at, ok := FirstAckAfter(attempts, killedAt); ok {
		run.UnavailableMS = msPtr(at.Sub(killedAt))
	} else {
		run.Problems = append(run.Problems, "no write was acknowledged after the kill")
	}
	finishRun(ctx, &run, t, pool, ledger.Prefix(), attempts, opt.ReplayTimeout, opt.Bucket)
	log.Info("drill: verified", "run", run.RunID, "ok", run.OK(), "counter_drift", run.CounterDrift())
	return run, ctx.Err()
}

// heldAckWait bounds how long the kill waits for a write acknowledged
// while the asynchronous replica is held back.
const heldAckWait = 10 * time.Second

// waitAckAfter waits until the ledger holds a write acknowledged that
// started after at, for at most limit; it returns early only when ctx ends.
// A hold that makes no difference in that time is judged by HeldBack.judge.
func waitAckAfter(ctx context.Context, ledger *Ledger, at time.Time, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for !ledger.LatestAckStart().After(at) {
		if !time.Now().Before(deadline) {
			return nil
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// repair is what the engine did after a kill of the primary, as the drill
// saw it.
type repair struct {
	fault Fault
	// promoted is the node that accepted writes first (old itself when it
	// was restarted in place); writableAt when it first answered as a
	// primary; promotedAt the promotion's time, from the failover history
	// when it has the entry, else writableAt.
	promoted   string
	writableAt time.Time
	promotedAt time.Time
	detail     string
	fromRecord bool
	promoteErr error
	rejoinedAt time.Time
	rejoinErr  error
	// keptDown are the kills of processes of a lost host that came back
	// before the promotion.
	keptDown     []Event
	failoverWait time.Duration
	rejoinWait   time.Duration
}

// watchRepair waits, from the kill on and while the drill goes on, for a
// node to accept writes, then for the failover history's record of the
// promotion and for the old primary to stream as a replica, both at once,
// so that every moment is seen when it happens. After a host fault it keeps
// the old primary's node down until a node accepts writes.
func watchRepair(ctx context.Context, c Cluster, old string, killedAt time.Time, opt FailoverOptions, log *slog.Logger) <-chan repair {
	out := make(chan repair, 1)
	go func() {
		r := repair{fault: opt.Fault, failoverWait: opt.FailoverTimeout, rejoinWait: opt.RejoinTimeout}
		pctx, cancel := context.WithTimeout(ctx, opt.FailoverTimeout)
		var kept <-chan []Event
		if opt.Fault == FaultHost {
			kept = keepDown(pctx, c, old, log)
		}
		r.promoted, r.writableAt, r.promoteErr = c.WaitWritable(pctx, old, killedAt)
		cancel()
		if kept != nil {
			r.keptDown = <-kept
		}
		r.promotedAt, r.detail = r.writableAt, "first answered as a primary"
		if r.promoteErr != nil || r.promoted == old {
			out <- r
			return
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, historyWait)
			defer cancel()
			if rec, err := c.FailoverRecord(hctx, old, r.promoted, killedAt); err == nil {
				r.promotedAt, r.detail, r.fromRecord = rec.Promoted(), "failover history "+rec.ID, true
			}
		})
		rctx, cancel := context.WithTimeout(ctx, opt.RejoinTimeout)
		r.rejoinedAt, r.rejoinErr = c.WaitStreaming(rctx, old)
		cancel()
		wg.Wait()
		out <- r
	}()
	return out
}

// historyWait bounds the wait, once a new primary answers, for the
// failover history to record its promotion: the socnet engine gives the
// record its promotion time after the other replicas are re-pointed.
const historyWait = 10 * time.Second

// record adds the repair's events, figures and problems to run.
func (r repair) record(run *Run, old string, killedAt time.Time, log *slog.Logger) {
	run.Events = append(run.Events, r.keptDown...)
	seen := RepairSeen{Fault: r.fault, Writable: r.promoteErr == nil, InPlace: r.promoteErr == nil && r.promoted == old,
		Rejoined: r.rejoinErr == nil, FailoverWait: r.failoverWait, RejoinWait: r.rejoinWait, Old: old, New: r.promoted}
	run.Problems = append(run.Problems, JudgeRepair(seen)...)
	if r.promoteErr != nil {
		run.Problems = append(run.Problems, r.promoteErr.Error())
		return
	}
	run.NewPrimary = r.promoted
	run.PromotionMS = msPtr(r.promotedAt.Sub(killedAt))
	run.PromotionFrom = PromotionPolled
	if r.fromRecord {
		run.PromotionFrom = PromotionHistory
	}
	if seen.InPlace {
		run.RestartedInPlace = true
		run.Events = append(run.Events, Event{Kind: EventPromotion, Node: r.promoted, At: r.promotedAt, Detail: "restarted in place; " + r.detail})
		log.Info("drill: the old primary was restarted in place", "node", old, "after", r.promotedAt.Sub(killedAt))
		return
	}
	run.Events = append(run.Events, Event{Kind: EventPromotion, Node: r.promoted, At: r.promotedAt, Detail: r.detail})
	log.Info("drill: promoted", "node", r.promoted, "after", r.promotedAt.Sub(killedAt))
	if r.rejoinErr != nil {
		log.Warn("drill: the old primary did not rejoin", "node", old, "err", r.rejoinErr)
		return
	}
	run.Events = append(run.Events, Event{Kind: EventRejoin, Node: old, At: r.rejoinedAt, Detail: "streams as a replica"})
	run.RejoinMS = msPtr(r.rejoinedAt.Sub(killedAt))
	log.Info("drill: old primary rejoined", "node", old, "after", r.rejoinedAt.Sub(killedAt))
}

// RepeatFailover runs the failover drill n times; each run kills whichever
// node is the primary then, so the role moves around the cluster. It stops
// at the first run that could not run, and returns the runs so far.
func RepeatFailover(ctx context.Context, t Target, n int, opt FailoverOptions) ([]Run, error) {
	var runs []Run
	for i := range max(n, 1) {
		run, err := RunFailover(ctx, t, opt)
		if err != nil {
			return runs, fmt.Errorf("run %d of %d: %w", i+1, n, err)
		}
		runs = append(runs, run)
	}
	return runs, nil
}

// newRun starts the record of a run.
func newRun(drill string, t Target, writers int, bucket time.Duration) Run {
	run := Run{
		RunID:    NewRunID(time.Now()),
		Drill:    drill,
		Cluster:  t.Cluster.Name(),
		Writes:   t.Writer.Describe(),
		Writers:  writers,
		BucketMS: int(bucket / time.Millisecond),
		Errors:   map[string]int{},
		Problems: []string{},
	}
	if v := t.verifyCluster().Name(); v != run.Cluster {
		run.VerifiedOn = v
	}
	return run
}

// finishRun verifies the run's writes on every node, checks the counters
// when the target asks for it, checks the history of the session workload
// when there is one, and fills in the figures of the ledger.
func finishRun(ctx context.Context, run *Run, t Target, pool *writerPool, prefix string, attempts []Attempt, replayTimeout, bucket time.Duration) {
	v, err := VerifyWrites(ctx, t, prefix, attempts, replayTimeout)
	if err != nil {
		v = Judge(attempts, nil)
		run.Problems = append(run.Problems, err.Error())
	}
	run.Verdict = &v
	run.Problems = append(run.Problems, v.Problems...)
	if t.Counters != nil {
		cv := t.Counters.Check(ctx, t.verifyCluster(), run.Stopped)
		run.Counters = &cv
		run.Problems = append(run.Problems, cv.Problems...)
	}
	if pool.sessions != nil {
		pool.sessions.check(ctx, run)
	}
	fillFigures(run, attempts, bucket)
}

// fillFigures computes the figures of a run from its attempts: errors,
// the longest stall while writing, and the timeline up to the last event.
func fillFigures(run *Run, attempts []Attempt, bucket time.Duration) {
	sortEvents(run.Events)
	run.Errors = ErrorCounts(attempts)
	gap, _ := LongestGap(attempts, run.Started, run.Stopped)
	run.LongestStallMS = millis(gap)
	end := run.Stopped
	for _, e := range run.Events {
		if e.At.After(end) {
			end = e.At
		}
	}
	run.Timeline = Timeline(attempts, run.Started, end.Add(bucket), bucket)
	run.Ended = time.Now()
}

// primaryOf returns the name of the primary among nodes, "" if none.
func primaryOf(nodes []Node) string {
	for _, n := range nodes {
		if n.Role == RolePrimary {
			return n.Name
		}
	}
	return ""
}

// WaitHealthy waits until the cluster has a primary and every other node
// streams from it as a replica, and returns the nodes then.
func WaitHealthy(ctx context.Context, c Cluster, timeout time.Duration) ([]Node, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	why := "not asked yet"
	for {
		nodes, err := c.Nodes(ctx)
		if err == nil {
			if why = unhealthy(nodes); why == "" {
				return nodes, nil
			}
		} else {
			why = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster %s not healthy within %v: %s", c.Name(), timeout, why)
		case <-t.C:
		}
	}
}

// WaitSettled waits until the cluster is healthy (WaitHealthy) and has kept
// the same primary and the same sync state of every replica for settle,
// and returns the nodes then. timeout bounds the whole wait.
func WaitSettled(ctx context.Context, c Cluster, timeout, settle time.Duration) ([]Node, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var shape string
	var since time.Time
	why := "not asked yet"
	for {
		nodes, err := c.Nodes(ctx)
		switch {
		case err != nil:
			why, shape = err.Error(), ""
		case unhealthy(nodes) != "":
			why, shape = unhealthy(nodes), ""
		default:
			if s := topology(nodes); s != shape {
				shape, since = s, time.Now()
			}
			if time.Since(since) >= settle {
				return nodes, nil
			}
			why = "healthy, settling: " + shape
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster %s not healthy and settled for %v within %v: %s", c.Name(), settle, timeout, why)
		case <-t.C:
		}
	}
}

// topology names the roles and sync states of nodes, in their order.
func topology(nodes []Node) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "%s %s %s; ", n.Name, n.Role, n.SyncState)
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// unhealthy says what keeps nodes from being a healthy cluster, "" if
// nothing.
func unhealthy(nodes []Node) string {
	primaries := 0
	for _, n := range nodes {
		switch {
		case n.Role == RolePrimary:
			primaries++
		case n.Role != RoleReplica:
			return n.Name + " is " + n.Role
		case n.SyncState == "":
			return n.Name + " does not stream from the primary"
		}
	}
	switch {
	case len(nodes) < 2:
		return "fewer than two nodes"
	case primaries != 1:
		return fmt.Sprintf("%d primaries", primaries)
	}
	return ""
}

// writerPool is the drill's concurrent writers, and its session workload
// when the target has one.
type writerPool struct {
	started  time.Time
	cancel   chan struct{}
	wg       sync.WaitGroup
	sessions *sessionRun
}

// startWriters starts n writers that write through t's writer into the
// ledger until stopped, and t's session workload; a workload that cannot
// start is a problem of run.
func startWriters(ctx context.Context, t Target, l *Ledger, n int, run *Run) *writerPool {
	w := t.Writer
	p := &writerPool{started: time.Now(), cancel: make(chan struct{})}
	if t.Sessions != nil {
		var err error
		if p.sessions, err = t.Sessions.start(ctx, run.RunID); err != nil {
			run.Problems = append(run.Problems, err.Error())
		}
	}
	for range n {
		p.wg.Go(func() {
			for {
				select {
				case <-p.cancel:
					return
				case <-ctx.Done():
					return
				default:
				}
				seq, tag := l.Next()
				start := time.Now()
				res := w.Write(ctx, tag)
				l.Record(Attempt{Seq: seq, Tag: tag, Outcome: res.Outcome, ID: res.ID, Error: res.Error, Server: res.Server, Start: start, End: time.Now()})
				if res.Outcome != Acknowledged {
					select {
					case <-p.cancel:
						return
					case <-ctx.Done():
						return
					case <-time.After(errorPause):
					}
				}
			}
		})
	}
	return p
}

// stop asks the writers to stop, waits for the writes in flight to end (a
// write is always recorded with what its client saw), and returns when it
// asked.
func (p *writerPool) stop() time.Time {
	at := time.Now()
	select {
	case <-p.cancel:
	default:
		close(p.cancel)
	}
	p.wg.Wait()
	p.sessions.halt()
	return at
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
