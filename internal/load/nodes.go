package load

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"

	"socnet/internal/stack"
)

// Node is a PostgreSQL node whose load is sampled during a run.
type Node struct {
	Name      string
	Cluster   string
	Role      string // primary, replica or down, as last known; informative only
	SyncState string
	PID       int    // postmaster pid; 0 when unknown
	DSN       string // a connection string that may read pg_stat_* views
}

// Service is a process of the stack as `socnet status --json` lists it.
type Service struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	Addr string `json:"addr"`
}

// Stack is what ParseStatusJSON reads from `socnet status --json`.
type Stack struct {
	Nodes    []Node
	Services []Service
}

// ServiceAddr returns the address of the named service, or "".
func (s Stack) ServiceAddr(name string) string {
	for _, svc := range s.Services {
		if svc.Name == name {
			return svc.Addr
		}
	}
	return ""
}

// ParseStatusJSON reads the document of `socnet status --json`: every node
// of every cluster, with its cluster, role, postmaster pid and DSN, and the
// services. It fails on a document without clusters or with a node that has
// no name or no DSN.
func ParseStatusJSON(r io.Reader) (Stack, error) {
	var doc stack.Status
	dec := json.NewDecoder(r)
	if err := dec.Decode(&doc); err != nil {
		return Stack{}, fmt.Errorf("parse status: %w", err)
	}
	if doc.Clusters == nil {
		return Stack{}, fmt.Errorf("parse status: no \"clusters\" in the document")
	}
	var st Stack
	seen := map[string]bool{}
	for _, c := range doc.Clusters {
		for _, n := range c.Nodes {
			switch {
			case n.Name == "":
				return Stack{}, fmt.Errorf("parse status: a node of cluster %q has no name", c.Name)
			case n.DSN == "":
				return Stack{}, fmt.Errorf("parse status: node %s has no dsn", n.Name)
			case seen[n.Name]:
				return Stack{}, fmt.Errorf("parse status: node %s listed twice", n.Name)
			case n.Pid < 0:
				return Stack{}, fmt.Errorf("parse status: node %s has pid %d", n.Name, n.Pid)
			}
			seen[n.Name] = true
			st.Nodes = append(st.Nodes, Node{Name: n.Name, Cluster: c.Name, Role: n.Role,
				SyncState: n.SyncState, PID: n.Pid, DSN: n.DSN})
		}
	}
	for _, sv := range doc.Services {
		st.Services = append(st.Services, Service{Name: sv.Name, PID: sv.Pid, Addr: sv.Addr})
	}
	return st, nil
}

// NodesFromStatusJSON returns the nodes of the document of
// `socnet status --json` (see ParseStatusJSON).
func NodesFromStatusJSON(r io.Reader) ([]Node, error) {
	st, err := ParseStatusJSON(r)
	if err != nil {
		return nil, err
	}
	return st.Nodes, nil
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+=`)

// ParseNodes parses "name=DSN,name=DSN". A DSN may itself hold commas (a
// multi-host URL): a comma starts a new node only when a name and "="
// follow it. Nodes parsed this way have no cluster, role or pid.
func ParseNodes(s string) ([]Node, error) {
	var nodes []Node
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		if len(nodes) > 0 && !nodeNameRE.MatchString(strings.TrimSpace(part)) {
			nodes[len(nodes)-1].DSN += "," + part
			continue
		}
		name, dsn, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !nodeNameRE.MatchString(name+"=") || strings.TrimSpace(dsn) == "" {
			return nil, fmt.Errorf("nodes %q: want name=DSN[,name=DSN...]", s)
		}
		if seen[name] {
			return nil, fmt.Errorf("nodes %q: node %s given twice", s, name)
		}
		seen[name] = true
		nodes = append(nodes, Node{Name: name, DSN: strings.TrimSpace(dsn)})
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("nodes %q: no node", s)
	}
	return nodes, nil
}
