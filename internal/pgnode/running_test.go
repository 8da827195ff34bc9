package pgnode_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// TestRunningPostmasterOfItsOwnDirectory: a postmaster.pid names this node's
// server only when that process works in the node's data directory. A file
// left by a killed server whose pid the kernel gave to another PostgreSQL
// process (another cluster's) must read as nothing running: the drills, the
// supervisor and the Patroni engine's stop signal the pid it returns.
func TestRunningPostmasterOfItsOwnDirectory(t *testing.T) {
	node := pgtest.MustNode(t, "pid", nil)
	pid := node.Pid()
	if pid <= 0 {
		t.Fatalf("the test server has no pid")
	}
	if got := pgnode.RunningPostmaster(node.Config().DataDir); got != pid {
		t.Fatalf("RunningPostmaster of the server's own directory = %d, want %d", got, pid)
	}

	// Another data directory whose stale lock file names that server.
	other := t.TempDir()
	lock := strconv.Itoa(pid) + "\n" + other + "\n"
	if err := os.WriteFile(filepath.Join(other, "postmaster.pid"), []byte(lock), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := pgnode.RunningPostmaster(other); got != 0 {
		t.Errorf("RunningPostmaster of a directory whose stale lock names another server's pid %d = %d, want 0", pid, got)
	}
	if got := pgnode.RunningPostmaster(filepath.Join(other, "missing")); got != 0 {
		t.Errorf("RunningPostmaster of a directory without a lock file = %d, want 0", got)
	}
}
