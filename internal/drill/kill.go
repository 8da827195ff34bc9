package drill

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KillPostgres kills the PostgreSQL server whose postmaster is pid the way a
// crashed machine or `docker kill` would: the postmaster is stopped so that
// it forks no more, its children are listed, then all of them get SIGKILL
// at once. PostgreSQL puts every backend in a process group of its own, so
// killing the postmaster's group alone would leave backends running that
// hold shared memory and client connections. It refuses a pid that does not
// run the postgres program (a stale or reused pid), and waits up to wait for
// the processes to be gone. It returns when the SIGKILLs were sent.
func KillPostgres(pid int, wait time.Duration) (time.Time, error) {
	if pid <= 0 {
		return time.Time{}, fmt.Errorf("kill postgres: no pid")
	}
	if !isPostgres(pid) {
		return time.Time{}, fmt.Errorf("kill postgres: pid %d does not run postgres", pid)
	}
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	kids := childrenOf(pid)
	at := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return at, fmt.Errorf("kill postgres %d: %w", pid, err)
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	deadline := time.Now().Add(wait)
	for {
		alive := 0
		for _, p := range append(kids, pid) {
			if processAlive(p) {
				alive++
			}
		}
		if alive == 0 {
			return at, nil
		}
		if time.Now().After(deadline) {
			return at, fmt.Errorf("kill postgres %d: %d processes still alive %v after SIGKILL", pid, alive, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isPostgres reports whether pid runs the postgres executable.
func isPostgres(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err == nil {
		return strings.HasSuffix(strings.TrimSuffix(exe, " (deleted)"), "/postgres")
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return err == nil && filepath.Base(string(argv0)) == "postgres"
}

// procStat returns the state and parent pid of pid from /proc.
func procStat(pid int) (state byte, ppid int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err
}

// processAlive reports whether pid runs (a zombie has exited: it holds no
// memory, files or connections).
func processAlive(pid int) bool {
	state, _, err := procStat(pid)
	return err == nil && state != 'Z' && state != 'X'
}

// childrenOf lists the live children of pid.
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid, err := procStat(p); err == nil && ppid == pid && state != 'Z' && state != 'X' {
			kids = append(kids, p)
		}
	}
	return kids
}
