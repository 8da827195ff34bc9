package patroni_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/cluster"
	"socnet/internal/patroni"
	"socnet/internal/stack"
)

func TestNoSyncTags(t *testing.T) {
	async := []string{"main-3"}
	tests := []struct {
		name string
		view patroni.SyncView
		want map[string]bool
	}{
		{"no leader: change nothing", patroni.SyncView{Async: async}, map[string]bool{}},
		{"designed topology: async keeps nosync",
			patroni.SyncView{Leader: "main-1", Streaming: []string{"main-2", "main-3"}, Async: async}, map[string]bool{"main-3": true}},
		{"sync standby's host lost: release",
			patroni.SyncView{Leader: "main-1", Streaming: []string{"main-3"}, Async: async}, map[string]bool{"main-3": false}},
		{"leader's host lost, sync promoted: release",
			patroni.SyncView{Leader: "main-2", Streaming: []string{"main-3"}, Async: async}, map[string]bool{"main-3": false}},
		{"no standby streams at all: release",
			patroni.SyncView{Leader: "main-2", Async: async}, map[string]bool{"main-3": false}},
		{"lost host back and streaming: restore",
			patroni.SyncView{Leader: "main-2", Streaming: []string{"main-3", "main-1"}, Async: async}, map[string]bool{"main-3": true}},
		{"async node leads: its tag is left alone",
			patroni.SyncView{Leader: "main-3", Streaming: []string{"main-1"}, Async: async}, map[string]bool{}},
		{"no designated async node (counter)",
			patroni.SyncView{Leader: "counter-1", Streaming: nil}, map[string]bool{}},
		{"two async nodes, one other streams: both keep nosync",
			patroni.SyncView{Leader: "n1", Streaming: []string{"n2", "n3", "n4"}, Async: []string{"n3", "n4"}}, map[string]bool{"n3": true, "n4": true}},
		{"two async nodes only: both released",
			patroni.SyncView{Leader: "n1", Streaming: []string{"n3", "n4"}, Async: []string{"n3", "n4"}}, map[string]bool{"n3": false, "n4": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, patroni.NoSyncTags(tt.view)); d != "" {
				t.Errorf("NoSyncTags (-want +got):\n%s", d)
			}
		})
	}
}

func TestTimingByName(t *testing.T) {
	for name, want := range map[string]patroni.Timing{"": {}, "fast": patroni.FastTiming, "default": patroni.DefaultTiming} {
		got, err := patroni.TimingByName(name)
		if err != nil || got != want {
			t.Errorf("TimingByName(%q) = %+v, %v; want %+v", name, got, err, want)
		}
	}
	if _, err := patroni.TimingByName("quick"); err == nil {
		t.Error("TimingByName(quick): no error")
	}
}

func newHome(t *testing.T) stack.Home {
	t.Helper()
	h, err := stack.NewHome(filepath.Join(t.TempDir(), "home"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(h.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestNewEngineNamesNodesAsSocnetDoes(t *testing.T) {
	h := newHome(t)
	e1, err := patroni.NewEngine(patroni.EngineConfig{Home: h, BinDir: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"main", "counter"}, e1.Clusters()); d != "" {
		t.Errorf("clusters (-want +got):\n%s", d)
	}
	// The socnet engine's node names, so that services and drills work unchanged.
	for _, spec := range []cluster.Spec{cluster.MainSpec(), cluster.CounterSpec()} {
		var names []string
		for _, n := range e1.Nodes(spec.Name) {
			names = append(names, n.Name)
			if n.Host != cluster.Host || n.Port == 0 {
				t.Errorf("%s: address %s:%d", n.Name, n.Host, n.Port)
			}
		}
		if d := cmp.Diff(spec.NodeNames(), names); d != "" {
			t.Errorf("%s nodes (-want +got):\n%s", spec.Name, d)
		}
	}
	if a := e1.AdminDSN("main", "main-1", "socnet"); !strings.Contains(a, "/socnet?") {
		t.Errorf("admin DSN %q lacks the database", a)
	}
	// NewEngine writes nothing: a status of a home must not change it.
	if _, err := os.Stat(h.Path("patroni")); err == nil {
		t.Errorf("NewEngine created %s", h.Path("patroni"))
	}
}

func TestUpRefusesUnsafeTimingBeforeStartingAnything(t *testing.T) {
	h := newHome(t)
	e, err := patroni.NewEngine(patroni.EngineConfig{Home: h, BinDir: "/nonexistent",
		Timing: patroni.Timing{TTL: 5, LoopWait: 1, RetryTimeout: 4}})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Up(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unsafe patroni config") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Up: %v; want a one-line refusal of the unsafe config", err)
	}
	if _, err := os.Stat(filepath.Join(h.Path("patroni"), "etcd")); err == nil {
		t.Error("etcd's directory exists: something started before the refusal")
	}
}

func TestNewEngineRefusesSocnetEngineHome(t *testing.T) {
	h := newHome(t)
	dir := cluster.Dir(h.Dir, "main")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := patroni.NewEngine(patroni.EngineConfig{Home: h, BinDir: "/nonexistent"}); err == nil || !strings.Contains(err.Error(), "--engine socnet") {
		t.Fatalf("NewEngine on a socnet-engine home: %v; want a refusal naming --engine socnet", err)
	}
}

// TestHostNames checks the hosts the engine asks `up --hosts netns` for:
// one per node, named after it, and one per etcd member.
func TestHostNames(t *testing.T) {
	e, err := patroni.NewEngine(patroni.EngineConfig{Home: newHome(t), BinDir: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"main-1", "main-2", "main-3", "counter-1", "counter-2", "etcd-1", "etcd-2", "etcd-3"}
	if d := cmp.Diff(want, e.HostNames()); d != "" {
		t.Errorf("host names (-want +got):\n%s", d)
	}
}
