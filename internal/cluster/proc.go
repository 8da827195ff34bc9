package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"socnet/internal/pgnode"
)

// stopForeign shuts down a postmaster of dataDir that this process did not
// start, as pgnode.Node.Stop does for its own child: fast, then immediate
// when ctx ends, then SIGKILL. It returns at once when none runs.
func stopForeign(ctx context.Context, dataDir string) error {
	pid := pgnode.RunningPostmaster(dataDir)
	if pid == 0 {
		return nil
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal postmaster %d: %w", pid, err)
		}
		limit := 5 * time.Second
		if sig == syscall.SIGINT {
			if dl, ok := ctx.Deadline(); ok {
				limit = time.Until(dl)
			} else {
				limit = 60 * time.Second
			}
		}
		if waitGone(pid, dataDir, limit) {
			return nil
		}
	}
	return fmt.Errorf("postmaster %d of %s survived SIGKILL", pid, dataDir)
}

// waitGone polls until pid no longer runs postgres on dataDir, for at most
// limit.
func waitGone(pid int, dataDir string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if pgnode.RunningPostmaster(dataDir) != pid {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killForeign sends SIGKILL to a postmaster of dataDir that this process did
// not start, and waits for it to go.
func killForeign(dataDir string) error {
	pid := pgnode.RunningPostmaster(dataDir)
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill postmaster %d: %w", pid, err)
	}
	if !waitGone(pid, dataDir, 10*time.Second) {
		return fmt.Errorf("postmaster %d of %s survived SIGKILL", pid, dataDir)
	}
	return nil
}

// emptyDir removes everything inside dir, keeping dir itself (its owner and
// mode), so that a base backup can fill it again.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("empty %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty %s: %w", dir, err)
		}
	}
	return nil
}
