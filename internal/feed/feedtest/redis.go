// Package feedtest gives tests a real Redis: a redis-server child process
// per test on 127.0.0.1 and a free port, with a password and no
// persistence, killed when the test ends. A test that cannot start one
// fails; it is never skipped.
//
// It must not be imported by non-test code.
package feedtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"socnet/internal/feed"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// Binary is the redis-server the tests run (Debian's redis-server package).
const Binary = "/usr/bin/redis-server"

// startTimeout bounds a start until Redis answers PING.
const startTimeout = 20 * time.Second

// Redis is one redis-server child process.
type Redis struct {
	// Addr is host:port.
	Addr string
	// Password is the requirepass of the server.
	Password string

	dir string
	tb  testing.TB

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// MustRedis starts a redis-server in tb.TempDir() on a free port with a
// random password, `save ""`, `appendonly no` and feed.RedisSettings, streams its log into
// tb.Logf and kills it in tb.Cleanup.
func MustRedis(tb testing.TB) *Redis {
	tb.Helper()
	port, err := pgnode.FreePort()
	if err != nil {
		tb.Fatalf("feedtest: %v", err)
	}
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), Password: hex.EncodeToString(pw), dir: tb.TempDir(), tb: tb}
	conf := fmt.Sprintf("port %d\nloglevel warning\nbind 127.0.0.1\nrequirepass %s\nsave \"\"\nappendonly no\ndir %s\nlogfile \"\"\ndaemonize no\n%s\n",
		port, r.Password, r.dir, strings.Join(feed.RedisSettings(), "\n"))
	// The password stays out of the command line (ps) and the log.
	if err := os.WriteFile(filepath.Join(r.dir, "redis.conf"), []byte(conf), 0o600); err != nil {
		tb.Fatalf("feedtest: %v", err)
	}
	tb.Cleanup(func() { r.Kill(tb) })
	r.Start(tb)
	return r
}

// Start starts the server (again, empty) on its address and waits until it
// answers.
func (r *Redis) Start(tb testing.TB) {
	tb.Helper()
	r.mu.Lock()
	if r.cmd != nil {
		r.mu.Unlock()
		tb.Fatalf("feedtest: redis %s already runs", r.Addr)
	}
	cmd := exec.Command(Binary, filepath.Join(r.dir, "redis.conf"))
	cmd.Dir = r.dir
	out := pgtest.LogWriter(r.tb, "redis |")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		tb.Fatalf("feedtest: start %s: %v", Binary, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()

	c := r.Client(tb)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return
		}
		select {
		case <-done:
			tb.Fatalf("feedtest: redis-server exited during start (see its log above)")
		case <-ctx.Done():
			tb.Fatalf("feedtest: redis %s not answering after %s: %v", r.Addr, startTimeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill kills the server with SIGKILL and waits for it to exit; a server
// that does not run is left alone.
func (r *Redis) Kill(tb testing.TB) {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Logf("feedtest: kill redis: %v", err)
	}
	<-r.done
	r.cmd, r.done = nil, nil
}

// Options are client options for the server, with short timeouts so that a
// dead server fails calls quickly.
func (r *Redis) Options() *redis.Options {
	return &redis.Options{
		Addr:         r.Addr,
		Password:     r.Password,
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		MaxRetries:   -1,
		PoolSize:     16,
	}
}

// Client returns a client of the server, closed in tb.Cleanup.
func (r *Redis) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(r.Options())
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
