package haproxy

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Options say how a proxy runs.
type Options struct {
	// Bin is the haproxy program; "" means "haproxy" on PATH.
	Bin string
	// Dir holds haproxy.cfg, haproxy.log and the stats socket haproxy.sock.
	Dir string
	// Config is what to balance. Its StatsSocket is set to Dir/haproxy.sock.
	Config Config
	// Logger receives start and stop events; nil discards them.
	Logger *slog.Logger
	// StartChild starts the prepared command; nil means (*exec.Cmd).Start.
	// A child's parent-death signal fires when the OS thread that started
	// it exits, so a long-running parent passes a function that starts
	// children from a thread that lives as long as it does.
	StartChild func(*exec.Cmd) error
}

// Proxy is a running HAProxy.
type Proxy struct {
	cfg     Config
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	log     *slog.Logger
}

// ConfigPath, LogPath and SocketPath are the files of a proxy in dir.
func ConfigPath(dir string) string { return filepath.Join(dir, "haproxy.cfg") }

// LogPath is HAProxy's log (its stderr) in dir.
func LogPath(dir string) string { return filepath.Join(dir, "haproxy.log") }

// SocketPath is the stats socket in dir.
func SocketPath(dir string) string { return filepath.Join(dir, "haproxy.sock") }

// Start writes the configuration, has HAProxy check it, runs
// `haproxy -db -f haproxy.cfg` as a child in its own process group (SIGTERM
// to it should the parent die) and waits until the frontend answers HTTP
// (any status: the servers may not be up yet; see WaitUp). A proxy that does
// not answer before ctx ends is stopped, and the error quotes its log.
func Start(ctx context.Context, o Options) (*Proxy, error) {
	bin := o.Bin
	if bin == "" {
		bin = "haproxy"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("start haproxy: %w (install the Debian package haproxy)", err)
	}
	if o.Dir == "" {
		return nil, errors.New("start haproxy: no directory")
	}
	cfg := o.Config
	cfg.StatsSocket = SocketPath(o.Dir)
	text, err := Render(cfg)
	if err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	cfgPath := ConfigPath(o.Dir)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	if out, err := exec.CommandContext(ctx, path, "-c", "-q", "-f", cfgPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("start haproxy: %s refused: %w: %s", cfgPath, err, strings.TrimSpace(string(out)))
	}
	logPath := LogPath(o.Dir)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	// -db: foreground, no master process; the child is HAProxy itself.
	cmd := exec.Command(path, "-db", "-f", cfgPath)
	cmd.Dir = o.Dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	startChild := o.StartChild
	if startChild == nil {
		startChild = (*exec.Cmd).Start
	}
	if err := startChild(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg.withDefaults(), logPath: logPath, cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	log.Info("haproxy started", "pid", cmd.Process.Pid, "bind", cfg.Bind, "backends", len(cfg.Backends))
	if err := p.waitAnswers(ctx); err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, fmt.Errorf("start haproxy: %w; last lines of %s:\n%s", err, logPath, tail(logPath, 10))
	}
	return p, nil
}

// waitAnswers polls the frontend until an HTTP response comes back.
func (p *Proxy) waitAnswers(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	url := "http://" + p.cfg.Bind + p.cfg.HealthPath
	var last error
	for {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("haproxy exited: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s does not answer (%v): %w", p.cfg.Bind, last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid is HAProxy's process id.
func (p *Proxy) Pid() int { return p.cmd.Process.Pid }

// Done is closed once HAProxy has exited.
func (p *Proxy) Done() <-chan struct{} { return p.done }

// LogPath is HAProxy's log file.
func (p *Proxy) LogPath() string { return p.logPath }

// Stop asks HAProxy for a soft stop (SIGUSR1: it stops listening and lets
// requests in flight finish, for at most its hard-stop-after of 5 s), then
// after grace sends SIGTERM, then SIGKILL. It returns once HAProxy is reaped.
func (p *Proxy) Stop(grace time.Duration) error {
	steps := []syscall.Signal{syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGKILL}
	for _, sig := range steps {
		select {
		case <-p.done:
			p.log.Info("haproxy stopped")
			return nil
		default:
		}
		if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("stop haproxy: %w", err)
		}
		select {
		case <-p.done:
			p.log.Info("haproxy stopped", "signal", sig.String())
			return nil
		case <-time.After(grace):
		}
	}
	return fmt.Errorf("stop haproxy: pid %d not reaped %v after SIGKILL", p.Pid(), grace)
}

// ServerStates returns each server's status as HAProxy's stats report it
// ("UP", "DOWN", "UP 1/2" while a check is pending, "MAINT", ...).
func (p *Proxy) ServerStates(ctx context.Context) (map[string]string, error) {
	return ServerStates(ctx, p.cfg.StatsSocket)
}

// ServerStates asks the stats socket at path for the servers' states.
func ServerStates(ctx context.Context, path string) (map[string]string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	data, err := io.ReadAll(c)
	if err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	return parseStat(string(data))
}

// parseStat reads the servers' status out of `show stat` CSV, whose header
// line starts with "# ".
func parseStat(text string) (map[string]string, error) {
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(text, "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("haproxy stats: unreadable answer %q", firstLine(text))
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	sv, okSv := col["svname"]
	st, okSt := col["status"]
	if !okSv || !okSt {
		return nil, fmt.Errorf("haproxy stats: no svname/status in %q", firstLine(text))
	}
	states := make(map[string]string)
	for _, row := range rows[1:] {
		if len(row) <= max(sv, st) || row[sv] == "FRONTEND" || row[sv] == "BACKEND" {
			continue
		}
		states[row[sv]] = row[st]
	}
	return states, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// WaitStates polls the stats socket until every named server's status is
// want ("UP" or "DOWN"), or ctx ends.
func (p *Proxy) WaitStates(ctx context.Context, want string, servers ...string) error {
	var last map[string]string
	var lastErr error
	for {
		states, err := p.ServerStates(ctx)
		if err == nil {
			ok := true
			for _, s := range servers {
				if states[s] != want {
					ok = false
				}
			}
			if ok {
				return nil
			}
			last = states
		}
		lastErr = err
		select {
		case <-p.done:
			return fmt.Errorf("haproxy exited: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("haproxy: servers %v not %s (states %v, last error %v): %w", servers, want, last, lastErr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of the file at path, indented.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return "    " + strings.Join(lines, "\n    ")
}
