package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"socnet/internal/cluster"
)

// Offline runs op on the home's clusters when no `up` runs there, holding
// the home's lock against one starting meanwhile. Each operation starts
// what it needs, acts and stops it again, except OpStart, which supervises
// the started cluster (and serves the control socket) in the foreground
// until ctx ends. notice receives what the operator should know.
//
// An engine that is an Operator starts only the named cluster; another one
// is brought up whole for a switchover, and refuses the other operations.
func Offline(ctx context.Context, h Home, eng Engine, op Op, notice io.Writer) (cluster.Outcome, error) {
	unlock, err := Lock(h)
	if err != nil {
		return cluster.Outcome{}, fmt.Errorf("%s is in use by another socnet process whose control socket does not answer: %w", h.Dir, err)
	}
	defer unlock()
	if info, err := ReadInfo(h); err == nil && info.Hosts == HostsNetns {
		// Its nodes admit logins from the hosts' network only, and
		// Patroni's etcd members live on hosts: neither works on loopback.
		return cluster.Outcome{}, fmt.Errorf("%s runs on hosts of its own and none is up: start it with `socnet up --hosts %s --home %s`, then act on it",
			h.Dir, HostsNetns, h.Dir)
	}
	names := eng.Clusters()
	if len(names) == 0 {
		return cluster.Outcome{}, fmt.Errorf("no clusters in %s: create them with `socnet up --home %s`", h.Dir, h.Dir)
	}
	if !slices.Contains(names, op.Cluster) {
		return cluster.Outcome{}, &UnknownClusterError{Cluster: op.Cluster, Known: names}
	}
	o, isOperator := eng.(Operator)
	stopCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	}
	switch {
	case op.Kind == OpStop && isOperator:
		return o.StopCluster(ctx, op.Cluster)
	case op.Kind == OpStart && isOperator:
		if _, err := o.StartCluster(ctx, op.Cluster); err != nil {
			return cluster.Outcome{}, err
		}
		primary, _ := eng.Primary(ctx, op.Cluster)
		fmt.Fprintf(notice, "cluster %s started, primary %s; supervising in the foreground until interrupted\n", op.Cluster, primary)
		supErr := eng.Supervise(ctx)
		sctx, cancel := stopCtx()
		defer cancel()
		_, stopErr := o.StopCluster(sctx, op.Cluster)
		if err := errors.Join(supErr, stopErr); err != nil {
			return cluster.Outcome{}, err
		}
		return cluster.Outcome{Message: fmt.Sprintf("cluster %s stopped", op.Cluster)}, nil
	case isOperator:
		fmt.Fprintf(notice, "no supervisor runs on %s: starting cluster %s to act on it directly\n", h.Dir, op.Cluster)
		if _, err := o.StartCluster(ctx, op.Cluster); err != nil {
			return cluster.Outcome{}, err
		}
		out, err := Do(ctx, eng, op)
		sctx, cancel := stopCtx()
		defer cancel()
		if _, serr := o.StopCluster(sctx, op.Cluster); serr != nil {
			err = errors.Join(err, serr)
		}
		return out, err
	case op.Kind == OpSwitchover:
		fmt.Fprintf(notice, "no supervisor runs on %s: starting the %s engine's clusters to act on them directly\n", h.Dir, eng.Name())
		if err := eng.Up(ctx); err != nil {
			sctx, cancel := stopCtx()
			defer cancel()
			return cluster.Outcome{}, errors.Join(err, eng.Stop(sctx))
		}
		out, err := Do(ctx, eng, op)
		sctx, cancel := stopCtx()
		defer cancel()
		if serr := eng.Stop(sctx); serr != nil {
			err = errors.Join(err, serr)
		}
		return out, err
	}
	return Do(ctx, eng, op) // refused: the engine does not support it
}
