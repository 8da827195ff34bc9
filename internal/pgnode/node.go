package pgnode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pollInterval is how often readiness and state are polled.
const pollInterval = 50 * time.Millisecond

// Config describes one node.
type Config struct {
	Name      string            // node name, e.g. "main-1"; prefixes log lines
	DataDir   string            // PGDATA
	LogPath   string            // file that receives the postmaster's stdout+stderr (appended)
	Host      string            // listen address, default "127.0.0.1"
	Port      int               // TCP port; required
	BinDir    string            // directory of the PostgreSQL programs; "" = FindBinDir()
	OSUser    string            // run programs as this OS user ("" = current user); set to OSUser()
	Superuser string            // the admin role created by InitDB, default "postgres"
	Password  string            // the admin role's password; New generates one when empty
	Settings  map[string]string // extra postgresql.conf settings (e.g. shared_buffers), written by InitDB, BaseBackup and Rewind
	Logger    *slog.Logger      // receives lifecycle events; nil discards them
	Output    io.Writer         // optional: a copy of the child's output, each line prefixed with Name
	// Netns, when set, is the network namespace (see internal/netns) the
	// node's programs run in: the postmaster, initdb, pg_basebackup and
	// pg_rewind start through `ip netns exec` (which needs root) and then
	// drop to OSUser with setpriv. Host is then the node's address in that
	// namespace. Socnet itself still reaches the node over TCP at Host.
	Netns string
	// ClientNet, when set, is the network (CIDR, such as the namespaces'
	// bridge subnet) that pg_hba.conf admits host and replication
	// connections from, with scram-sha-256; nothing else is admitted.
	// Empty: 127.0.0.1/32 and ::1/128 only.
	ClientNet string
}

// Node is one PostgreSQL instance run as a child process. Its methods are
// safe for concurrent use; Start, Stop, Kill and the methods that change the
// data directory run one at a time.
type Node struct {
	cfg Config
	log *slog.Logger

	ops sync.Mutex // serialises operations on the process and the data directory

	mu      sync.Mutex // guards the fields below
	proc    *os.Process
	exited  chan struct{} // closed when proc has been reaped
	drained chan struct{} // closed when proc's output has been copied
	waitErr error
}

// New returns a node for cfg, filling defaults: Host 127.0.0.1, Superuser
// postgres, an absolute DataDir and a random Password when none is given.
// It does not touch the disk.
func New(cfg Config) *Node {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Superuser == "" {
		cfg.Superuser = "postgres"
	}
	if cfg.Password == "" {
		cfg.Password = randomPassword()
	}
	if cfg.DataDir != "" {
		if abs, err := filepath.Abs(cfg.DataDir); err == nil {
			cfg.DataDir = abs
		}
	}
	if cfg.LogPath != "" {
		if abs, err := filepath.Abs(cfg.LogPath); err == nil {
			cfg.LogPath = abs
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, log: log.With("node", cfg.Name)}
}

// randomPassword returns 32 hex characters from crypto/rand.
func randomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Config returns the node's configuration with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// DSN returns an admin connection string for database db ("" = "postgres"),
// usable by pgx and psql: postgres://USER:PASS@HOST:PORT/DB?sslmode=disable.
func (n *Node) DSN(db string) string {
	if db == "" {
		db = "postgres"
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(n.cfg.Superuser, n.cfg.Password),
		Host:     net.JoinHostPort(n.cfg.Host, strconv.Itoa(n.cfg.Port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Exists reports whether DataDir holds a cluster (PG_VERSION present).
func (n *Node) Exists() bool {
	if n.cfg.DataDir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(n.cfg.DataDir, "PG_VERSION"))
	return err == nil
}

// bin returns the path of the PostgreSQL program name.
func (n *Node) bin(name string) (string, error) {
	dir := n.cfg.BinDir
	if dir == "" {
		d, err := FindBinDir()
		if err != nil {
			return "", err
		}
		dir = d
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("postgresql program %s: %w", name, err)
	}
	return p, nil
}

// account resolves the OS user the programs run as.
func (n *Node) account() (*Account, error) { return lookupAccount(n.cfg.OSUser) }

// output opens the node's log for one program run.
func (n *Node) output(acct *Account) (*lineWriter, error) {
	w, err := openLineWriter(n.cfg.Name, n.cfg.LogPath, n.cfg.Output, acct)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", n.cfg.LogPath, err)
	}
	return w, nil
}

// runProgram runs the PostgreSQL program name with args as the node's OS
// user, on the node's host (Netns), logging its output, and returns the
// output.
func (n *Node) runProgram(ctx context.Context, acct *Account, env []string, name string, args ...string) ([]byte, error) {
	bin, err := n.bin(name)
	if err != nil {
		return nil, err
	}
	out, err := n.output(acct)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	if env == nil {
		env = childEnv(acct)
	}
	return runProgram(ctx, acct, n.cfg.Netns, out, env, bin, args...)
}

// Running reports whether the child process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

func (n *Node) runningLocked() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Pid returns the postmaster's pid, 0 when not running.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return 0
	}
	return n.proc.Pid
}

// Exited returns a channel closed when the current child process exits (a
// closed channel if none runs).
func (n *Node) Exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.exited == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return n.exited
}

// current returns the child process and its channels, nil when none ran.
func (n *Node) current() (*os.Process, chan struct{}, chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc, n.exited, n.drained
}

// Start runs `postgres -D DataDir -p Port -c listen_addresses=Host` as a child
// (as OSUser, in its own process group so that a terminal's Ctrl-C reaches
// socnet only), reaps it with a Wait goroutine, and returns when
// postmaster.pid names the child and SELECT 1 answers (primary or hot
// standby), or an error that quotes the tail of the log; a child that does
// not become ready is stopped. Starting a running node is a no-op. A stale
// postmaster.pid from a killed process is handled. Should socnet itself die,
// the kernel sends the postmaster SIGQUIT (immediate shutdown), so no
// orphaned server keeps the data directory.
func (n *Node) Start(ctx context.Context) error {
	n.ops.Lock()
	defer n.ops.Unlock()
	if n.Running() {
		return nil
	}
	if err := n.start(ctx); err != nil {
		return fmt.Errorf("start %s: %w", n.cfg.Name, err)
	}
	return nil
}

func (n *Node) start(ctx context.Context) error {
	if n.cfg.Port <= 0 {
		return errors.New("no port configured")
	}
	if !n.Exists() {
		return fmt.Errorf("no cluster in %s", n.cfg.DataDir)
	}
	bin, err := n.bin("postgres")
	if err != nil {
		return err
	}
	acct, err := n.account()
	if err != nil {
		return err
	}
	// Files written by socnet (configuration, signal files) must belong to
	// the server, and the server must be able to reach its directory.
	if err := makeParentsTraversable(n.cfg.DataDir, acct); err != nil {
		return err
	}
	if err := chownAll(n.cfg.DataDir, acct); err != nil {
		return err
	}
	if n.cfg.ClientNet != "" {
		// The network may have changed since initdb (another /24 after a
		// clean-up, a base backup or rewind copied the source's file):
		// admit the current one.
		text, err := n.hba()
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(n.cfg.DataDir, "pg_hba.conf"), text, acct); err != nil {
			return err
		}
	}
	if err := n.checkPidFile(); err != nil {
		return err
	}
	out, err := n.output(acct)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		out.Close()
		return fmt.Errorf("output pipe: %w", err)
	}
	// The postmaster outlives any ctx of Start: no context on its command.
	cmd := command(context.Background(), acct, n.cfg.Netns, bin,
		"-D", n.cfg.DataDir,
		"-p", strconv.Itoa(n.cfg.Port),
		"-c", "listen_addresses="+n.cfg.Host,
		"-c", "unix_socket_directories=",
	)
	cmd.Dir = "/"
	cmd.Env = childEnv(acct)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		out.Close()
		return fmt.Errorf("run postgres: %w", err)
	}
	w.Close() // the child and its descendants hold the write end now

	drained := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, r)
		r.Close()
		out.Close()
		close(drained)
	}()
	exited := make(chan struct{})
	n.mu.Lock()
	n.proc, n.exited, n.drained, n.waitErr = cmd.Process, exited, drained, nil
	n.mu.Unlock()
	pid := cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.waitErr = err
		n.mu.Unlock()
		close(exited)
		n.log.Info("postgres exited", "pid", pid, "status", exitStatus(err))
	}()

	if err := n.waitReady(ctx, pid, exited); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = n.stop(stopCtx)
		cancel()
		select {
		case <-exited:
			waitDrained(drained) // quote the child's last words
		default:
		}
		return fmt.Errorf("%w%s", err, quoteTail(out.Tail()))
	}
	n.log.Info("postgres ready", "pid", pid, "port", n.cfg.Port)
	return nil
}

// exitStatus describes how a child ended.
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// checkPidFile refuses to start over a live postmaster of this data
// directory and removes a pid file whose pid now belongs to an unrelated
// process (PostgreSQL would refuse it). A pid file of a dead process is left
// to PostgreSQL, which replaces it.
func (n *Node) checkPidFile() error {
	path := filepath.Join(n.cfg.DataDir, "postmaster.pid")
	pid, err := readPidFile(path)
	if err != nil || pid <= 0 || !processAlive(pid) {
		return nil
	}
	if processIsPostgres(pid) {
		return fmt.Errorf("a postgres process (pid %d) already runs on %s", pid, n.cfg.DataDir)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale postmaster.pid: %w", err)
	}
	n.log.Info("removed stale postmaster.pid", "stale_pid", pid)
	return nil
}

// readPidFile returns the pid on the first line of postmaster.pid.
func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

// waitReady polls until postmaster.pid names pid and SELECT 1 answers.
func (n *Node) waitReady(ctx context.Context, pid int, exited <-chan struct{}) error {
	pidPath := filepath.Join(n.cfg.DataDir, "postmaster.pid")
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	lastErr := errors.New("postmaster.pid does not name the child yet")
	for {
		if p, err := readPidFile(pidPath); err == nil && p == pid {
			err := n.ping(ctx)
			if err == nil {
				return nil
			}
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000") {
				// Waiting cannot fix credentials (a replica keeps its source's roles).
				return fmt.Errorf("superuser %s cannot log in: %s", n.cfg.Superuser, Redact(pgErr.Error()))
			}
			lastErr = err
		}
		select {
		case <-exited:
			n.mu.Lock()
			werr := n.waitErr
			n.mu.Unlock()
			return fmt.Errorf("postgres exited before it was ready: %s", exitStatus(werr))
		case <-ctx.Done():
			return fmt.Errorf("not ready (%s): %w", Redact(lastErr.Error()), ctx.Err())
		case <-ticker.C:
		}
	}
}

// ping runs SELECT 1 over TCP with the superuser's DSN.
func (n *Node) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.DSN(""))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("select 1: %w", err)
	}
	return nil
}

// Stop shuts down: fast (SIGINT) by default, waiting up to the ctx deadline,
// then immediate (SIGQUIT), then SIGKILL. Stopping a stopped node is a no-op.
// It returns once the postmaster is reaped and its output logged.
func (n *Node) Stop(ctx context.Context) error {
	n.ops.Lock()
	defer n.ops.Unlock()
	if err := n.stop(ctx); err != nil {
		return fmt.Errorf("stop %s: %w", n.cfg.Name, err)
	}
	return nil
}

// immediateGrace is how long an immediate shutdown may take before SIGKILL.
const immediateGrace = 5 * time.Second

func (n *Node) stop(ctx context.Context) error {
	proc, exited, drained := n.current()
	if proc == nil || !n.Running() {
		return nil
	}
	if err := proc.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal fast shutdown: %w", err)
	}
	select {
	case <-exited:
		waitDrained(drained)
		n.log.Info("postgres stopped", "mode", "fast")
		return nil
	case <-ctx.Done():
	}
	n.log.Warn("fast shutdown timed out; shutting down immediately", "pid", proc.Pid)
	if err := proc.Signal(syscall.SIGQUIT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal immediate shutdown: %w", err)
	}
	timer := time.NewTimer(immediateGrace)
	defer timer.Stop()
	select {
	case <-exited:
		waitDrained(drained)
		n.log.Info("postgres stopped", "mode", "immediate")
		return nil
	case <-timer.C:
	}
	n.log.Warn("immediate shutdown timed out; killing", "pid", proc.Pid)
	return n.kill()
}

// drainGrace bounds the wait for the last output of an exited postmaster.
const drainGrace = 5 * time.Second

func waitDrained(drained <-chan struct{}) {
	select {
	case <-drained:
	case <-time.After(drainGrace):
	}
}

// Kill sends SIGKILL to the postmaster (the failure experiments) and waits
// until it is reaped. The postmaster's children (backends, walsender, ...)
// would otherwise linger until they notice its death, keeping the shared
// memory and the port busy; Kill freezes the postmaster with SIGSTOP so that
// it forks no more, lists its children, kills it and them (each with its own
// process group, as PostgreSQL puts every child in one), as `docker kill`
// would, and waits until all of them are gone.
func (n *Node) Kill() error {
	n.ops.Lock()
	defer n.ops.Unlock()
	if err := n.kill(); err != nil {
		return fmt.Errorf("kill %s: %w", n.cfg.Name, err)
	}
	return nil
}

// killGrace bounds the wait for killed processes to disappear.
const killGrace = 10 * time.Second

// sigkillServer kills postmaster pid and its children the way a crashed
// machine or `docker kill` would: the postmaster is stopped so that it forks
// no more, its children are listed, then all get SIGKILL. PostgreSQL gives
// every backend a process group of its own, so killing the postmaster's
// group alone would leave backends holding shared memory and client
// connections. It returns the children it killed.
func sigkillServer(pid int) ([]procEntry, error) {
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	kids := childrenOf(pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return nil, fmt.Errorf("sigkill postmaster %d: %w", pid, err)
	}
	for _, k := range kids {
		_ = syscall.Kill(-k.pid, syscall.SIGKILL)
		_ = syscall.Kill(k.pid, syscall.SIGKILL)
	}
	return kids, nil
}

// KillServer SIGKILLs the PostgreSQL server whose postmaster is pid, and its
// children, whoever started it (the failure drills kill the primary of a
// stack that another process runs). It refuses a pid that does not run
// postgres (a stale or reused pid), returns the moment the signals were
// sent, and waits up to wait for every process to be gone.
func KillServer(pid int, wait time.Duration) (time.Time, error) {
	if pid <= 0 || !processIsPostgres(pid) {
		return time.Time{}, fmt.Errorf("kill server: pid %d does not run postgres", pid)
	}
	kids, err := sigkillServer(pid)
	at := time.Now()
	if err != nil {
		return at, fmt.Errorf("kill server: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		alive := 0
		if processAlive(pid) {
			alive++
		}
		for _, k := range kids {
			if !k.gone() {
				alive++
			}
		}
		if alive == 0 {
			return at, nil
		}
		if time.Now().After(deadline) {
			return at, fmt.Errorf("kill server %d: %d processes still alive %v after SIGKILL", pid, alive, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *Node) kill() error {
	proc, exited, drained := n.current()
	if proc == nil || !n.Running() {
		return nil
	}
	pid := proc.Pid
	kids, err := sigkillServer(pid)
	if err != nil {
		return err
	}
	deadline := time.NewTimer(killGrace)
	defer deadline.Stop()
	select {
	case <-exited:
	case <-deadline.C:
		return fmt.Errorf("postmaster %d not reaped %v after SIGKILL", pid, killGrace)
	}
	ticker := time.NewTicker(pollInterval / 5)
	defer ticker.Stop()
	for {
		alive := 0
		for _, k := range kids {
			if !k.gone() {
				alive++
			}
		}
		if alive == 0 {
			break
		}
		select {
		case <-deadline.C:
			return fmt.Errorf("%d children of postmaster %d still alive %v after SIGKILL", alive, pid, killGrace)
		case <-ticker.C:
		}
	}
	waitDrained(drained)
	n.log.Info("postgres killed", "pid", pid, "children", len(kids))
	return nil
}
