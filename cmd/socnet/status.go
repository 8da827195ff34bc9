package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/counter"
	"socnet/internal/dbroute"
)

// statusDoc is the document of `socnet status --json`, a public interface:
// scripts and the drills read it.
type statusDoc struct {
	Clusters []cluster.Status `json:"clusters"`
	Services []serviceRecord  `json:"services"`
	// Reads is where the API sends queries, as its router sees the nodes.
	Reads *routingDoc `json:"reads,omitempty"`
	// Outbox estimates the counter events not yet delivered to counterd.
	Outbox *counter.Backlog `json:"outbox,omitempty"`
}

// routingDoc is what the API's router last reported (see --routing-file).
type routingDoc struct {
	At    time.Time            `json:"at"`
	Nodes []dbroute.NodeStatus `json:"nodes"`
}

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
		return enc.Encode(doc)
	}
	printStatus(e.stdout, doc)
	return nil
}

// stackStatus gathers the state of everything `up` runs in home: from the
// running supervisor when there is one, else from the persisted clusters.
func stackStatus(ctx context.Context, home string) (statusDoc, error) {
	var doc statusDoc
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
	recs, err := readServices(servicesPath(home))
	if err != nil {
		return doc, err
	}
	for _, r := range recs {
		if processAlive(r.Pid) {
			doc.Services = append(doc.Services, r)
		}
	}
	if doc.Services == nil {
		doc.Services = []serviceRecord{}
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

func printStatus(w io.Writer, doc statusDoc) {
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

func routingPath(home string) string { return filepath.Join(home, "routing.json") }

func readRouting(path string) (routingDoc, error) {
	var r routingDoc
	data, err := os.ReadFile(path)
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
		data, err := json.Marshal(routingDoc{At: time.Now(), Nodes: db.Snapshot()})
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
