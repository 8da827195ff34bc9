package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
	h, err := stack.NewHome(*home)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if sub == "status" {
		return clustersStatus(ctx, e, h, *asJSON)
	}
	op := stack.Op{Kind: sub, Cluster: pos[0]}
	if len(pos) > 1 {
		op.Node = pos[1]
	}
	if force != nil {
		op.Force = *force
	}
	out, err := clusterOp(ctx, e, h, op)
	var unknown *stack.UnknownClusterError
	switch {
	case cluster.IsRefused(err):
		return refusalError{err}
	case errors.As(err, &unknown):
		return usageError{fmt.Errorf("cluster: %w in %s", err, h.Dir)}
	case err != nil:
		return err
	}
	fmt.Fprintln(e.stdout, out.Message)
	return nil
}

// clusterOp runs op through the running `up` when one answers on the
// home's control socket, else on the home directly, through the engine
// recorded there.
func clusterOp(ctx context.Context, e *env, h stack.Home, op stack.Op) (cluster.Outcome, error) {
	if cl := controlClient(ctx, h); cl != nil {
		return cl.Do(ctx, op)
	}
	eng, err := recordedEngine(h, e.log)
	if err != nil {
		return cluster.Outcome{}, err
	}
	defer closeEngine(eng)
	w := e.stderr
	if op.Kind == stack.OpStart {
		w = e.stdout
	}
	return stack.Offline(ctx, h, eng, op, w)
}

// controlClient returns the control client of the running `up` when one
// answers on the home's socket, else nil.
func controlClient(ctx context.Context, h stack.Home) *stack.Client {
	cl := stack.NewClient(h.Control())
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if cl.Ping(pctx) != nil {
		return nil
	}
	return cl
}

// clustersStatus prints the clusters' part of `socnet status`.
func clustersStatus(ctx context.Context, e *env, h stack.Home, asJSON bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var sts []cluster.Status
	if cl := controlClient(ctx, h); cl != nil {
		var err error
		if _, sts, err = cl.Status(ctx); err != nil {
			return err
		}
	} else {
		eng, err := recordedEngine(h, discardLogger())
		if err != nil {
			return err
		}
		defer closeEngine(eng)
		if sts, err = eng.Status(ctx); err != nil {
			return fmt.Errorf("cluster status: %w", err)
		}
	}
	if asJSON {
		if err := stack.WithoutPasswords(h, sts); err != nil {
			return err
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Clusters []cluster.Status `json:"clusters"`
		}{sts})
	}
	printClusters(e.stdout, sts)
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
