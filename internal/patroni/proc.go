package patroni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"socnet/internal/pgnode"
	"socnet/internal/stack"
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

// running reports whether p was started and has not exited; false for nil.
func (p *Process) running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

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
			env := cmd.Env
			if env == nil {
				env = os.Environ()
			}
			cmd.Env = append(env, "HOME="+acct.Home(), "USER="+osUser, "LOGNAME="+osUser)
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

// EtcdSpec is one etcd member: by default the single member of an etcd on
// 127.0.0.1; with Name, Host, Cluster and Command, one member of several,
// each on a host of its own.
type EtcdSpec struct {
	Bin        string // etcd binary; empty means "etcd" on PATH
	Dir        string // holds data/ and etcd.log
	ClientPort int
	PeerPort   int
	Log        string // "" means etcd.log in Dir
	// Name is the member's name; "" means etcd0.
	Name string
	// Host is the address the member listens on (client and peer); ""
	// means 127.0.0.1.
	Host string
	// Cluster are the peer URLs of every member, name=url, for
	// --initial-cluster; nil means this member alone.
	Cluster []string
	// Command makes the member's command (on its host); nil runs it
	// directly.
	Command func(name string, args ...string) *exec.Cmd
	// TLS, when set, makes the member speak https to clients and peers
	// and admit only those with a certificate signed by TLS.CA; nil
	// means plain http without authentication.
	TLS *EtcdTLS
}

// LogPath is where etcd's output goes.
func (e EtcdSpec) LogPath() string {
	if e.Log != "" {
		return e.Log
	}
	return filepath.Join(e.Dir, "etcd.log")
}

func (e EtcdSpec) addr() string {
	if e.Host != "" {
		return e.Host
	}
	return "127.0.0.1"
}

func (e EtcdSpec) name() string {
	if e.Name != "" {
		return e.Name
	}
	return "etcd0"
}

// Endpoint is the client endpoint, host:port, for Spec.Etcd.
func (e EtcdSpec) Endpoint() string { return net.JoinHostPort(e.addr(), strconv.Itoa(e.ClientPort)) }

// scheme is https with TLS, else http.
func (e EtcdSpec) scheme() string {
	if e.TLS != nil {
		return "https"
	}
	return "http"
}

// ClientURL is the member's client URL.
func (e EtcdSpec) ClientURL() string { return e.scheme() + "://" + e.Endpoint() }

// PeerURL is the member's peer URL.
func (e EtcdSpec) PeerURL() string {
	return e.scheme() + "://" + net.JoinHostPort(e.addr(), strconv.Itoa(e.PeerPort))
}

// StartEtcd starts etcd with only its v3 API and waits until it answers.
func StartEtcd(ctx context.Context, logger *slog.Logger, e EtcdSpec) (*Process, error) {
	p, err := startEtcd(logger, e)
	if err != nil {
		return nil, err
	}
	if err := waitEtcd(ctx, e, p); err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// startEtcd starts an etcd member without waiting: a member of several
// answers only once a quorum of them runs.
func startEtcd(logger *slog.Logger, e EtcdSpec) (*Process, error) {
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
	client := e.ClientURL()
	peer := e.PeerURL()
	initial := e.Cluster
	if initial == nil {
		initial = []string{e.name() + "=" + peer}
	}
	args := []string{
		"--name", e.name(),
		"--data-dir", filepath.Join(e.Dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", strings.Join(initial, ","),
		"--enable-v2=false"}
	if t := e.TLS; t != nil {
		args = append(args,
			"--cert-file", t.Cert, "--key-file", t.Key, "--trusted-ca-file", t.CA, "--client-cert-auth",
			"--peer-cert-file", t.Cert, "--peer-key-file", t.Key, "--peer-trusted-ca-file", t.CA, "--peer-client-cert-auth")
	}
	if e.Cluster != nil {
		// A member back from a partition asks before it calls an
		// election, rather than deposing the leader with its higher term.
		args = append(args, "--pre-vote")
	}
	command := e.Command
	if command == nil {
		command = exec.Command
	}
	p, err := start("etcd "+e.name(), e.LogPath(), "", command(path, args...))
	if err != nil {
		return nil, err
	}
	logger.Info("etcd started", "member", e.name(), "pid", p.Pid(), "client", client)
	return p, nil
}

// waitEtcd waits until the member p answers healthy, over TLS with the
// client certificate when e.TLS is set.
func waitEtcd(ctx context.Context, e EtcdSpec, p *Process) error {
	hc := http.DefaultClient
	if e.TLS != nil {
		cfg, err := ClientTLSConfig(e.TLS.Client)
		if err != nil {
			return fmt.Errorf("start etcd: %w", err)
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		hc = &http.Client{Transport: tr}
	}
	client := e.ClientURL()
	err := waitFor(ctx, 60*time.Second, p, func() bool {
		st, err := httpGet(ctx, hc, client+"/health")
		return err == nil && st == 200
	})
	if err != nil {
		return fmt.Errorf("start etcd: %w (see %s)", err, e.LogPath())
	}
	return nil
}

// StartAgent writes the node's configuration (0600) and starts its Patroni
// agent, as osUser when not empty (see pgnode.OSUser). Its output goes to
// patroni.log in the node's directory.
func StartAgent(logger *slog.Logger, n NodeSpec, cfg Config, osUser string) (*Process, error) {
	return startAgent(logger, n, cfg, osUser, nil)
}

// startAgent is StartAgent on a host: onHost, when not nil, makes the
// command that runs a program on the node's host (stack.Hosts.Command).
// There the agent is started as root through setpriv, which switches to
// osUser and then restores the parent-death signal the switch clears
// (`setpriv --pdeathsig keep`), so that the agent still stops with us.
func startAgent(logger *slog.Logger, n NodeSpec, cfg Config, osUser string, onHost func(name string, args ...string) *exec.Cmd) (*Process, error) {
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
	env, err := agentEnv(n, cfg)
	if err != nil {
		return nil, fmt.Errorf("start patroni %s: %w", n.Name, err)
	}
	logPath := n.LogPath()
	var acct *pgnode.Account
	if osUser != "" {
		acct, err = pgnode.LookupAccount(osUser)
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
	var p *Process
	switch {
	case onHost == nil:
		cmd := exec.Command(path, n.ConfigPath())
		cmd.Env = env
		p, err = start("patroni "+n.Name, logPath, osUser, cmd)
	case acct == nil:
		cmd := onHost(path, n.ConfigPath())
		cmd.Env = env
		p, err = start("patroni "+n.Name, logPath, "", cmd)
	default:
		c := acct.Credential()
		groups := "--clear-groups"
		if len(c.Groups) > 0 {
			ids := make([]string, len(c.Groups))
			for i, g := range c.Groups {
				ids[i] = strconv.FormatUint(uint64(g), 10)
			}
			groups = "--groups=" + strings.Join(ids, ",")
		}
		cmd := onHost("setpriv", "--reuid="+strconv.FormatUint(uint64(c.Uid), 10),
			"--regid="+strconv.FormatUint(uint64(c.Gid), 10), groups, "--pdeathsig=keep", "--",
			path, n.ConfigPath())
		cmd.Env = append(env, "HOME="+acct.Home(), "USER="+osUser, "LOGNAME="+osUser)
		p, err = start("patroni "+n.Name, logPath, "", cmd)
	}
	if err != nil {
		return nil, err
	}
	logger.Info("patroni agent started", "node", n.Name, "pid", p.Pid())
	return p, nil
}

// agentSiteCustomize keeps python-etcd from switching urllib3 to pyOpenSSL
// (it calls urllib3.contrib.pyopenssl.inject_into_urllib3 on import).
// Over https, Patroni stops its etcd watch by calling
// sock.shutdown(socket.SHUT_RDWR), which pyOpenSSL's socket does not take:
// the error is swallowed and the watch is never stopped, so an agent cut
// off from etcd keeps a stale view in which it still holds the leader key.
// Patroni 3.0.2 then writes the leader key without a comparison once the
// cut heals, taking the lead back from the node promoted meanwhile and
// losing the writes acknowledged there (seen in TestUpOnHostsPatroni).
// With the standard library's ssl the shutdown works, as over http.
const agentSiteCustomize = `# Written by socnet: see agentSiteCustomize in internal/patroni/proc.go.
try:
    import urllib3.contrib.pyopenssl as _pyopenssl
    _pyopenssl.inject_into_urllib3 = lambda: None
except ImportError:
    pass
`

// agentEnv is the agent's environment: the current one, and for an agent
// that reaches etcd over https a PYTHONPATH whose sitecustomize.py (in the
// node's directory) is agentSiteCustomize.
func agentEnv(n NodeSpec, cfg Config) ([]string, error) {
	env := os.Environ()
	if cfg.Etcd3.Protocol != "https" {
		return env, nil
	}
	dir := filepath.Join(n.Dir, "python")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := stack.WriteFile(filepath.Join(dir, "sitecustomize.py"), []byte(agentSiteCustomize), 0o600); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PYTHONPATH=") {
			out = append(out, kv)
		}
	}
	return append(out, "PYTHONPATH="+dir), nil
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
