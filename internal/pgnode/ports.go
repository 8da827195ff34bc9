package pgnode

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Ports handed out by FreePort are leased in a registry that every socnet
// process of the same user shares: a directory under the temporary
// directory with one file per port, its modification time the start of
// the lease. Without it two processes choosing at the same moment (two
// test packages run in parallel, two stacks started together) can pick
// the same free port, and the one whose server binds second fails with
// "address already in use", seconds later, in a child process. A port that
// is bound is never handed out, whatever the registry says; a lease only
// keeps a port that is free now from being chosen twice.
const (
	// portLease is how long a port stays promised after it was handed out
	// or renewed: longer than the gap between choosing a port and binding
	// it, and than a stack's restart on the same home in a test.
	portLease = 30 * time.Minute
	// pruneEvery bounds how often one process sweeps expired leases.
	pruneEvery = time.Minute
)

var registry struct {
	mu         sync.Mutex
	lastPruned time.Time
}

// FreePort returns a free TCP port on 127.0.0.1 and leases it. It draws
// from the ports below the kernel's ephemeral range, so that the port is
// not handed out again as the source port of an outgoing connection or to
// another process binding port 0 in the moment before its new owner binds
// it; with no such range it lets the kernel choose.
func FreePort() (int, error) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	dir, unlock := lockRegistry()
	defer unlock()
	if lo, hi := freePortRange(); hi > lo {
		now := time.Now()
		if dir != "" && now.Sub(registry.lastPruned) > pruneEvery {
			pruneLeases(dir, now)
			registry.lastPruned = now
		}
		for range 200 {
			p := lo + rand.IntN(hi-lo)
			if dir != "" && leased(dir, p, now) {
				continue
			}
			if !bindable(p) {
				continue
			}
			if dir != "" {
				lease(dir, p)
			}
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RenewPorts restarts the lease of ports a home keeps between runs, so
// that they are not handed to another process while their stack is down
// for a restart.
func RenewPorts(ports ...int) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	dir, unlock := lockRegistry()
	defer unlock()
	if dir == "" {
		return
	}
	for _, p := range ports {
		if p > 0 {
			lease(dir, p)
		}
	}
}

func bindable(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// lockRegistry opens the registry and takes its lock across processes. It
// returns "" when the registry is unusable (a directory another user
// owns or could write, no temporary directory): FreePort then relies on
// the bind check alone, as it would without a registry.
func lockRegistry() (dir string, unlock func()) {
	dir = filepath.Join(os.TempDir(), "socnet-ports-"+strconv.Itoa(os.Geteuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", func() {}
	}
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return "", func() {}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return "", func() {}
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", func() {}
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return "", func() {}
	}
	return dir, func() { f.Close() } // closing releases the lock
}

func leased(dir string, p int, now time.Time) bool {
	fi, err := os.Lstat(filepath.Join(dir, strconv.Itoa(p)))
	return err == nil && now.Sub(fi.ModTime()) < portLease
}

func lease(dir string, p int) {
	path := filepath.Join(dir, strconv.Itoa(p))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return
	}
	f.Close()
	now := time.Now()
	_ = os.Chtimes(path, now, now)
}

// pruneLeases removes the expired leases, so that the registry holds no
// more files than ports promised in the last portLease.
func pruneLeases(dir string, now time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && now.Sub(fi.ModTime()) >= portLease {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// freePortRange is [10000, start of the ephemeral range), or empty when the
// range cannot be read or leaves too little room.
func freePortRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, 0
	}
	start, err := strconv.Atoi(f[0])
	if err != nil || start < 11000 {
		return 0, 0
	}
	return 10000, start
}
