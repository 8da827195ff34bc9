package patroni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"socnet/internal/pgnode"
)

// Process is a child process socnet started: etcd or a Patroni agent.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *os.File
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL: the host-loss fault.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return p.Kill()
	}
}

// start runs cmd with output to logPath, as osUser when not empty.
func start(name, logPath, osUser string, cmd *exec.Cmd) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if osUser != "" {
		acct, err := pgnode.LookupAccount(osUser)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		if acct != nil {
			cmd.SysProcAttr.Credential = acct.Credential()
			cmd.Env = append(os.Environ(), "HOME="+acct.Home(), "USER="+osUser, "LOGNAME="+osUser)
		}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{}), log: f}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// EtcdSpec is a single-member etcd on 127.0.0.1.
type EtcdSpec struct {
	Bin        string // etcd binary; empty means "etcd" on PATH
	Dir        string // holds data/ and etcd.log
	ClientPort int
	PeerPort   int
	Log        string // "" means etcd.log in Dir
}

// LogPath is where etcd's output goes.
func (e EtcdSpec) LogPath() string {
	if e.Log != "" {
		return e.Log
	}
	return filepath.Join(e.Dir, "etcd.log")
}

// Endpoint is the client endpoint, host:port, for Spec.Etcd.
func (e EtcdSpec) Endpoint() string { return "127.0.0.1:" + strconv.Itoa(e.ClientPort) }

// StartEtcd starts etcd with only its v3 API and waits until it answers.
func StartEtcd(ctx context.Context, logger *slog.Logger, e EtcdSpec) (*Process, error) {
	bin := e.Bin
	if bin == "" {
		bin = "etcd"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w (install the Debian package etcd-server)", err)
	}
	if err := os.MkdirAll(e.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	client := "http://" + e.Endpoint()
	peer := "http://127.0.0.1:" + strconv.Itoa(e.PeerPort)
	cmd := exec.Command(path,
		"--name", "etcd0",
		"--data-dir", filepath.Join(e.Dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "etcd0="+peer,
		"--enable-v2=false")
	p, err := start("etcd", e.LogPath(), "", cmd)
	if err != nil {
		return nil, err
	}
	logger.Info("etcd started", "pid", p.Pid(), "client", client)
	err = waitFor(ctx, 30*time.Second, p, func() bool {
		st, err := httpGet(ctx, client+"/health")
		return err == nil && st == 200
	})
	if err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, fmt.Errorf("start etcd: %w (see %s)", err, e.LogPath())
	}
	return p, nil
}

// StartAgent writes the node's configuration (0600) and starts its Patroni
// agent, as osUser when not empty (see pgnode.OSUser). Its output goes to
// patroni.log in the node's directory.
func StartAgent(logger *slog.Logger, n NodeSpec, cfg Config, osUser string) (*Process, error) {
	path, err := exec.LookPath("patroni")
	if err != nil {
		return nil, fmt.Errorf("start patroni %s: %w (install the Debian package patroni)", n.Name, err)
	}
	if err := CheckSafe(cfg); err != nil {
		return nil, fmt.Errorf("start patroni %s: %w", n.Name, err)
	}
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start patroni %s: %w", n.Name, err)
	}
	if err := WriteConfig(n.ConfigPath(), cfg); err != nil {
		return nil, err
	}
	logPath := n.LogPath()
	if osUser != "" {
		acct, err := pgnode.LookupAccount(osUser)
		if err != nil {
			return nil, fmt.Errorf("start patroni %s: %w", n.Name, err)
		}
		if err := pgnode.ChownAll(n.Dir, acct); err != nil {
			return nil, fmt.Errorf("start patroni %s: %w", n.Name, err)
		}
		// The agent opens its own log only through inherited descriptors,
		// but leave the file to the node's owner too.
		if f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			f.Close()
			_ = pgnode.ChownAll(logPath, acct)
		}
	}
	p, err := start("patroni "+n.Name, logPath, osUser, exec.Command(path, n.ConfigPath()))
	if err != nil {
		return nil, err
	}
	logger.Info("patroni agent started", "node", n.Name, "pid", p.Pid())
	return p, nil
}

// PostmasterPid reads the postmaster's pid from the data directory.
func PostmasterPid(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postmaster pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("postmaster pid in %s: %w", dataDir, err)
	}
	return pid, nil
}

// waitFor polls ok until it holds, the process exits, or the deadline passes.
func waitFor(ctx context.Context, timeout time.Duration, p *Process, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok() {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.Name, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", p.Name, ctx.Err())
		case <-tick.C:
		}
	}
}
