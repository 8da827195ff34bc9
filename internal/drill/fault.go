package drill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"socnet/internal/pgnode"
	"socnet/internal/stack"
)

// Fault is what the failover drill does to the primary.
type Fault string

// The faults of the failover drill (docs/DRILLS.md says what each means
// under each engine).
const (
	// FaultPostmaster SIGKILLs the primary's postmaster and its children:
	// PostgreSQL crashes, the machine and the engine's agent on it live on.
	// Under Patroni the agent restarts it in place; socnet's supervisor
	// fences it and fails over.
	FaultPostmaster Fault = "postmaster"
	// FaultHost SIGKILLs the postmaster, its children and the node's agent
	// at once, and keeps the node down until another node is the primary:
	// the machine is lost. Under the socnet engine, which runs no agent on
	// the node, it is the postmaster's kill, kept down the same way.
	FaultHost Fault = "host"
)

// FaultCut is the partition drill's: the primary's host cut off from the
// network, every process of it left running (socnet drill partition).
const FaultCut Fault = "cut"

// Faults lists the failover drill's faults, in the order reports show them. in the order reports show them.
var Faults = []Fault{FaultPostmaster, FaultHost}

// event names the fault's moment in a sentence: "kill" or "cut".
func (f Fault) event() string {
	if f == FaultCut {
		return "cut"
	}
	return "kill"
}

// ParseFault reads a fault's name.
func ParseFault(s string) (Fault, error) {
	for _, f := range Faults {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown fault %q: want %s or %s", s, FaultPostmaster, FaultHost)
}

// checkHostFault refuses a host fault that could not be one: under an
// engine that runs an agent beside each node (any but socnet's, whose
// supervisor runs in `socnet up`), the status must name the
// primary's agent, or the agent would live on and restart PostgreSQL in
// place, and the drill would test a postmaster crash under another name.
func checkHostFault(f Fault, engine string, nodes []Node, primary string) error {
	if f != FaultHost || engine == stack.EngineSocnet {
		return nil
	}
	for _, n := range nodes {
		if n.Name == primary && n.AgentPid <= 0 {
			return fmt.Errorf("--fault host under the %s engine needs the pid of %s's agent, and the status has none (agent_pid)", engine, primary)
		}
	}
	return nil
}

// RepairSeen is what the drill saw of the engine's repair after the kill of
// the primary: the input of JudgeRepair.
type RepairSeen struct {
	Fault Fault
	// Writable is set when a node accepted writes within the failover
	// timeout; InPlace when that node was the killed primary itself.
	Writable bool
	InPlace  bool
	// Rejoined is set when the old primary streamed as a replica within
	// the rejoin timeout (asked only after another node was promoted).
	Rejoined bool
	// FailoverWait and RejoinWait are the timeouts, for the problems' text.
	FailoverWait, RejoinWait time.Duration
	// Old and New name the killed primary and the node that took writes.
	Old, New string
}

// JudgeRepair says what is wrong with a repair, as a pure function of what
// the drill saw; nothing when it is right. The rules, in order:
//
//  1. No node accepted writes within the failover timeout: a problem.
//  2. The killed node accepted writes again before any other did:
//     a. after a host fault, a problem: a lost host does not come back by
//     itself, so the drill's hold on it failed and no failover was tested;
//     b. after a postmaster fault, right: the engine restarted it in place
//     (Patroni's agent does), and no rejoin is expected.
//  3. Another node was promoted and the old primary did not stream as its
//     replica within the rejoin timeout: a problem.
//
// Acknowledged writes lost are judged by the verdict on the writes, for
// every outcome here: a restart in place must lose none either.
func JudgeRepair(r RepairSeen) []string {
	switch {
	case !r.Writable:
		return []string{fmt.Sprintf("no node accepted writes within %v of the %s", r.FailoverWait, r.Fault.event())}
	case r.InPlace && r.Fault == FaultHost:
		return []string{fmt.Sprintf("the lost host's node %s came back as the primary by itself: no failover was tested", r.Old)}
	case r.InPlace:
		return nil
	case !r.Rejoined:
		return []string{fmt.Sprintf("the old primary %s did not stream as a replica of %s within %v of the promotion", r.Old, r.New, r.RejoinWait)}
	}
	return nil
}

// keepDownPoll is how often a lost host is looked at for a process of it
// that came back.
const keepDownPoll = 100 * time.Millisecond

// keepDown keeps the node of a lost host down until another node is the
// primary, by its role or by the role its engine gave it (Patroni's
// leader key moves before the new leader's promotion ends), or ctx ends
// (the drill ends it when another node accepts writes): whenever the status
// shows a process of the node running again before that, a postmaster or
// an agent restarted by whatever supervises it, it is killed as the host
// was. Each kill is returned as an event when the channel closes.
func keepDown(ctx context.Context, c Cluster, node string, log *slog.Logger) <-chan []Event {
	out := make(chan []Event, 1)
	go func() {
		var events []Event
		defer func() { out <- events; close(out) }()
		t := time.NewTicker(keepDownPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			nodes, err := c.Nodes(ctx)
			if err != nil {
				continue
			}
			if otherPrimary(nodes, node) {
				return
			}
			for _, n := range nodes {
				if n.Name != node || (n.Pid <= 0 && n.AgentPid <= 0) {
					continue
				}
				at, detail, err := c.KillHost(ctx, node)
				switch {
				case errors.Is(err, pgnode.ErrNothingRuns) || ctx.Err() != nil:
				case err != nil:
					log.Warn("drill: keeping the lost host down", "node", node, "err", err)
				default:
					log.Info("drill: a process of the lost host came back; killed", "node", node, "detail", detail)
					events = append(events, Event{Kind: EventKill, Node: node, At: at, Detail: "kept down: " + detail})
				}
			}
		}
	}()
	return out
}

// otherPrimary reports whether a node other than node is the primary, or
// is to be by its engine's assignment.
func otherPrimary(nodes []Node, node string) bool {
	for _, n := range nodes {
		if n.Name != node && (n.Role == RolePrimary || n.AssignedRole == RolePrimary) {
			return true
		}
	}
	return false
}
