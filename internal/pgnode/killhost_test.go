package pgnode_test

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// childrenOf lists the live children of pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if alive, ppid := liveProcess(p); alive && ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

// TestKillHost kills a real server and a stand-in for its agent (a shell
// with a child of its own) at once: every one of their processes is gone.
func TestKillHost(t *testing.T) {
	node := pgtest.MustNode(t, "host", nil)
	pm := node.Pid()
	backends := childrenOf(t, pm)
	if len(backends) == 0 {
		t.Fatalf("postmaster %d has no children", pm)
	}
	agent := exec.Command("sh", "-c", "sleep 600 & wait")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	var agentKids []int
	for deadline := time.Now().Add(10 * time.Second); len(agentKids) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		agentKids = childrenOf(t, agent.Process.Pid)
	}
	if len(agentKids) == 0 {
		t.Fatal("the agent's child did not start")
	}

	// Refusals first: nothing may be killed by them.
	if _, err := pgnode.KillHost(agent.Process.Pid, 0, time.Second); err == nil || !strings.Contains(err.Error(), "does not run postgres") {
		t.Errorf("a postmaster pid that is not postgres: %v", err)
	}
	if _, err := pgnode.KillHost(0, os.Getpid(), time.Second); err == nil {
		t.Error("KillHost accepted this process as the agent")
	}
	if _, err := pgnode.KillHost(0, 0, time.Second); !errors.Is(err, pgnode.ErrNothingRuns) {
		t.Errorf("nothing to kill: %v, want ErrNothingRuns", err)
	}
	if alive, _ := liveProcess(agent.Process.Pid); !alive || !node.Running() {
		t.Fatal("a refused call killed something")
	}

	before := time.Now()
	at, err := pgnode.KillHost(pm, agent.Process.Pid, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if at.Before(before) || at.After(time.Now()) {
		t.Errorf("signals sent at %v, outside the call", at)
	}
	for _, p := range append(append([]int{pm, agent.Process.Pid}, backends...), agentKids...) {
		if alive, _ := liveProcess(p); alive {
			t.Errorf("pid %d still runs after KillHost", p)
		}
	}
	// The same pids again: nothing of the host runs any more.
	if _, err := pgnode.KillHost(pm, agent.Process.Pid, time.Second); !errors.Is(err, pgnode.ErrNothingRuns) {
		t.Errorf("a second kill: %v, want ErrNothingRuns", err)
	}
}
