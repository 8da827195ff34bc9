package stack_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"socnet/internal/stack"
)

// TestHostsModeOfAHome checks that a home last run on hosts of its own is
// refused on the machine's own network, in one line that says what to do,
// and that the other way round, and a new home, are accepted.
func TestHostsModeOfAHome(t *testing.T) {
	h := stack.Home{Dir: t.TempDir()}
	if err := stack.CheckHostsMode(h, stack.HostsLocal); err != nil {
		t.Fatalf("new home: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(h.Clusters(), stack.MainCluster), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := stack.WriteInfo(h, stack.Info{Engine: stack.EngineSocnet, Hosts: stack.HostsNetns}); err != nil {
		t.Fatal(err)
	}
	err := stack.CheckHostsMode(h, stack.HostsLocal)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "--hosts netns") {
		t.Fatalf("netns home started local: %v, want a one-line refusal naming --hosts netns", err)
	}
	if err := stack.CheckHostsMode(h, stack.HostsNetns); err != nil {
		t.Fatalf("netns home started on hosts: %v", err)
	}
	if err := stack.WriteInfo(h, stack.Info{Engine: stack.EngineSocnet}); err != nil {
		t.Fatal(err)
	}
	if err := stack.CheckHostsMode(h, stack.HostsNetns); err != nil {
		t.Fatalf("local home started on hosts: %v", err)
	}

	// The Patroni engine's clusters live in its etcd: one member on the
	// machine's network cannot become three on hosts.
	p := stack.Home{Dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(p.Path("patroni"), "main"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := stack.WriteInfo(p, stack.Info{Engine: stack.EnginePatroni}); err != nil {
		t.Fatal(err)
	}
	err = stack.CheckHostsMode(p, stack.HostsNetns)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("patroni home of loopback started on hosts: %v, want a one-line refusal naming etcd", err)
	}
	if err := stack.CheckHostsMode(p, stack.HostsLocal); err != nil {
		t.Fatalf("patroni home of loopback started on loopback: %v", err)
	}
	if err := stack.WriteInfo(p, stack.Info{Engine: stack.EnginePatroni, Hosts: stack.HostsNetns}); err != nil {
		t.Fatal(err)
	}
	if err := stack.CheckHostsMode(p, stack.HostsLocal); err == nil {
		t.Fatal("patroni home of hosts started on loopback: accepted")
	}
	if err := stack.CheckHostsMode(p, stack.HostsNetns); err != nil {
		t.Fatalf("patroni home of hosts started on hosts: %v", err)
	}
}
