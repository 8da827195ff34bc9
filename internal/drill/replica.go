package drill

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// ReplicaOptions tune RunReplica. Zero fields take the defaults.
type ReplicaOptions struct {
	// Writers is the number of concurrent writers.
	Writers int
	// Settle is how long the writers write before each kill and after the
	// replicas are back; default 2 s.
	Settle time.Duration
	// BackTimeout bounds the wait for killed replicas to stream again.
	BackTimeout time.Duration
	// ReplayTimeout bounds the wait for each replica to replay up to the
	// primary before it is verified.
	ReplayTimeout time.Duration
	// HealthyTimeout bounds the wait for a healthy cluster before each phase.
	HealthyTimeout time.Duration
	// Bucket is the width of the timeline's buckets.
	Bucket time.Duration
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// The phases of the replica drill.
const (
	PhaseSync  = "sync"  // the synchronous replica is killed
	PhaseAsync = "async" // a replica that is not the synchronous one is killed
	PhaseBoth  = "both"  // every replica is killed at once
)

// RunReplica runs the replica drill: under a steady write load it kills the
// synchronous replica, then another replica, then every replica at once,
// each time waiting for the supervisor to bring them back, and reports the
// stalls the writers felt and the writes refused or left in doubt while no
// replica was up. Then it verifies every write on every node. Errors are
// for a drill that could not run; findings are in Run.Problems.
func RunReplica(ctx context.Context, t Target, opt ReplicaOptions) (Run, error) {
	if opt.Writers <= 0 {
		opt.Writers = DefaultWriters
	}
	setDefault(&opt.Settle, 2*time.Second)
	setDefault(&opt.BackTimeout, DefaultRejoinTimeout)
	setDefault(&opt.ReplayTimeout, DefaultReplayTimeout)
	setDefault(&opt.HealthyTimeout, DefaultHealthyTimeout)
	setDefault(&opt.Bucket, DefaultBucket)
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	log := opt.Log
	if _, err := WaitHealthy(ctx, t.Cluster, opt.HealthyTimeout); err != nil {
		return Run{}, fmt.Errorf("replica drill: %w", err)
	}

	run := newRun(DrillReplica, t, opt.Writers, opt.Bucket)
	ledger := NewLedger(run.RunID)
	pool := startWriters(ctx, t, ledger, opt.Writers, &run)
	run.Started = pool.started
	fail := func(err error) (Run, error) {
		pool.stop()
		return Run{}, fmt.Errorf("replica drill: %w", err)
	}

	for _, name := range []string{PhaseSync, PhaseAsync, PhaseBoth} {
		nodes, err := WaitHealthy(ctx, t.Cluster, opt.HealthyTimeout)
		if err != nil {
			return fail(err)
		}
		victims := pickVictims(name, nodes)
		if len(victims) == 0 {
			run.Phases = append(run.Phases, Phase{Name: name, Skipped: "no such replica in this cluster"})
			continue
		}
		if err := sleepCtx(ctx, opt.Settle); err != nil {
			return fail(err)
		}
		phase := Phase{Name: name, Killed: victims, AllDownErrors: map[string]int{}}
		for _, v := range victims {
			log.Info("drill: killing a replica", "phase", name, "node", v)
			at, err := t.Cluster.Kill(ctx, v)
			if err != nil {
				return fail(err)
			}
			if phase.At.IsZero() {
				phase.At = at
			}
			run.Events = append(run.Events, Event{Kind: EventKill, Node: v, At: at, Detail: "phase " + name})
		}
		// Wait for every victim; the first one back ends "all down".
		var firstBack, lastBack time.Time
		back := true
		for _, v := range victims {
			bctx, cancel := context.WithTimeout(ctx, opt.BackTimeout)
			at, err := t.Cluster.WaitStreaming(bctx, v)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return fail(ctx.Err())
				}
				back = false
				run.Problems = append(run.Problems, fmt.Sprintf("phase %s: %s did not stream again within %v: %v", name, v, opt.BackTimeout, err))
				continue
			}
			run.Events = append(run.Events, Event{Kind: EventRejoin, Node: v, At: at, Detail: "phase " + name})
			if firstBack.IsZero() || at.Before(firstBack) {
				firstBack = at
			}
			if at.After(lastBack) {
				lastBack = at
			}
		}
		if back {
			phase.BackMS = msPtr(lastBack.Sub(phase.At))
		}
		if err := sleepCtx(ctx, opt.Settle); err != nil {
			return fail(err)
		}
		windowEnd := time.Now()
		if firstBack.IsZero() {
			firstBack = windowEnd
		}
		attempts := ledger.Attempts()
		gap, _ := LongestGap(attempts, phase.At, windowEnd)
		phase.LongestStallMS = millis(gap)
		for _, a := range attempts {
			if a.Outcome == Acknowledged && !a.End.Before(phase.At) && a.End.Before(windowEnd) {
				phase.Acknowledged++
			}
			if a.Outcome != Acknowledged && !a.Start.Before(phase.At) && a.Start.Before(firstBack) {
				phase.AllDownErrors[errorClass(a)]++
			}
		}
		run.Phases = append(run.Phases, phase)
		log.Info("drill: phase done", "phase", name, "longest_stall", gap)
	}

	run.Stopped = pool.stop()
	run.Events = append(run.Events, Event{Kind: EventStop, At: run.Stopped, Detail: "writers stopped"})
	if _, err := WaitHealthy(ctx, t.Cluster, opt.HealthyTimeout); err != nil {
		run.Problems = append(run.Problems, err.Error())
	}
	finishRun(ctx, &run, t, pool, ledger.Prefix(), ledger.Attempts(), opt.ReplayTimeout, opt.Bucket)
	return run, ctx.Err()
}

// pickVictims returns the replicas a phase kills.
func pickVictims(phase string, nodes []Node) []string {
	var sync, other, all []string
	for _, n := range nodes {
		if n.Role != RoleReplica {
			continue
		}
		all = append(all, n.Name)
		if n.SyncState == "sync" || n.SyncState == "quorum" {
			sync = append(sync, n.Name)
		} else {
			other = append(other, n.Name)
		}
	}
	switch phase {
	case PhaseSync:
		return first(sync)
	case PhaseAsync:
		return first(other)
	default:
		return all
	}
}

func first(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return names[:1]
}

// errorClass is the key of an attempt in error counts.
func errorClass(a Attempt) string {
	if a.Error != "" {
		return a.Error
	}
	return a.Outcome.String()
}
