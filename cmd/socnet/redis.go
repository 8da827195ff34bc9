package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"socnet/internal/stack"
)

// The feed's Redis in the local stack: `up` writes its config under the
// home (stack.Home.RedisConf) and runs `socnet feed redis`, which runs
// redis-server as its child and answers /healthz while Redis answers PING.
// Redis is a cache: it keeps nothing on disk, and a restarted one starts
// empty (timelines are rebuilt from PostgreSQL on their first read).

// redisBinary is Debian's redis-server, unless another is on PATH.
func redisBinary() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	return "/usr/bin/redis-server"
}

// cmdFeedRedis runs the stack's redis-server (config written by `up`) as a
// child until ctx ends, and serves /healthz, 200 while Redis answers PING.
// It exits with an error when redis-server dies, so that `up` restarts both.
func cmdFeedRedis(ctx context.Context, e *env, args []string) error {
	fs := newFlags("feed redis", e)
	home := fs.HomeDir()
	addr := fs.String("redis-addr", "", "address of Redis in the config (for the health check)")
	httpAddr := fs.String("http", "", "address of /healthz")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *addr == "" || *httpAddr == "" {
		return usageError{errors.New("feed redis: --redis-addr and --http are required")}
	}
	h, err := stack.NewHome(*home)
	if err != nil {
		return fmt.Errorf("feed redis: %w", err)
	}
	pw, err := stack.ReadFile(h.RedisPassword())
	if err != nil {
		return fmt.Errorf("feed redis: %w (`socnet up` writes it)", err)
	}
	cmd := exec.Command(redisBinary(), h.RedisConf())
	cmd.Dir = h.Redis()
	cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
	// Redis dies with this process, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := stack.StartChild(cmd); err != nil {
		return fmt.Errorf("feed redis: start %s: %w", cmd.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	e.log.Info("redis started", "pid", cmd.Process.Pid, "addr", *addr)

	rdb := newRedisClient(&redis.Options{Addr: *addr, Password: strings.TrimSpace(string(pw)),
		DialTimeout: redisDialTimeout, ReadTimeout: redisIOTimeout, WriteTimeout: redisIOTimeout, MaxRetries: -1, PoolSize: 2})
	defer rdb.Close()
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := rdb.Ping(r.Context()).Err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"status":"redis does not answer"}`)
			return
		}
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	served := make(chan error, 1)
	go func() { served <- listenAndServe(hctx, e, "redis-health", *httpAddr, "", mux, time.Second) }()

	select {
	case err := <-exited:
		stopHealth()
		<-served
		return fmt.Errorf("feed redis: redis-server exited: %v", err)
	case err := <-served:
		_ = cmd.Process.Kill()
		<-exited
		return err
	case <-ctx.Done():
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		e.log.Warn("redis did not stop in time; killing")
		_ = cmd.Process.Kill()
		<-exited
	}
	<-served
	return nil
}

// redisPidFile is where redis-server writes its pid.
func redisPidFile(h stack.Home) string { return h.RedisPidFile() }
