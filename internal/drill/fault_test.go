package drill_test

import (
	"strings"
	"testing"
	"time"

	"socnet/internal/drill"
)

func TestParseFault(t *testing.T) {
	for _, f := range drill.Faults {
		if got, err := drill.ParseFault(string(f)); err != nil || got != f {
			t.Errorf("ParseFault(%q) = %q, %v", f, got, err)
		}
	}
	for _, bad := range []string{"", "Host", "network", "postmaster "} {
		if _, err := drill.ParseFault(bad); err == nil || !strings.Contains(err.Error(), "postmaster or host") {
			t.Errorf("ParseFault(%q): %v, want an error naming the faults", bad, err)
		}
	}
}

// TestJudgeRepair covers each rule of JudgeRepair under both faults.
func TestJudgeRepair(t *testing.T) {
	base := drill.RepairSeen{Old: "main-1", New: "main-2", FailoverWait: time.Minute, RejoinWait: 2 * time.Minute}
	with := func(f drill.Fault, writable, inPlace, rejoined bool) drill.RepairSeen {
		r := base
		r.Fault, r.Writable, r.InPlace, r.Rejoined = f, writable, inPlace, rejoined
		if inPlace {
			r.New = r.Old
		}
		return r
	}
	tests := []struct {
		name string
		in   drill.RepairSeen
		want string // a word of the one problem; "" for none
	}{
		{"rule 1: nothing writable after a postmaster fault", with(drill.FaultPostmaster, false, false, false), "no node accepted writes within 1m0s"},
		{"rule 1: nothing writable after a host fault", with(drill.FaultHost, false, false, false), "no node accepted writes"},
		{"rule 2a: a lost host back as the primary", with(drill.FaultHost, true, true, false), "came back as the primary by itself"},
		{"rule 2b: a postmaster restarted in place, no rejoin expected", with(drill.FaultPostmaster, true, true, false), ""},
		{"rule 3: promoted, the old primary never streamed", with(drill.FaultPostmaster, true, false, false), "did not stream as a replica of main-2 within 2m0s"},
		{"rule 3: after a host fault too", with(drill.FaultHost, true, false, false), "did not stream"},
		{"failover and rejoin after a postmaster fault", with(drill.FaultPostmaster, true, false, true), ""},
		{"failover and rejoin after a host fault", with(drill.FaultHost, true, false, true), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := drill.JudgeRepair(tt.in)
			switch {
			case tt.want == "" && len(got) != 0:
				t.Errorf("problems %q, want none", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("problems %q, want one saying %q", got, tt.want)
			}
		})
	}
}

// TestRestartInPlaceStillJudgesTheWrites: a postmaster restarted in place
// is no failure by itself, and a lost acknowledged write fails the run
// whatever the repair was. The run's problems are put together as
// RunFailover does: the repair's, then the verdict's.
func TestRestartInPlaceStillJudgesTheWrites(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	attempts := []drill.Attempt{
		{Seq: 1, Tag: "drill r #1", Outcome: drill.Acknowledged, ID: "1", Start: t0, End: t0.Add(time.Millisecond)},
		{Seq: 2, Tag: "drill r #2", Outcome: drill.Acknowledged, ID: "2", Start: t0, End: t0.Add(time.Millisecond)},
		{Seq: 3, Tag: "drill r #3", Outcome: drill.Unknown, Start: t0, End: t0.Add(time.Millisecond)},
	}
	all := []drill.Row{{Tag: "drill r #1", ID: "1"}, {Tag: "drill r #2", ID: "2"}}
	inPlace := drill.RepairSeen{Fault: drill.FaultPostmaster, Writable: true, InPlace: true, Old: "main-1", New: "main-1"}
	tests := []struct {
		name  string
		nodes []drill.NodeRows
		ok    bool
		lost  int64
	}{
		{"every acknowledged write on every node", []drill.NodeRows{
			{Node: "main-1", Role: drill.RolePrimary, Rows: all},
			{Node: "main-2", Role: drill.RoleReplica, Rows: all}}, true, 0},
		{"one acknowledged write lost on the restarted primary", []drill.NodeRows{
			{Node: "main-1", Role: drill.RolePrimary, Rows: all[:1]},
			{Node: "main-2", Role: drill.RoleReplica, Rows: all[:1]}}, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := drill.Judge(attempts, tt.nodes)
			run := drill.Run{Drill: drill.DrillFailover, Fault: string(drill.FaultPostmaster), RestartedInPlace: true,
				OldPrimary: "main-1", NewPrimary: "main-1", Verdict: &v}
			run.Problems = append(drill.JudgeRepair(inPlace), v.Problems...)
			r := drill.NewReport(drill.DrillFailover, "main", []drill.Run{run})
			if r.OK != tt.ok || r.TotalLost != tt.lost {
				t.Fatalf("report OK %v, lost %d; want %v, %d (problems %q)", r.OK, r.TotalLost, tt.ok, tt.lost, run.Problems)
			}
			err := drill.VerdictError(r)
			if tt.ok != (err == nil) {
				t.Errorf("VerdictError = %v", err)
			}
			if !tt.ok && !strings.Contains(err.Error(), "1 acknowledged writes lost") {
				t.Errorf("VerdictError = %v, want it to name the lost write", err)
			}
		})
	}
}

// TestCheckHostFault: a host fault under an engine with agents needs the
// primary's agent pid; the socnet engine runs none on the nodes.
func TestCheckHostFault(t *testing.T) {
	nodes := []drill.Node{{Name: "main-1", Role: drill.RolePrimary, AgentPid: 0}, {Name: "main-2", Role: drill.RoleReplica, AgentPid: 42}}
	withAgent := []drill.Node{{Name: "main-1", Role: drill.RolePrimary, AgentPid: 41}}
	tests := []struct {
		fault   drill.Fault
		engine  string
		nodes   []drill.Node
		refused bool
	}{
		{drill.FaultHost, "socnet", nodes, false},
		{drill.FaultHost, "patroni", nodes, true},
		{drill.FaultHost, "patroni", withAgent, false},
		{drill.FaultPostmaster, "patroni", nodes, false},
	}
	for _, tt := range tests {
		err := drill.CheckHostFault(tt.fault, tt.engine, tt.nodes, "main-1")
		if (err != nil) != tt.refused || (err != nil && !strings.Contains(err.Error(), "agent_pid")) {
			t.Errorf("%s under %s, agent %d: %v; refused want %v", tt.fault, tt.engine, tt.nodes[0].AgentPid, err, tt.refused)
		}
	}
}

// TestOtherPrimary: a lost host is kept down until another node is the
// primary by its role or by its engine's assignment, never because of the
// lost node's own stale assignment.
func TestOtherPrimary(t *testing.T) {
	tests := []struct {
		name  string
		nodes []drill.Node
		want  bool
	}{
		{"only the lost node is assigned primary", []drill.Node{
			{Name: "main-1", Role: drill.RoleDown, AssignedRole: drill.RolePrimary},
			{Name: "main-2", Role: drill.RoleReplica, AssignedRole: drill.RoleReplica}}, false},
		{"another node leads, not promoted yet", []drill.Node{
			{Name: "main-1", Role: drill.RoleDown, AssignedRole: drill.RoleReplica},
			{Name: "main-2", Role: drill.RoleReplica, AssignedRole: drill.RolePrimary}}, true},
		{"another node promoted", []drill.Node{
			{Name: "main-1", Role: drill.RoleDown, AssignedRole: drill.RolePrimary},
			{Name: "main-2", Role: drill.RolePrimary}}, true},
		{"the lost node back as primary", []drill.Node{
			{Name: "main-1", Role: drill.RolePrimary, AssignedRole: drill.RolePrimary},
			{Name: "main-2", Role: drill.RoleReplica}}, false},
	}
	for _, tt := range tests {
		if got := drill.OtherPrimary(tt.nodes, "main-1"); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
