package drill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultHealAfter is how long the partition drill keeps a host cut off.
const DefaultHealAfter = 5 * time.Second

// Partitioner cuts a host off the network and joins it again. Under
// `socnet up --hosts netns` it is the stack's netns.Net, whose hosts are
// named like the nodes and services ("main-1", "api-2").
type Partitioner interface {
	Cut(ctx context.Context, host string) error
	Heal(ctx context.Context, host string) error
}

// CutTogether is a Partitioner that cuts Also off with every host it cuts,
// at the same moment, and heals them together: a partition of several
// hosts, such as the primary's and the etcd leader's.
type CutTogether struct {
	P    Partitioner
	Also []string
}

// Cut cuts host, then every host of Also.
func (c CutTogether) Cut(ctx context.Context, host string) error {
	if err := c.P.Cut(ctx, host); err != nil {
		return err
	}
	for _, h := range c.Also {
		if err := c.P.Cut(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

// Heal heals host and every host of Also, all of them whatever fails.
func (c CutTogether) Heal(ctx context.Context, host string) error {
	errs := []error{c.P.Heal(ctx, host)}
	for _, h := range c.Also {
		errs = append(errs, c.P.Heal(ctx, h))
	}
	return errors.Join(errs...)
}

// PartitionOptions tune RunPartition. Zero fields take the defaults.
type PartitionOptions struct {
	// Host is the host to cut off: a node's name, or another host of the
	// stack (an API instance, an etcd member). "" means the primary's.
	Host string
	// Duration is how long the writers write at least.
	Duration time.Duration
	// CutAfter is when the host is cut off, from the first write.
	CutAfter time.Duration
	// HealAfter is how long the host stays cut off.
	HealAfter time.Duration
	// Writers is the number of concurrent writers.
	Writers int
	// FailoverTimeout bounds how long writing goes on after the cut (and
	// after the heal) while no write is acknowledged, and the wait for a
	// promotion when the primary's host is cut.
	FailoverTimeout time.Duration
	// RejoinTimeout bounds the wait for a cut node to stream again as a
	// replica.
	RejoinTimeout time.Duration
	// ReplayTimeout bounds the wait for each replica to replay up to the
	// primary before it is verified.
	ReplayTimeout time.Duration
	// HealthyTimeout bounds the wait, before the run, for a healthy cluster.
	HealthyTimeout time.Duration
	// Settle is how long the healthy cluster must keep its primary and
	// every replica's sync state before the cut (WaitSettled), so that a
	// run measures one fault, not the end of the previous run's repair.
	Settle time.Duration
	// Bucket is the width of the timeline's buckets.
	Bucket time.Duration
	// WatchInterval is how often every node is asked for its role.
	WatchInterval time.Duration
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

func (o PartitionOptions) withDefaults() PartitionOptions {
	setDefault(&o.Duration, DefaultDuration)
	setDefault(&o.CutAfter, DefaultKillAfter)
	setDefault(&o.HealAfter, DefaultHealAfter)
	setDefault(&o.FailoverTimeout, DefaultFailoverTimeout)
	setDefault(&o.RejoinTimeout, DefaultRejoinTimeout)
	setDefault(&o.ReplayTimeout, DefaultReplayTimeout)
	setDefault(&o.HealthyTimeout, DefaultHealthyTimeout)
	setDefault(&o.Settle, DefaultSettle)
	setDefault(&o.Bucket, DefaultBucket)
	setDefault(&o.WatchInterval, DefaultWatchInterval)
	if o.Writers <= 0 {
		o.Writers = DefaultWriters
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// RunPartition runs the partition drill once: it writes with opt.Writers
// writers while a watch asks every node for its role every
// opt.WatchInterval, cuts opt.Host off the network at opt.CutAfter, joins
// it again opt.HealAfter later, keeps writing (at least opt.Duration in
// all, and until a write started after the cut is acknowledged), waits for
// the cut node to stream again as a replica (after a promotion, when it
// was the primary) and for every node to stream, and judges:
//
//   - every acknowledged write on every node (Judge);
//   - never two primaries, and no write acknowledged by a node after
//     another was promoted (JudgePartition; writes whose writer names the
//     acknowledging server, such as SQLWriter's);
//   - the write unavailability: from the cut to the first acknowledged
//     write that started after it.
//
// The host is always healed before RunPartition returns. The error is for
// a drill that could not run; what the drill found is in Run.Problems.
func RunPartition(ctx context.Context, t Target, p Partitioner, opt PartitionOptions) (Run, error) {
	opt = opt.withDefaults()
	log := opt.Log
	nodes, err := WaitSettled(ctx, t.Cluster, opt.HealthyTimeout, opt.Settle)
	if err != nil {
		return Run{}, fmt.Errorf("partition drill: %w", err)
	}
	old := primaryOf(nodes)
	host := opt.Host
	if host == "" {
		host = old
	}
	isNode := false
	for _, n := range nodes {
		isNode = isNode || n.Name == host
	}
	servers, err := serverNames(nodes)
	if err != nil {
		return Run{}, fmt.Errorf("partition drill: %w", err)
	}

	run := newRun(DrillPartition, t, opt.Writers, opt.Bucket)
	run.CutHost = host
	if run.Engine, err = t.Cluster.Engine(ctx); err != nil {
		return Run{}, fmt.Errorf("partition drill: %w", err)
	}
	if host == old {
		run.OldPrimary = old
	}
	watch := StartWatch(ctx, nodes, opt.WatchInterval, 0)
	defer watch.Stop()
	ledger := NewLedger(run.RunID)
	log.Info("drill: writing", "run", run.RunID, "cluster", run.Cluster, "writers", opt.Writers, "cut", host, "cut_after", opt.CutAfter, "heal_after", opt.HealAfter)
	pool := startWriters(ctx, t, ledger, opt.Writers, &run)
	run.Started = pool.started

	if err := sleepCtx(ctx, time.Until(run.Started.Add(opt.CutAfter))); err != nil {
		pool.stop()
		return Run{}, fmt.Errorf("partition drill: %w", err)
	}
	log.Info("drill: cutting off", "host", host)
	if err := p.Cut(ctx, host); err != nil {
		_ = p.Heal(context.WithoutCancel(ctx), host) // a half-done cut
		pool.stop()
		return Run{}, fmt.Errorf("partition drill: %w", err)
	}
	// The cut is complete once Cut returns: a write that starts later
	// cannot reach the host.
	cutAt := time.Now()
	healed := false
	defer func() {
		if !healed {
			_ = p.Heal(context.WithoutCancel(ctx), host)
		}
	}()
	run.Events = append(run.Events, Event{Kind: EventCut, Node: host, At: cutAt, Detail: "its links set down"})
	var repaired <-chan repair
	if host == old {
		repaired = watchRepair(ctx, t.Cluster, old, cutAt, FailoverOptions{Fault: FaultCut,
			FailoverTimeout: opt.FailoverTimeout, RejoinTimeout: opt.RejoinTimeout}, log)
	}

	if err := sleepCtx(ctx, time.Until(cutAt.Add(opt.HealAfter))); err != nil {
		pool.stop()
		return Run{}, fmt.Errorf("partition drill: %w", err)
	}
	log.Info("drill: healing", "host", host)
	if err := p.Heal(ctx, host); err != nil {
		pool.stop()
		return Run{}, fmt.Errorf("partition drill: %w", err)
	}
	healed = true
	healAt := time.Now()
	run.Events = append(run.Events, Event{Kind: EventHeal, Node: host, At: healAt, Detail: "its links set up"})

	end := run.Started.Add(opt.Duration)
	giveUp := healAt.Add(opt.FailoverTimeout)
	for {
		now := time.Now()
		back := !ledger.LatestAckStart().Before(cutAt)
		if now.After(giveUp) || (back && !now.Before(end)) {
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			pool.stop()
			return Run{}, fmt.Errorf("partition drill: %w", err)
		}
	}
	run.Stopped = pool.stop()
	run.Events = append(run.Events, Event{Kind: EventStop, At: run.Stopped, Detail: "writers stopped"})
	attempts := ledger.Attempts()
	log.Info("drill: writers stopped", "attempts", len(attempts))

	switch {
	case repaired != nil:
		rep := <-repaired
		if ctx.Err() != nil {
			return Run{}, fmt.Errorf("partition drill: %w", ctx.Err())
		}
		rep.record(&run, old, cutAt, log)
	case isNode:
		rctx, cancel := context.WithTimeout(ctx, opt.RejoinTimeout)
		at, err := t.Cluster.WaitStreaming(rctx, host)
		cancel()
		if err != nil {
			run.Problems = append(run.Problems, fmt.Sprintf("%s did not stream again within %v of the heal: %v", host, opt.RejoinTimeout, err))
		} else {
			run.Events = append(run.Events, Event{Kind: EventRejoin, Node: host, At: at, Detail: "streams again"})
			run.RejoinMS = msPtr(at.Sub(cutAt))
		}
	}

	// Every node must stream again before the writes are counted on it: a
	// replica that followed the old primary past the new one's fork
	// point rejoins by a rewind after the heal.
	if _, err := WaitHealthy(ctx, t.Cluster, opt.RejoinTimeout); err != nil {
		run.Problems = append(run.Problems, fmt.Sprintf("after the heal: %v", err))
	}
	v := JudgePartition(watch.Stop(), nodeAcks(attempts, servers))
	run.Partition = &v
	run.Problems = append(run.Problems, v.Problems...)
	if at, ok := FirstAckAfter(attempts, cutAt); ok {
		run.UnavailableMS = msPtr(at.Sub(cutAt))
	} else {
		run.Problems = append(run.Problems, "no write was acknowledged after the cut")
	}
	finishRun(ctx, &run, t, pool, ledger.Prefix(), attempts, opt.ReplayTimeout, opt.Bucket)
	log.Info("drill: verified", "run", run.RunID, "ok", run.OK())
	return run, ctx.Err()
}

// serverNames maps each node's server, as "host:port" of its DSN, to the
// node's name.
func serverNames(nodes []Node) (map[string]string, error) {
	m := make(map[string]string, len(nodes))
	for _, n := range nodes {
		cfg, err := pgconn.ParseConfig(n.DSN)
		if err != nil {
			return nil, fmt.Errorf("node %s: dsn: %w", n.Name, err)
		}
		m[net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))] = n.Name
	}
	return m, nil
}

// nodeAcks returns the acknowledged attempts whose server is one of the
// nodes', with the node's name.
func nodeAcks(attempts []Attempt, servers map[string]string) []NodeAck {
	var acks []NodeAck
	for _, a := range attempts {
		if a.Outcome != Acknowledged || a.Server == "" {
			continue
		}
		// The server names itself "addr:port"; an IPv6 address has colons.
		i := len(a.Server) - 1
		for i >= 0 && a.Server[i] != ':' {
			i--
		}
		if i < 0 {
			continue
		}
		if node, ok := servers[net.JoinHostPort(a.Server[:i], a.Server[i+1:])]; ok {
			acks = append(acks, NodeAck{Node: node, Tag: a.Tag, Start: a.Start, End: a.End})
		}
	}
	return acks
}
