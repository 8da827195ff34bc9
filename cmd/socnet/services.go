package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// service is a socnet process that `up` runs as a child (the API, the
// counter service, the relay) and restarts when it dies.
type service struct {
	Name    string   // "api", "counter", "relay"
	Args    []string // arguments after the socnet binary
	Env     []string // extra environment (secrets travel here, never in argv)
	Addr    string   // HTTP address it serves, when it does
	LogPath string

	mu       sync.Mutex
	pid      int
	restarts int
}

// serviceRecord is one entry of services.json, read by `socnet status`.
type serviceRecord struct {
	Name     string `json:"name"`
	Pid      int    `json:"pid"`
	Addr     string `json:"addr,omitempty"`
	Restarts int    `json:"restarts"`
}

// record returns the service's entry for services.json.
func (s *service) record() serviceRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return serviceRecord{Name: s.Name, Pid: s.pid, Addr: s.Addr, Restarts: s.restarts}
}

// supervise runs the service until ctx ends, restarting it with backoff when
// it exits. On ctx's end it sends SIGTERM and waits up to grace before SIGKILL.
// changed is called whenever the pid changes so that services.json is current.
func (s *service) supervise(ctx context.Context, self string, log *slog.Logger, grace time.Duration, changed func()) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		started := time.Now()
		err := s.runOnce(ctx, self, log, grace, changed)
		if ctx.Err() != nil {
			return
		}
		log.Warn("service exited; restarting", "service", s.Name, "err", err, "after", backoff)
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
		if time.Since(started) > 30*time.Second {
			backoff = 100 * time.Millisecond // it ran fine for a while: restart quickly
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *service) runOnce(ctx context.Context, self string, log *slog.Logger, grace time.Duration, changed func()) error {
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(self, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C on the terminal reaches `up` only,
	// which then stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	s.setPid(cmd.Process.Pid)
	changed()
	log.Info("service started", "service", s.Name, "pid", cmd.Process.Pid, "addr", s.Addr)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { s.setPid(0); changed() }()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		log.Info("service stopped", "service", s.Name)
		return err
	case <-time.After(grace):
		log.Warn("service did not stop in time; killing", "service", s.Name, "grace", grace)
		_ = cmd.Process.Kill()
		return <-exited
	}
}

func (s *service) setPid(pid int) {
	s.mu.Lock()
	s.pid = pid
	s.mu.Unlock()
}

// writeServices persists the services' pids and addresses for `socnet status`.
func writeServices(path string, svcs []*service) error {
	recs := make([]serviceRecord, 0, len(svcs))
	for _, s := range svcs {
		recs = append(recs, s.record())
	}
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o644)
}

// readServices reads services.json; a missing file means none run.
func readServices(path string) ([]serviceRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []serviceRecord
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return recs, nil
}

// processAlive reports whether pid names a live process.
func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// waitHTTPHealthy polls url until it answers 200 or ctx ends.
func waitHTTPHealthy(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %w (last error: %v)", url, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// servicesPath is where `up` keeps services.json under home.
func servicesPath(home string) string { return filepath.Join(home, "services.json") }
