package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"socnet/internal/dbroute"
	"socnet/internal/stack"
)

func cmdStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlags("status", e)
	home := fs.HomeDir()
	asJSON := fs.Bool("json", false, "print the JSON document (stable; for scripts)")
	if err := fs.parse(args); err != nil {
		return err
	}
	doc, err := stackStatus(ctx, *home)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // DSNs stay copyable: &, not \u0026
		return enc.Encode(doc)
	}
	printStatus(e.stdout, doc)
	return nil
}

// stackStatus gathers the state of everything `up` runs in home: from the
// running `up` when there is one, else through the engine recorded there.
func stackStatus(ctx context.Context, home string) (stack.Status, error) {
	h, err := stack.NewHome(home)
	if err != nil {
		return stack.Status{}, fmt.Errorf("status: %w", err)
	}
	var opened stack.Engine
	defer func() {
		if opened != nil {
			closeEngine(opened)
		}
	}()
	return stack.ReadStatus(ctx, h, func() (stack.Engine, error) {
		eng, err := recordedEngine(h, discardLogger())
		opened = eng
		return eng, err
	})
}

func printStatus(w io.Writer, doc stack.Status) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if doc.Engine != "" {
		fmt.Fprintf(tw, "engine %s\t\n", doc.Engine)
	}
	for _, c := range doc.Clusters {
		fmt.Fprintf(tw, "cluster %s\tprimary %s\tsynchronous_standby_names = %s\n", c.Name, c.Primary, c.SynchronousStandbyNames)
		if c.Waiting != "" {
			fmt.Fprintf(tw, "  waiting: %s\n", c.Waiting)
		}
		// On hosts of their own (`up --hosts netns`) the nodes' addresses
		// differ: a HOST column names them.
		onHosts := false
		for _, n := range c.Nodes {
			onHosts = onHosts || n.Netns != ""
		}
		if onHosts {
			fmt.Fprintln(tw, "  NODE\tROLE\tSYNC\tPID\tHOST\tPORT\tLSN\tLAG BYTES\tLAG\tTL\t")
		} else {
			fmt.Fprintln(tw, "  NODE\tROLE\tSYNC\tPID\tPORT\tLSN\tLAG BYTES\tLAG\tTL\t")
		}
		for _, n := range c.Nodes {
			host := ""
			if onHosts {
				host = n.Host + "\t"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s%d\t%s\t%d\t%.3fs\t%d\t%s\n", n.Name, n.Role, dash(n.SyncState),
				n.Pid, host, n.Port, n.LSN, n.LagBytes, n.LagSeconds, n.Timeline, n.Error)
		}
		for _, f := range c.Failovers {
			b, _ := json.Marshal(f)
			fmt.Fprintf(tw, "  failover: %s\n", b)
		}
	}
	fmt.Fprintln(tw, "services\t")
	for _, s := range doc.Services {
		where := ""
		if s.Netns != "" {
			where = "\tnetns " + s.Netns
		}
		fmt.Fprintf(tw, "  %s\tpid %d\t%s\trestarts %d%s\n", s.Name, s.Pid, s.Addr, s.Restarts, where)
	}
	if doc.Reads != nil {
		fmt.Fprintf(tw, "API routing (as of %s)\t\n", doc.Reads.At.Format(time.TimeOnly))
		for _, n := range doc.Reads.Nodes {
			where := "no reads"
			switch {
			case n.Elected:
				where = "writes"
			case n.Healthy:
				where = "reads"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\treads %d\twrites %d\tlag %s\n", n.Name, n.Role, where, n.Reads, n.Writes, n.Lag)
		}
	}
	if doc.Outbox != nil {
		fmt.Fprintf(tw, "outbox\t%d events to deliver (estimate)\toldest %.1fs\n", doc.Outbox.Events, doc.Outbox.OldestSeconds)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// reportRouting writes the router's snapshot to path every interval until
// ctx ends, so that `socnet status` can show where reads go.
func reportRouting(ctx context.Context, log *slog.Logger, db *dbroute.DB, path string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		data, err := json.Marshal(stack.Routing{At: time.Now(), Nodes: db.Snapshot()})
		if err == nil {
			err = stack.WriteFile(path, data, 0o644)
		}
		if err != nil {
			// A status file that cannot be written must not stop the API.
			log.Debug("write routing snapshot", "path", path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// discardLogger is for commands that open clusters only to read them.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
