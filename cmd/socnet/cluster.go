package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/stack"
)

const clusterUsage = `usage: socnet cluster SUBCOMMAND [flags] ARGS

subcommands:
  status      [--json]              every node of every cluster, and the failover history
  switchover  CLUSTER NODE          planned change of primary to NODE, no commit lost
  promote     [--force] CLUSTER NODE
                                    promote NODE when the primary is dead; refused when
                                    NODE may lack acknowledged commits unless --force
  rejoin      CLUSTER NODE          rewind NODE (or rebuild it) and make it follow the primary
  stop        CLUSTER               stop every node of CLUSTER
  start       CLUSTER               start CLUSTER again

Every subcommand takes --home DIR (env SOCNET_HOME). While 'socnet up' runs on
DIR the request goes to its supervisor over DIR/control.sock; otherwise the
command works on DIR itself: it starts the nodes, acts, and stops them again
('start' then stays in the foreground and supervises until interrupted).
A refused operation prints why and exits with status 3.
`

// refusalError marks an operation the cluster refused (exit status 3).
type refusalError struct{ error }

func (r refusalError) Unwrap() error { return r.error }

// ExitCode is the process exit status of a refusal.
func (refusalError) ExitCode() int { return 3 }

// cmdCluster runs `socnet cluster SUBCOMMAND`.
func cmdCluster(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, clusterUsage)
		return usageError{errors.New("cluster: a subcommand is required")}
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, clusterUsage)
		return nil
	}
	sub := args[0]
	fs := newFlags("cluster "+sub, e)
	fs.Usage = func() { fmt.Fprint(e.stderr, clusterUsage) }
	home := fs.HomeDir()
	var asJSON, force *bool
	want := 2 // CLUSTER NODE
	switch sub {
	case "status":
		asJSON = fs.FlagSet.Bool("json", false, "print JSON (the clusters part of `socnet status --json`)")
		want = 0
	case "promote":
		force = fs.FlagSet.Bool("force", false, "promote even if acknowledged commits may be lost")
	case "switchover", "rejoin":
	case "stop", "start":
		want = 1
	default:
		fmt.Fprint(e.stderr, clusterUsage)
		return usageError{fmt.Errorf("cluster: unknown subcommand %q", sub)}
	}
	pos, err := parseInterspersed(fs.FlagSet, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	if err != nil {
		return usageError{err}
	}
	if len(pos) != want {
		return usageError{fmt.Errorf("cluster %s: want %d argument(s), got %d: %q", sub, want, len(pos), pos)}
	}
	h, err := filepath.Abs(*home)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	cc := clusterCmd{e: e, home: h}
	var out cluster.Outcome
	switch sub {
	case "status":
		return cc.status(ctx, *asJSON)
	case "switchover":
		out, err = cc.act(ctx, pos[0], func(ctx context.Context, c *cluster.Cluster) (cluster.Outcome, error) {
			return c.Switchover(ctx, pos[1])
		}, func(ctx context.Context, cl *cluster.Client) (cluster.Outcome, error) {
			return cl.Switchover(ctx, pos[0], pos[1])
		})
	case "promote":
		out, err = cc.act(ctx, pos[0], func(ctx context.Context, c *cluster.Cluster) (cluster.Outcome, error) {
			return c.Promote(ctx, pos[1], *force)
		}, func(ctx context.Context, cl *cluster.Client) (cluster.Outcome, error) {
			return cl.Promote(ctx, pos[0], pos[1], *force)
		})
	case "rejoin":
		out, err = cc.act(ctx, pos[0], func(ctx context.Context, c *cluster.Cluster) (cluster.Outcome, error) {
			return c.Rejoin(ctx, pos[1])
		}, func(ctx context.Context, cl *cluster.Client) (cluster.Outcome, error) {
			return cl.Rejoin(ctx, pos[0], pos[1])
		})
	case "stop":
		out, err = cc.stop(ctx, pos[0])
	case "start":
		out, err = cc.start(ctx, pos[0])
	}
	if err != nil {
		if cluster.IsRefused(err) {
			return refusalError{err}
		}
		return err
	}
	fmt.Fprintln(e.stdout, out.Message)
	return nil
}

// clusterCmd carries what every cluster subcommand needs.
type clusterCmd struct {
	e    *env
	home string
}

// client returns the supervisor's control client when a supervisor answers
// on the home's socket, else nil.
func (cc clusterCmd) client(ctx context.Context) *cluster.Client {
	cl := cluster.NewClient(cluster.ControlSocket(cc.home))
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if cl.Ping(pctx) != nil {
		return nil
	}
	return cl
}

// load opens a persisted cluster of the home.
func (cc clusterCmd) load(name string) (*cluster.Cluster, error) {
	names, err := cluster.List(cc.home)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if n == name {
			return cluster.Load(cluster.Dir(cc.home, name), cc.e.log, cluster.Options{})
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("cluster: no clusters in %s: create them with `socnet up --home %s`", cc.home, cc.home)
	}
	return nil, usageError{fmt.Errorf("cluster: no cluster %q in %s (there are: %s)", name, cc.home, strings.Join(names, ", "))}
}

// act runs an operation through the running supervisor, or on the home
// directly: start the cluster, act, stop it.
func (cc clusterCmd) act(ctx context.Context, name string,
	direct func(context.Context, *cluster.Cluster) (cluster.Outcome, error),
	remote func(context.Context, *cluster.Client) (cluster.Outcome, error),
) (cluster.Outcome, error) {
	if cl := cc.client(ctx); cl != nil {
		return remote(ctx, cl)
	}
	return cc.local(name, func(c *cluster.Cluster) (cluster.Outcome, error) {
		fmt.Fprintf(cc.e.stderr, "no supervisor runs on %s: starting cluster %s to act on it directly\n", cc.home, name)
		if err := c.Start(ctx); err != nil {
			return cluster.Outcome{}, err
		}
		out, err := direct(ctx, c)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if serr := c.Stop(sctx); serr != nil {
			err = errors.Join(err, serr)
		}
		return out, err
	})
}

// local runs fn on the persisted cluster while holding the home's lock, for
// operations done without a supervisor.
func (cc clusterCmd) local(name string, fn func(*cluster.Cluster) (cluster.Outcome, error)) (cluster.Outcome, error) {
	unlock, err := cc.lock()
	if err != nil {
		return cluster.Outcome{}, err
	}
	defer unlock()
	c, err := cc.load(name)
	if err != nil {
		return cluster.Outcome{}, err
	}
	defer c.Close()
	return fn(c)
}

// lock takes the home's lock against a concurrent `socnet up`.
func (cc clusterCmd) lock() (func(), error) {
	unlock, err := lockHome(cc.home)
	if err != nil {
		return nil, fmt.Errorf("cluster: %s is in use by another socnet process whose control socket does not answer: %w", cc.home, err)
	}
	return unlock, nil
}

func (cc clusterCmd) stop(ctx context.Context, name string) (cluster.Outcome, error) {
	if cl := cc.client(ctx); cl != nil {
		return cl.Stop(ctx, name)
	}
	return cc.local(name, func(c *cluster.Cluster) (cluster.Outcome, error) {
		if err := c.Stop(ctx); err != nil {
			return cluster.Outcome{}, err
		}
		return cluster.Outcome{Message: fmt.Sprintf("cluster %s stopped", name)}, nil
	})
}

// start asks the supervisor to start the cluster; without one it runs the
// cluster in the foreground, supervised and with a control socket, until ctx
// ends.
func (cc clusterCmd) start(ctx context.Context, name string) (cluster.Outcome, error) {
	if cl := cc.client(ctx); cl != nil {
		return cl.Start(ctx, name)
	}
	return cc.local(name, func(c *cluster.Cluster) (cluster.Outcome, error) {
		if err := c.Start(ctx); err != nil {
			return cluster.Outcome{}, err
		}
		fmt.Fprintf(cc.e.stdout, "cluster %s started, primary %s; supervising in the foreground until interrupted\n", name, c.Primary())
		sockErr := make(chan error, 1)
		go func() {
			sockErr <- cluster.ServeControl(ctx, cluster.ControlSocket(cc.home), map[string]*cluster.Cluster{name: c})
		}()
		supErr := c.Supervise(ctx)
		serr := <-sockErr
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := errors.Join(supErr, serr, c.Stop(sctx)); err != nil {
			return cluster.Outcome{}, err
		}
		return cluster.Outcome{Message: fmt.Sprintf("cluster %s stopped", name)}, nil
	})
}

func (cc clusterCmd) status(ctx context.Context, asJSON bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var sts []cluster.Status
	if cl := cc.client(ctx); cl != nil {
		var err error
		if sts, err = cl.Status(ctx); err != nil {
			return err
		}
	} else {
		names, err := cluster.List(cc.home)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return fmt.Errorf("cluster status: no clusters in %s: create them with `socnet up --home %s`", cc.home, cc.home)
		}
		for _, name := range names {
			c, err := cluster.Load(cluster.Dir(cc.home, name), discardLogger(), cluster.Options{})
			if err != nil {
				return err
			}
			st, err := c.Status(ctx)
			c.Close()
			if err != nil {
				return err
			}
			sts = append(sts, st)
		}
	}
	if asJSON {
		if err := withoutPasswords(stack.Home{Dir: cc.home}, sts); err != nil {
			return err
		}
		enc := json.NewEncoder(cc.e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Clusters []cluster.Status `json:"clusters"`
		}{sts})
	}
	printClusters(cc.e.stdout, sts)
	return nil
}

// printClusters writes a table per cluster and its failover history.
func printClusters(w io.Writer, sts []cluster.Status) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, c := range sts {
		state := ""
		if c.Stopped {
			state = " (stopped)"
		}
		fmt.Fprintf(tw, "cluster %s%s: primary %s, synchronous_standby_names = %s\n", c.Name, state, c.Primary, c.SynchronousStandbyNames)
		if c.Waiting != "" {
			fmt.Fprintf(tw, "  failover waiting: %s\n", c.Waiting)
		}
		fmt.Fprintln(tw, "  NODE\tROLE\tASSIGNED\tSYNC\tPID\tPORT\tLSN\tLAG BYTES\tLAG\tTL\t")
		for _, n := range c.Nodes {
			assigned := n.AssignedRole
			if n.NeedsRejoin {
				assigned += " (to rejoin)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%.3fs\t%d\t%s\n", n.Name, n.Role, assigned, dash(n.SyncState),
				n.Pid, n.Port, n.LSN, n.LagBytes, n.LagSeconds, n.Timeline, n.Error)
		}
		for _, f := range c.Failovers {
			fmt.Fprintf(tw, "  %s %s %s: %s -> %s at %s (tl %d); detection %d ms, promotion %d ms, total %d ms, rejoin %d ms\n",
				f.At.Format(time.DateTime), f.Kind, f.ID, f.OldPrimary, f.NewPrimary, f.LSN, f.Timeline,
				f.DetectionMS, f.PromotionMS, f.TotalMS, f.RejoinMS)
		}
	}
	tw.Flush()
}
