package stack

import (
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
}

// Routing is what the API's router last reported (routing.json).
type Routing struct {
	At    time.Time            `json:"at"`
	Nodes []dbroute.NodeStatus `json:"nodes"`
}
