package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/counter"
	"socnet/internal/dbroute"
)

// Status is the document `socnet status --json` prints, a public interface
// that scripts and the drills read (DESIGN.md): its writer and its readers
// share this type. Fields are only ever added.
type Status struct {
	// Engine is what runs the clusters: EngineSocnet or EnginePatroni.
	Engine   string           `json:"engine"`
	Clusters []cluster.Status `json:"clusters"`
	Services []Service        `json:"services"`
	// Reads is where the API sends queries, as its router sees the nodes.
	Reads *Routing `json:"reads,omitempty"`
	// Outbox estimates the counter events not yet delivered to counterd.
	Outbox *counter.Backlog `json:"outbox,omitempty"`
}

// Service is one service process of the stack, as services.json records it.
type Service struct {
	Name     string `json:"name"`
	Pid      int    `json:"pid"`
	Addr     string `json:"addr,omitempty"`
	Restarts int    `json:"restarts"`
	// Host is the address of the host it runs on and Netns that host's
	// network namespace, with `up --hosts netns`; both empty on the
	// machine's own network.
	Host  string `json:"host,omitempty"`
	Netns string `json:"netns,omitempty"`
}

// Routing is what the API's router last reported (routing.json).
type Routing struct {
	At    time.Time            `json:"at"`
	Nodes []dbroute.NodeStatus `json:"nodes"`
}

// ReadStatus gathers the status of everything `up` runs in the home: the
// clusters from the running `up` over the control socket when one answers,
// else from the engine that open returns (the one recorded in the home),
// the services from services.json, the reads from routing.json, the
// outbox's backlog from the main database. DSNs in it carry no password:
// they name the home's 0600 passfile, which holds it.
func ReadStatus(ctx context.Context, h Home, open func() (Engine, error)) (Status, error) {
	var doc Status
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := NewClient(h.Control())
	if client.Ping(ctx) == nil {
		engine, sts, err := client.Status(ctx)
		if err != nil {
			return doc, fmt.Errorf("status: %w", err)
		}
		doc.Engine, doc.Clusters = engine, sts
	} else {
		eng, err := open()
		if err != nil {
			return doc, fmt.Errorf("status: %w", err)
		}
		placeAsPlanned(h, eng)
		sts, err := eng.Status(ctx)
		if err != nil {
			return doc, fmt.Errorf("status: %w", err)
		}
		doc.Engine, doc.Clusters = eng.Name(), sts
	}
	if err := WithoutPasswords(h, doc.Clusters); err != nil {
		return doc, fmt.Errorf("status: %w", err)
	}
	recs, err := ReadServices(h.Services())
	if err != nil {
		return doc, fmt.Errorf("status: %w", err)
	}
	doc.Services = []Service{}
	for _, r := range recs {
		if ProcessAlive(r.Pid) {
			doc.Services = append(doc.Services, r)
		}
	}
	if r, err := ReadRouting(h); err == nil && time.Since(r.At) < 30*time.Second {
		doc.Reads = &r
	}
	if info, err := ReadInfo(h); err == nil {
		if b, err := counter.OutboxBacklogAt(ctx, info.MainAdmin); err == nil {
			doc.Outbox = &b
		}
	}
	return doc, nil
}

// WithoutPasswords replaces the nodes' administrator DSNs with ones that
// carry no password but name the home's 0600 passfile, which holds it: the
// status document is printed and passed around, the passfile stays in the
// home, readable only by the stack's user.
func WithoutPasswords(h Home, clusters []cluster.Status) error {
	var dsns []string
	for _, c := range clusters {
		for _, n := range c.Nodes {
			dsns = append(dsns, n.DSN)
		}
	}
	out, err := PassfileDSNs(h.PassFile(), dsns)
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

// ReadRouting reads the API router's last report (routing.json).
func ReadRouting(h Home) (Routing, error) {
	var r Routing
	data, err := ReadFile(h.Routing())
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("read %s: %w", h.Routing(), err)
	}
	return r, nil
}

// Cluster returns the cluster named name.
func (s Status) Cluster(name string) (cluster.Status, bool) {
	for _, c := range s.Clusters {
		if c.Name == name {
			return c, true
		}
	}
	return cluster.Status{}, false
}

// Service returns the service named name.
func (s Status) Service(name string) (Service, bool) {
	for _, sv := range s.Services {
		if sv.Name == name {
			return sv, true
		}
	}
	return Service{}, false
}
