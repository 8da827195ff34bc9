package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/counter"
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
// running supervisor when there is one, else from the persisted clusters.
func stackStatus(ctx context.Context, home string) (stack.Status, error) {
	var doc stack.Status
	h, err := stack.NewHome(home)
	if err != nil {
		return doc, fmt.Errorf("status: %w", err)
	}
	home = h.Dir
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := cluster.NewClient(cluster.ControlSocket(home))
	if client.Ping(ctx) == nil {
		st, err := client.Status(ctx)
		if err != nil {
			return doc, fmt.Errorf("status: %w", err)
		}
		doc.Clusters = st
	} else {
		names, err := cluster.List(home)
		if err != nil {
			return doc, err
		}
		if len(names) == 0 {
			return doc, fmt.Errorf("status: no clusters in %s: start them with `socnet up --home %s`", home, home)
		}
		for _, name := range names {
			cl, err := cluster.Load(cluster.Dir(home, name), discardLogger(), cluster.Options{})
			if err != nil {
				return doc, err
			}
			st, err := cl.Status(ctx)
			if err != nil {
				return doc, fmt.Errorf("status %s: %w", name, err)
			}
			doc.Clusters = append(doc.Clusters, st)
		}
	}
	if err := withoutPasswords(h, doc.Clusters); err != nil {
		return doc, fmt.Errorf("status: %w", err)
	}
	recs, err := readServices(h.Services())
	if err != nil {
		return doc, err
	}
	for _, r := range recs {
		if processAlive(r.Pid) {
			doc.Services = append(doc.Services, r)
		}
	}
	if doc.Services == nil {
		doc.Services = []stack.Service{}
	}
	if r, err := readRouting(routingPath(home)); err == nil && time.Since(r.At) < 30*time.Second {
		doc.Reads = &r
	}
	if st, err := readStack(home); err == nil {
		if b, err := counter.OutboxBacklogAt(ctx, st.MainAdmin); err == nil {
			doc.Outbox = &b
		}
	}
	return doc, nil
}

// withoutPasswords replaces the nodes' administrator DSNs with ones that
// carry no password but name the home's 0600 passfile, which holds it: the
// status document is printed and passed around, the passfile stays in the
// home, readable only by the stack's user.
func withoutPasswords(h stack.Home, clusters []cluster.Status) error {
	var dsns []string
	for _, c := range clusters {
		for _, n := range c.Nodes {
			dsns = append(dsns, n.DSN)
		}
	}
	out, err := stack.PassfileDSNs(h.PassFile(), dsns)
	if err != nil {
		return err
	}
	i := 0
	for ci := range clusters {
		for ni := range clusters[ci].Nodes {
			clusters[ci].Nodes[ni].DSN = out[i]
			i++
		}
	}
	return nil
}

func printStatus(w io.Writer, doc stack.Status) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, c := range doc.Clusters {
		fmt.Fprintf(tw, "cluster %s\tprimary %s\tsynchronous_standby_names = %s\n", c.Name, c.Primary, c.SynchronousStandbyNames)
		if c.Waiting != "" {
			fmt.Fprintf(tw, "  waiting: %s\n", c.Waiting)
		}
		fmt.Fprintln(tw, "  NODE\tROLE\tSYNC\tPID\tPORT\tLSN\tLAG BYTES\tLAG\tTL\t")
		for _, n := range c.Nodes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\t%d\t%.3fs\t%d\t%s\n", n.Name, n.Role, dash(n.SyncState),
				n.Pid, n.Port, n.LSN, n.LagBytes, n.LagSeconds, n.Timeline, n.Error)
		}
		for _, f := range c.Failovers {
			b, _ := json.Marshal(f)
			fmt.Fprintf(tw, "  failover: %s\n", b)
		}
	}
	fmt.Fprintln(tw, "services\t")
	for _, s := range doc.Services {
		fmt.Fprintf(tw, "  %s\tpid %d\t%s\trestarts %d\n", s.Name, s.Pid, s.Addr, s.Restarts)
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

func routingPath(home string) string { return stack.Home{Dir: home}.Routing() }

func readRouting(path string) (stack.Routing, error) {
	var r stack.Routing
	data, err := stack.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("read %s: %w", path, err)
	}
	return r, nil
}

// reportRouting writes the router's snapshot to path every interval until
// ctx ends, so that `socnet status` can show where reads go.
func reportRouting(ctx context.Context, log *slog.Logger, db *dbroute.DB, path string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		data, err := json.Marshal(stack.Routing{At: time.Now(), Nodes: db.Snapshot()})
		if err == nil {
			err = writeFileAtomic(path, data, 0o644)
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
