package drill_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/drill"
)

// designStatus is the example of `socnet status --json` in DESIGN.md, with
// a failover history.
const designStatus = `{"engine": "patroni", "clusters": [
   {"name": "main", "nodes": [
      {"name": "main-1", "role": "primary", "sync_state": "", "pid": 1234, "host": "127.0.0.1",
       "port": 25432, "dsn": "postgres://postgres:pw@127.0.0.1:25432/postgres?sslmode=disable", "lsn": "0/3000148", "lag_bytes": 0},
      {"name": "main-2", "role": "replica", "sync_state": "sync", "pid": 1235, "agent_pid": 1240, "dsn": "host=127.0.0.1 port=25433 user=postgres"},
      {"name": "main-3", "role": "replica", "sync_state": "async", "pid": 1236}],
    "failovers": [{"id": "f1", "kind": "failover", "at": "2025-01-01T00:00:01Z", "old_primary": "main-2",
       "new_primary": "main-1", "promotion_ms": 250, "lsn": "0/3000000"}]},
   {"name": "counter", "nodes": []}],
 "services": [
   {"name": "api", "pid": 2345, "addr": "127.0.0.1:8080"},
   {"name": "counter", "pid": 2346, "addr": "127.0.0.1:8091"}]}`

func TestParseStatus(t *testing.T) {
	st, err := drill.ParseStatus([]byte(designStatus))
	if err != nil {
		t.Fatal(err)
	}
	main, ok := st.Cluster("main")
	if !ok {
		t.Fatal("no main cluster")
	}
	p, ok := main.PrimaryNode()
	if !ok || p.Name != "main-1" || p.Pid != 1234 {
		t.Errorf("primary %+v", p)
	}
	if api, ok := st.Service("api"); !ok || api.Addr != "127.0.0.1:8080" {
		t.Errorf("api %+v", api)
	}
	want := time.Date(2025, 1, 1, 0, 0, 1, 250e6, time.UTC)
	if got := main.Failovers[0].Promoted(); !got.Equal(want) {
		t.Errorf("promoted at %v, want %v", got, want)
	}
	if _, err := drill.ParseStatus([]byte(`{"clusters": [`)); err == nil {
		t.Error("a truncated status parsed")
	}
}

func TestStackClusterNodesUseTheDatabase(t *testing.T) {
	st, err := drill.ParseStatus([]byte(designStatus))
	if err != nil {
		t.Fatal(err)
	}
	c := &drill.StackCluster{Cluster: "main", Database: "socnet",
		Status: func(context.Context) (drill.Status, error) { return st, nil }}
	nodes, err := c.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range nodes {
		got[n.Name] = n.DSN
	}
	want := map[string]string{
		"main-1": "postgres://postgres:pw@127.0.0.1:25432/socnet?sslmode=disable",
		"main-2": "host=127.0.0.1 port=25433 user=postgres dbname='socnet'",
		"main-3": "",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DSNs (-want +got):\n%s", diff)
	}
	if _, err := c.Kill(context.Background(), "main-9"); err == nil || !strings.Contains(err.Error(), "no such node") {
		t.Errorf("killing an unknown node: %v", err)
	}
	if _, _, err := c.KillHost(context.Background(), "main-9"); err == nil || !strings.Contains(err.Error(), "no such node") {
		t.Errorf("killing the host of an unknown node: %v", err)
	}
	agents := map[string]int{}
	for _, n := range nodes {
		agents[n.Name] = n.AgentPid
	}
	if diff := cmp.Diff(map[string]int{"main-1": 0, "main-2": 1240, "main-3": 0}, agents); diff != "" {
		t.Errorf("agent pids (-want +got):\n%s", diff)
	}
	if e, err := c.Engine(context.Background()); err != nil || e != "patroni" {
		t.Errorf("engine %q, %v", e, err)
	}
	old := &drill.StackCluster{Cluster: "main", Status: func(context.Context) (drill.Status, error) { return drill.Status{}, nil }}
	if e, _ := old.Engine(context.Background()); e != "socnet" {
		t.Errorf("a status without an engine: %q, want socnet", e)
	}
}

// scripted returns the statuses in order, repeating the last.
type scripted struct {
	mu    sync.Mutex
	steps []drill.Status
}

func (s *scripted) status(context.Context) (drill.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.steps[0]
	if len(s.steps) > 1 {
		s.steps = s.steps[1:]
	}
	return st, nil
}

func clusterOf(failovers []drill.FailoverStatus, nodes ...drill.NodeStatus) drill.Status {
	return drill.Status{Clusters: []drill.ClusterStatus{{Name: "main", Nodes: nodes, Failovers: failovers}}}
}

func TestStackClusterWaits(t *testing.T) {
	killed := time.Now()
	rec := drill.FailoverStatus{ID: "f9", At: killed.Add(time.Second), OldPrimary: "main-1", NewPrimary: "main-2", PromotionMS: 300}
	old := drill.FailoverStatus{ID: "f8", At: killed.Add(-time.Hour), OldPrimary: "main-1", NewPrimary: "main-2"}
	p := func(name string) drill.NodeStatus { return drill.NodeStatus{Name: name, Role: drill.RolePrimary} }
	r := func(name, sync string) drill.NodeStatus {
		return drill.NodeStatus{Name: name, Role: drill.RoleReplica, SyncState: sync}
	}
	down := func(name string) drill.NodeStatus { return drill.NodeStatus{Name: name, Role: drill.RoleDown} }
	s := &scripted{steps: []drill.Status{
		clusterOf([]drill.FailoverStatus{old}, p("main-1"), r("main-2", "sync")),
		clusterOf([]drill.FailoverStatus{old}, down("main-1"), r("main-2", "")),
		clusterOf([]drill.FailoverStatus{old}, down("main-1"), p("main-2")),
		clusterOf([]drill.FailoverStatus{old, rec}, down("main-1"), p("main-2")),
		clusterOf([]drill.FailoverStatus{old, rec}, r("main-1", ""), p("main-2")),
		clusterOf([]drill.FailoverStatus{old, rec}, r("main-1", "sync"), p("main-2")),
	}}
	c := &drill.StackCluster{Cluster: "main", Status: s.status, Poll: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.FailoverRecord(ctx, "main-1", "main-2", killed)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "f9" || !got.Promoted().Equal(rec.Promoted()) {
		t.Errorf("FailoverRecord = %+v, want f9 promoted at %v", got, rec.Promoted())
	}
	if _, err := c.WaitStreaming(ctx, "main-1"); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.status(ctx); st.Clusters[0].Nodes[0].SyncState != "sync" {
		t.Error("WaitStreaming returned before the node streamed")
	}

	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := c.WaitStreaming(short, "main-3"); err == nil {
		t.Error("WaitStreaming for a node that never streams returned no error")
	}
}

// TestWaitWritableSaysWhy: when no node answers as a primary in time, the
// error names each node's last failure.
func TestWaitWritableSaysWhy(t *testing.T) {
	st := clusterOf(nil,
		drill.NodeStatus{Name: "main-1", Role: drill.RoleDown, DSN: "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=1"},
		drill.NodeStatus{Name: "main-2", Role: drill.RoleDown})
	c := &drill.StackCluster{Cluster: "main", Status: func(context.Context) (drill.Status, error) { return st, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, _, err := c.WaitWritable(ctx, "main-1", time.Now())
	if err == nil || !strings.Contains(err.Error(), "main-1: ") || strings.Contains(err.Error(), "main-2") {
		t.Errorf("WaitWritable with no reachable node: %v, want the last failure of main-1 (main-2 has no DSN)", err)
	}
}

// TestWaitSettled: a healthy cluster whose synchronous role moves is
// waited for until the new shape has held for the settle time.
func TestWaitSettled(t *testing.T) {
	p := drill.NodeStatus{Name: "main-1", Role: drill.RolePrimary}
	r := func(name, sync string) drill.NodeStatus {
		return drill.NodeStatus{Name: name, Role: drill.RoleReplica, SyncState: sync}
	}
	before := clusterOf(nil, p, r("main-2", "sync"), r("main-3", "async"))
	after := clusterOf(nil, p, r("main-2", "async"), r("main-3", "sync"))
	s := &scripted{steps: []drill.Status{before, before, after}}
	c := &drill.StackCluster{Cluster: "main", Status: s.status}
	ctx := context.Background()
	start := time.Now()
	nodes, err := drill.WaitSettled(ctx, c, 30*time.Second, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if nodes[2].SyncState != "sync" || nodes[1].SyncState != "async" {
		t.Errorf("settled on %+v, want main-3 synchronous (the shape after the move)", nodes)
	}
	// Two polls before the move, then the settle time on the new shape.
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("returned after %v, before the new shape held for the settle time", d)
	}

	flapping := &scripted{}
	for range 100 {
		flapping.steps = append(flapping.steps, before, after)
	}
	c = &drill.StackCluster{Cluster: "main", Status: flapping.status}
	if _, err := drill.WaitSettled(ctx, c, time.Second, 500*time.Millisecond); err == nil || !strings.Contains(err.Error(), "settling") {
		t.Errorf("a cluster whose sync role keeps moving: %v, want an error saying it was settling", err)
	}
}
