package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
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
	// Called marks a service the others call: `up` starts it first and
	// the others only once it answers.
	Called bool
	// Balanced marks an API instance, which HAProxy balances over in
	// netns mode.
	Balanced bool
	// Host is the host it runs on in netns mode (hosts not nil).
	Host  string
	hosts *Hosts

	mu       sync.Mutex
	pid      int
	restarts int
	lastErr  error
}

// record returns the service's entry for services.json.
func (s *service) record() Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Service{Name: s.Name, Pid: s.pid, Addr: s.Addr, Restarts: s.restarts}
	if s.hosts != nil {
		r.Host, r.Netns = s.hosts.Addr(s.Host), s.hosts.Netns(s.Host)
	}
	return r
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
		log.Warn("service exited; restarting", "service", s.Name, "err", err, "after", backoff,
			"log", strings.Join(logTail(s.LogPath, 3), " | "))
		s.mu.Lock()
		s.restarts++
		s.lastErr = err
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
	if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o750); err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	// On its host, when it has one: `ip netns exec` execs the service in
	// its own place, so the pid, the signals, Pdeathsig and the
	// environment's home mark are the service's own.
	cmd := s.hosts.Command(s.Host, self, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C on the terminal reaches `up` only,
	// which then stops its children in order. If `up` dies without that
	// (SIGKILL, OOM), the kernel sends the child SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := StartChild(cmd); err != nil {
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

// spawner starts child processes from one OS thread that lives as long as
// the process. A child's parent-death signal (Pdeathsig) fires when the
// thread that started it exits, not the process: started from an ordinary
// goroutine, a child could be signalled when the runtime retires that
// thread (a goroutine that locked it returned), while `up` still runs.
// It is process-wide because the thread is.
var spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// StartChild starts cmd from the spawner's thread.
func StartChild(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnRequest{cmd: cmd, done: done}
	return <-done
}

func (s *service) setPid(pid int) {
	s.mu.Lock()
	s.pid = pid
	s.mu.Unlock()
}

// writeServices persists the services' pids and addresses for `socnet status`.
// Those in extra (nil: none) are other children of `up` (HAProxy).
func writeServices(path string, svcs []*service, extra ...*Service) error {
	recs := make([]Service, 0, len(svcs))
	for _, s := range svcs {
		recs = append(recs, s.record())
	}
	for _, r := range extra {
		if r != nil {
			recs = append(recs, *r)
		}
	}
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(path, data, 0o644)
}

// ReadServices reads services.json; a missing file means none run.
func ReadServices(path string) ([]Service, error) {
	data, err := ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []Service
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return recs, nil
}

// ProcessAlive reports whether pid names a live process.
func ProcessAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// maxStartFailures is how many times a service may exit before it answered
// its first health check, before `up` gives up on it.
const maxStartFailures = 3

// waitHealthy waits until the service answers /healthz with 200. It fails
// when ctx ends first or when the service exits maxStartFailures times, with
// the last lines of its log, so that `up` says why instead of claiming to be up.
func (s *service) waitHealthy(ctx context.Context) error {
	url := "http://" + s.Addr + "/healthz"
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		before := s.restarts
		s.mu.Unlock()
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		s.mu.Lock()
		exits, lastErr, pid := s.restarts, s.lastErr, s.pid
		s.mu.Unlock()
		// Healthy only if our child ran all along: not an answer from
		// whoever took the port while it was down.
		if err == nil && resp.StatusCode == http.StatusOK && pid != 0 && exits == before {
			return nil
		}
		if exits >= maxStartFailures {
			return fmt.Errorf("%s cannot start: it exited %d times (%v); last lines of %s:\n%s",
				s.Name, exits, lastErr, s.LogPath, indent(logTail(s.LogPath, 10)))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %s (%v, last error: %v); last lines of %s:\n%s",
				s.Name, url, ctx.Err(), err, s.LogPath, indent(logTail(s.LogPath, 10)))
		case <-t.C:
		}
	}
}

// checkAddrFree reports whether a TCP listener can be opened on addr now.
func checkAddrFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			return op.Err
		}
		return err
	}
	return ln.Close()
}

// logTail returns the last n lines of the log at path.
func logTail(path string, n int) []string {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	const window = 16 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		if _, err := f.Seek(fi.Size()-window, io.SeekStart); err != nil {
			return nil
		}
	}
	data, _ := io.ReadAll(io.LimitReader(f, window))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

func indent(lines []string) string {
	return "    " + strings.Join(lines, "\n    ")
}

// StopLeftovers stops the services a previous `up` of the same home left
// running (it died before stopping them): the pids recorded in services.json
// that still carry this home's mark in their environment. Anything else
// with a recorded pid (the pid reused by an unrelated process) is left alone.
func StopLeftovers(h Home, log *slog.Logger, grace time.Duration) {
	recs, err := ReadServices(h.Services())
	if err != nil {
		log.Warn("read services.json", "err", err)
		return
	}
	var left []int
	for _, r := range recs {
		if isStackChild(r.Pid, h.Dir) {
			log.Warn("stopping a service left running by a previous up", "service", r.Name, "pid", r.Pid)
			_ = syscall.Kill(r.Pid, syscall.SIGTERM)
			left = append(left, r.Pid)
		}
	}
	deadline := time.Now().Add(grace)
	for _, pid := range left {
		for isStackChild(pid, h.Dir) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if isStackChild(pid, h.Dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// isStackChild reports whether pid is a live process that `up` started for
// the home at dir: its environment holds HomeEnv=dir. A zombie (already
// dead) process has no environment left and does not count.
func isStackChild(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	mark := HomeEnv + "=" + dir
	for _, kv := range strings.Split(string(data), "\x00") {
		if kv == mark {
			return true
		}
	}
	return false
}
