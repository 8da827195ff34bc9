package pgnode

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// ErrNothingRuns is KillHost's error when none of the processes it was
// given runs.
var ErrNothingRuns = errors.New("nothing of the node runs")

// KillHost does to one node what the loss of its machine does: it SIGKILLs
// the PostgreSQL server whose postmaster is postmaster, its children, and
// the node's agent (the process that manages the server, such as Patroni)
// with all of the agent's descendants, at once. Every process is stopped
// (SIGSTOP) before any is killed, so that none sees another die and reacts.
// postmaster or agent may be 0, or a process that no longer runs: it is
// skipped. A live postmaster that does not run postgres, or an agent that
// is this process or init, is refused, and so is a call with nothing alive
// to kill. It returns the moment the signals were sent and waits up to
// wait for every process to be gone.
func KillHost(postmaster, agent int, wait time.Duration) (time.Time, error) {
	var roots []int
	if postmaster > 0 && processAlive(postmaster) {
		if !processIsPostgres(postmaster) {
			return time.Time{}, fmt.Errorf("kill host: pid %d does not run postgres", postmaster)
		}
		roots = append(roots, postmaster)
	}
	if agent > 0 && processAlive(agent) {
		if agent == 1 || agent == os.Getpid() {
			return time.Time{}, fmt.Errorf("kill host: refusing to kill pid %d as an agent", agent)
		}
		roots = append(roots, agent)
	}
	if len(roots) == 0 {
		return time.Time{}, fmt.Errorf("kill host: postmaster %d, agent %d: %w", postmaster, agent, ErrNothingRuns)
	}
	for _, p := range roots {
		_ = syscall.Kill(p, syscall.SIGSTOP)
	}
	procs := descendantsOf(roots)
	for _, p := range roots {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return time.Now(), fmt.Errorf("kill host: sigkill %d: %w", p, err)
		}
	}
	for _, k := range procs {
		_ = syscall.Kill(k.pid, syscall.SIGKILL)
	}
	at := time.Now()
	deadline := at.Add(wait)
	for {
		alive := 0
		for _, p := range roots {
			if processAlive(p) {
				alive++
			}
		}
		for _, k := range procs {
			if !k.gone() {
				alive++
			}
		}
		if alive == 0 {
			return at, nil
		}
		if time.Now().After(deadline) {
			return at, fmt.Errorf("kill host: %d processes still alive %v after SIGKILL", alive, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// descendantsOf lists the live descendants of roots, from one scan of /proc.
func descendantsOf(roots []int) []procEntry {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]procEntry{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, start, err := procStat(p)
		if err != nil || state == 'Z' || state == 'X' {
			continue
		}
		children[ppid] = append(children[ppid], procEntry{pid: p, start: start})
	}
	var out []procEntry
	queue := append([]int(nil), roots...)
	seen := map[int]bool{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, k := range children[p] {
			if seen[k.pid] {
				continue
			}
			seen[k.pid] = true
			out = append(out, k)
			queue = append(queue, k.pid)
		}
	}
	return out
}
