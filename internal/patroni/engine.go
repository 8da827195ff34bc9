package patroni

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/pgnode"
	"socnet/internal/stack"
)

// EngineConfig is what `socnet up --engine patroni` passes to NewEngine.
type EngineConfig struct {
	// Home is the stack's home; the engine keeps its state in
	// Home.Path("patroni") and its logs in Home.Logs().
	Home stack.Home
	// Logger receives the engine's events; nil discards them.
	Logger *slog.Logger
	// Timing is the leader-lease timing (see TimingByName). It is written
	// at bootstrap and, on a later Up, set on the running clusters through
	// PATCH /config when it differs. Zero keeps the timing the home's
	// clusters run with (FastTiming at first start).
	Timing Timing
	// MainSharedBuffers is shared_buffers of the main cluster's nodes; ""
	// keeps cluster.MainSpec's.
	MainSharedBuffers string
	// Clusters are the topologies; nil means cluster.MainSpec() and
	// cluster.CounterSpec(). Node names are the socnet engine's (main-1...).
	Clusters []cluster.Spec
	// BinDir holds PostgreSQL's server programs; "" finds them.
	BinDir string
}

// TimingByName returns the timing called name: "fast" (FastTiming) or
// "default" (Patroni's own defaults); "" is the zero Timing, which keeps
// the home's (FastTiming at first start).
func TimingByName(name string) (Timing, error) {
	switch name {
	case "":
		return Timing{}, nil
	case "fast":
		return FastTiming, nil
	case "default", "patroni":
		return DefaultTiming, nil
	}
	return Timing{}, fmt.Errorf("patroni timing %q: want fast or default", name)
}

// Engine runs the stack's clusters with one Patroni agent per PostgreSQL
// node over a single-member etcd. It implements stack.Engine.
type Engine struct {
	cfg    EngineConfig
	log    *slog.Logger
	dir    string // HOME/patroni
	timing Timing
	specs  []Spec
	sec    engineSecrets
	acct   *pgnode.Account
	osUser string
	etcd   EtcdSpec

	mu       sync.Mutex
	st       *engineState
	etcdProc *Process
	agents   map[string]*agent // by node name
	stopping bool
	// unsaved and newSecrets mark state and secrets chosen by NewEngine
	// that Up must save.
	unsaved, newSecrets bool
}

// agent is one node's Patroni process as the engine runs it.
type agent struct {
	cluster string
	spec    NodeSpec
	cfg     Config
	proc    *Process
	// designatedAsync marks a node tagged nosync by design.
	designatedAsync bool
	// held keeps a dead agent from being restarted (a lost host, in tests).
	held bool
	// diedAt is when the engine saw the agent dead, zero while it runs.
	diedAt   time.Time
	restarts int
}

var _ stack.Engine = (*Engine)(nil)

// NewEngine prepares the engine of a home: it reads (or, at first start,
// chooses and saves) the ports of etcd and of every node and the passwords,
// and builds every node's configuration. It starts nothing.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if cfg.Home.Dir == "" {
		return nil, errors.New("patroni engine: no home")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	specs := slices.Clone(cfg.Clusters) // their settings are replaced below
	if specs == nil {
		specs = []cluster.Spec{cluster.MainSpec(), cluster.CounterSpec()}
	}
	for i, s := range specs {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("patroni engine: %w", err)
		}
		settings := map[string]string{}
		for k, v := range s.Settings {
			settings[k] = v
		}
		if s.Name == "main" && cfg.MainSharedBuffers != "" {
			settings["shared_buffers"] = cfg.MainSharedBuffers
		}
		specs[i].Settings = settings
	}
	// A home whose clusters the socnet engine made cannot be resumed here.
	for _, s := range specs {
		if _, err := os.Stat(filepath.Join(cluster.Dir(cfg.Home.Dir, s.Name), "state.json")); err == nil {
			return nil, fmt.Errorf("patroni engine: %s holds clusters made by the socnet engine: run up with --engine socnet, or use another home", cfg.Home.Dir)
		}
	}
	bin := cfg.BinDir
	if bin == "" {
		var err error
		if bin, err = pgnode.FindBinDir(); err != nil {
			return nil, fmt.Errorf("patroni engine: %w", err)
		}
	}
	e := &Engine{cfg: cfg, log: log, dir: cfg.Home.Path(homeDirName),
		osUser: pgnode.OSUser(), agents: map[string]*agent{}}
	acct, err := pgnode.LookupAccount(e.osUser)
	if err != nil {
		return nil, fmt.Errorf("patroni engine: %w", err)
	}
	e.acct = acct
	var names []string
	for _, s := range specs {
		names = append(names, s.NodeNames()...)
	}
	// What a first start chooses is saved by Up, so that an engine made
	// only to read a home (status) writes nothing.
	if e.st, e.unsaved, err = loadState(e.dir, names); err != nil {
		return nil, fmt.Errorf("patroni engine: %w", err)
	}
	if e.sec, e.newSecrets, err = loadSecrets(e.dir); err != nil {
		return nil, fmt.Errorf("patroni engine: %w", err)
	}
	switch {
	case cfg.Timing != (Timing{}):
		e.timing = cfg.Timing
	case e.st.Timing != nil:
		e.timing = *e.st.Timing
	default:
		e.timing = FastTiming
	}
	timing := e.timing
	e.etcd = EtcdSpec{Dir: filepath.Join(e.dir, "etcd"), ClientPort: e.st.EtcdClientPort,
		PeerPort: e.st.EtcdPeerPort, Log: cfg.Home.Log("etcd")}
	rest := e.sec.REST
	for _, s := range specs {
		ps := Spec{Cluster: s.Name, BinDir: bin, Etcd: []string{e.etcd.Endpoint()},
			Superuser: e.sec.Superuser, Replication: e.sec.Replication, Rewind: e.sec.Rewind,
			REST: &rest, Timing: timing, Parameters: s.Settings}
		for i, name := range s.NodeNames() {
			p := e.st.Nodes[name]
			ps.Nodes = append(ps.Nodes, NodeSpec{Name: name, Port: p.Port, RESTPort: p.RESTPort,
				Dir: filepath.Join(e.dir, s.Name, name), NoSync: i >= 2, Log: cfg.Home.Log("patroni-" + name)})
		}
		cfgs, err := Configs(ps)
		if err != nil {
			return nil, fmt.Errorf("patroni engine: %w", err)
		}
		for i, n := range ps.Nodes {
			e.agents[n.Name] = &agent{cluster: s.Name, spec: n, cfg: cfgs[i], designatedAsync: n.NoSync}
		}
		e.specs = append(e.specs, ps)
	}
	return e, nil
}

// Name is "patroni".
func (e *Engine) Name() string { return stack.EnginePatroni }

// Clusters are the clusters' names: main, counter.
func (e *Engine) Clusters() []string {
	out := make([]string, len(e.specs))
	for i, s := range e.specs {
		out[i] = s.Cluster
	}
	return out
}

// Nodes are the addresses of a cluster's PostgreSQL nodes.
func (e *Engine) Nodes(clusterName string) []stack.NodeAddr {
	s, ok := e.spec(clusterName)
	if !ok {
		return nil
	}
	out := make([]stack.NodeAddr, len(s.Nodes))
	for i, n := range s.Nodes {
		out[i] = stack.NodeAddr{Name: n.Name, Host: cluster.Host, Port: n.Port}
	}
	return out
}

// AdminDSN is the superuser's DSN of database db on node, with its password.
func (e *Engine) AdminDSN(clusterName, node, db string) string {
	a := e.agent(clusterName, node)
	if a == nil {
		return ""
	}
	return e.dsn(a.spec, db, true)
}

// dsn is a node's superuser DSN, with or without the password.
func (e *Engine) dsn(n NodeSpec, db string, password bool) string {
	if db == "" {
		db = "postgres"
	}
	user := url.User(e.sec.Superuser.Username)
	if password {
		user = url.UserPassword(e.sec.Superuser.Username, e.sec.Superuser.Password)
	}
	u := url.URL{Scheme: "postgres", User: user, Host: net.JoinHostPort(cluster.Host, strconv.Itoa(n.Port)),
		Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

func (e *Engine) spec(clusterName string) (Spec, bool) {
	for _, s := range e.specs {
		if s.Cluster == clusterName {
			return s, true
		}
	}
	return Spec{}, false
}

// agent returns node of clusterName, nil when there is none.
func (e *Engine) agent(clusterName, node string) *agent {
	a := e.agents[node]
	if a == nil || a.cluster != clusterName {
		return nil
	}
	return a
}

// client is a REST client of node's agent.
func (e *Engine) client(n NodeSpec) *Client {
	c := NewClient("http://127.0.0.1:" + strconv.Itoa(n.RESTPort))
	rest := e.sec.REST
	c.Auth = &rest
	return c
}

// clusterState asks the cluster's agents, in turn, for GET /cluster.
func (e *Engine) clusterState(ctx context.Context, s Spec) (ClusterState, *Client, error) {
	var errs []error
	for _, n := range s.Nodes {
		c := e.client(n)
		st, err := c.Cluster(ctx)
		if err == nil {
			return st, c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
	}
	return ClusterState{}, nil, fmt.Errorf("no agent of %s answers: %w", s.Cluster, errors.Join(errs...))
}

// Up checks every node's configuration (CheckSafe), then starts etcd and
// the agents: on a home's first start node 1 of each cluster bootstraps it
// and the others clone it; on a later start the last leader seen starts
// first, so that it leads again. It returns once every cluster has a leader
// that commits with a synchronous standby and every other node streams.
func (e *Engine) Up(ctx context.Context) (err error) {
	for _, s := range e.specs {
		for _, n := range s.Nodes {
			if err := CheckSafe(e.agents[n.Name].cfg); err != nil {
				return fmt.Errorf("patroni %s: %w", n.Name, err)
			}
		}
	}
	for bin, pkg := range map[string]string{"patroni": "patroni", "etcd": "etcd-server"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("patroni engine: %s not found: install the Debian package %s", bin, pkg)
		}
	}
	if err := os.MkdirAll(e.cfg.Home.Logs(), 0o700); err != nil {
		return fmt.Errorf("patroni engine: %w", err)
	}
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return fmt.Errorf("patroni engine: %w", err)
	}
	e.mu.Lock()
	if e.newSecrets {
		if err := saveSecrets(e.dir, e.sec); err != nil {
			e.mu.Unlock()
			return fmt.Errorf("patroni engine: %w", err)
		}
		e.newSecrets = false
	}
	t := e.timing
	e.st.Timing = &t
	err = saveState(e.dir, e.st)
	e.unsaved = false
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("patroni engine: %w", err)
	}
	for _, s := range e.specs {
		dir := filepath.Join(e.dir, s.Cluster)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("patroni engine: %w", err)
		}
		// The agents run as PostgreSQL's account: it must reach its node
		// directories, without being able to list or change the rest.
		if err := pgnode.MakeParentsTraversable(filepath.Join(dir, "x"), e.acct); err != nil {
			return fmt.Errorf("patroni engine: %w", err)
		}
	}
	e.mu.Lock()
	e.stopping = false
	e.mu.Unlock()
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
			defer cancel()
			_ = e.Stop(sctx)
		}
	}()
	p, err := StartEtcd(ctx, e.log, e.etcd)
	if err != nil {
		return fmt.Errorf("patroni engine: %w", err)
	}
	e.mu.Lock()
	e.etcdProc = p
	e.mu.Unlock()
	errs := make([]error, len(e.specs))
	var wg sync.WaitGroup
	for i, s := range e.specs {
		wg.Go(func() { errs[i] = e.upCluster(ctx, s) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("patroni engine: %w", err)
	}
	return nil
}

// readyTimeout bounds each wait of Up: bootstrap, clones, resume.
const readyTimeout = 5 * time.Minute

// upCluster starts one cluster's agents and waits until it is ready.
func (e *Engine) upCluster(ctx context.Context, s Spec) error {
	first := s.Nodes[0].Name
	initialized := false
	for _, n := range s.Nodes {
		if _, err := os.Stat(filepath.Join(n.DataDir(), "PG_VERSION")); err == nil {
			initialized = true
		}
	}
	e.mu.Lock()
	if l := e.st.Leaders[s.Cluster]; initialized && e.agents[l] != nil && e.agents[l].cluster == s.Cluster {
		first = l
	}
	e.mu.Unlock()
	if err := e.startAgent(first); err != nil {
		return err
	}
	// Bootstrap (initdb) by the first node, or its election as leader on
	// resume. On resume another node may be the one Patroni may promote
	// (the leader's host was lost): the others start after a bounded wait.
	wait := readyTimeout
	if initialized {
		wait = time.Duration(2*e.timing.TTL+e.timing.LoopWait)*time.Second + 20*time.Second
	}
	leaderErr := e.poll(ctx, wait, func() error {
		if err := e.agentAlive(first); err != nil {
			return err
		}
		st, _, err := e.clusterState(ctx, s)
		if err != nil {
			return err
		}
		if _, ok := st.Leader(); !ok {
			return fmt.Errorf("%s has no leader yet", s.Cluster)
		}
		return nil
	})
	if leaderErr != nil && !initialized {
		return fmt.Errorf("bootstrap %s on %s: %w (see %s)", s.Cluster, first, leaderErr, s.Nodes[0].LogPath())
	}
	for _, n := range s.Nodes {
		if n.Name != first {
			if err := e.startAgent(n.Name); err != nil {
				return err
			}
		}
	}
	if err := e.waitReady(ctx, s, readyTimeout); err != nil {
		return fmt.Errorf("start %s: %w", s.Cluster, err)
	}
	return e.applyDynamicConfig(ctx, s)
}

// waitReady waits until cluster s has a leader that commits (with its
// synchronous standby) and every other node streams from it.
func (e *Engine) waitReady(ctx context.Context, s Spec, timeout time.Duration) error {
	return e.poll(ctx, timeout, func() error {
		for _, n := range s.Nodes {
			if err := e.agentAlive(n.Name); err != nil {
				return err
			}
		}
		st, _, err := e.clusterState(ctx, s)
		if err != nil {
			return err
		}
		leader, ok := st.Leader()
		if !ok {
			return fmt.Errorf("%s has no leader", s.Cluster)
		}
		ln, _ := e.nodeSpec(leader.Name)
		obs := e.observeNode(ctx, ln)
		if obs.err != nil {
			return fmt.Errorf("leader %s: %w", leader.Name, obs.err)
		}
		if obs.inRecovery {
			return fmt.Errorf("leader %s is still in recovery", leader.Name)
		}
		for _, n := range s.Nodes {
			if n.Name == leader.Name {
				continue
			}
			if r, ok := obs.repl[n.Name]; !ok || r.State != "streaming" {
				return fmt.Errorf("%s does not stream from %s yet", n.Name, leader.Name)
			}
		}
		if err := commitCheck(ctx, e.dsn(ln, "", true)); err != nil {
			return fmt.Errorf("leader %s does not commit: %w", leader.Name, err)
		}
		e.noteLeader(s.Cluster, leader.Name)
		return nil
	})
}

// applyDynamicConfig sets the chosen timing on a running cluster (the
// bootstrap section applies only to a new one) and refuses a cluster whose
// live configuration someone made unsafe.
func (e *Engine) applyDynamicConfig(ctx context.Context, s Spec) error {
	_, c, err := e.clusterState(ctx, s)
	if err != nil {
		return err
	}
	live, err := c.DynamicConfig(ctx)
	if err != nil {
		return err
	}
	if b, _ := live["synchronous_mode"].(bool); !b {
		return fmt.Errorf("unsafe patroni config of %s in etcd: synchronous_mode is off, so an asynchronous replica may be promoted", s.Cluster)
	}
	if b, _ := live["synchronous_mode_strict"].(bool); !b {
		return fmt.Errorf("unsafe patroni config of %s in etcd: synchronous_mode_strict is off, so a leader without a sync standby acknowledges writes only it holds", s.Cluster)
	}
	num := func(k string) int { f, _ := live[k].(float64); return int(f) }
	if num("ttl") == e.timing.TTL && num("loop_wait") == e.timing.LoopWait && num("retry_timeout") == e.timing.RetryTimeout {
		return nil
	}
	e.log.Info("patroni timing changed", "cluster", s.Cluster, "ttl", e.timing.TTL, "loop_wait", e.timing.LoopWait, "retry_timeout", e.timing.RetryTimeout)
	return c.PatchConfig(ctx, map[string]any{"ttl": e.timing.TTL, "loop_wait": e.timing.LoopWait, "retry_timeout": e.timing.RetryTimeout})
}

// startAgent starts node's agent with its current configuration.
func (e *Engine) startAgent(node string) error {
	e.mu.Lock()
	a := e.agents[node]
	cfg := a.cfg
	e.mu.Unlock()
	p, err := StartAgent(e.log, a.spec, cfg, e.osUser)
	if err != nil {
		return err
	}
	e.mu.Lock()
	a.proc, a.diedAt = p, time.Time{}
	e.mu.Unlock()
	return nil
}

// agentAlive reports an error when node's agent has exited.
func (e *Engine) agentAlive(node string) error {
	e.mu.Lock()
	a := e.agents[node]
	p := a.proc
	e.mu.Unlock()
	if p == nil {
		return fmt.Errorf("the agent of %s is not running", node)
	}
	select {
	case <-p.Done():
		return fmt.Errorf("the agent of %s exited: %v (see %s)", node, p.err, a.spec.LogPath())
	default:
		return nil
	}
}

func (e *Engine) nodeSpec(node string) (NodeSpec, bool) {
	if a := e.agents[node]; a != nil {
		return a.spec, true
	}
	return NodeSpec{}, false
}

// noteLeader records the leader seen, for the order of the next resume.
func (e *Engine) noteLeader(clusterName, leader string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st.Leaders[clusterName] == leader {
		return
	}
	e.st.Leaders[clusterName] = leader
	if err := saveState(e.dir, e.st); err != nil {
		e.log.Warn("save patroni state", "err", err)
	}
}

// poll calls ok every 250 ms until it returns nil, ctx ends or timeout
// passes; the error then says what ok last reported.
func (e *Engine) poll(ctx context.Context, timeout time.Duration, ok func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ok()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Stop stops each cluster's agents, the standbys before the leader (so
// that stopping never hands the leader role over, and the next Up resumes
// the same leader), which stop PostgreSQL; then etcd. A postmaster left
// running by a killed agent is stopped too. It is bounded by ctx, with at
// most 60 s for an agent.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	e.stopping = true
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range e.specs {
		wg.Go(func() { e.stopCluster(ctx, s) })
	}
	wg.Wait()
	e.mu.Lock()
	p := e.etcdProc
	e.etcdProc = nil
	e.mu.Unlock()
	if p != nil {
		if err := p.Stop(10 * time.Second); err != nil {
			return fmt.Errorf("stop etcd: %w", err)
		}
		e.log.Info("etcd stopped")
	}
	return nil
}

func (e *Engine) stopCluster(ctx context.Context, s Spec) {
	leader := ""
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if st, _, err := e.clusterState(qctx, s); err == nil {
		if l, ok := st.Leader(); ok {
			leader = l.Name
			e.noteLeader(s.Cluster, leader)
		}
	}
	cancel()
	grace := 60 * time.Second
	if d, ok := ctx.Deadline(); ok && time.Until(d) < grace {
		grace = max(time.Until(d), time.Second)
	}
	var wg sync.WaitGroup
	for _, n := range s.Nodes {
		if n.Name != leader {
			wg.Go(func() { e.stopNode(n, grace) })
		}
	}
	wg.Wait()
	if leader != "" {
		e.stopNode(e.agents[leader].spec, grace)
	}
}

// stopNode stops a node's agent, then a postmaster it left behind.
func (e *Engine) stopNode(n NodeSpec, grace time.Duration) {
	e.mu.Lock()
	p := e.agents[n.Name].proc
	e.mu.Unlock()
	if p != nil {
		if err := p.Stop(grace); err != nil {
			e.log.Warn("stop patroni agent", "node", n.Name, "err", err)
		}
		e.log.Info("patroni agent stopped", "node", n.Name)
	}
	if pid, err := PostmasterPid(n.DataDir()); err == nil && processAlive(pid) {
		e.log.Warn("postmaster outlived its agent: stopping it", "node", n.Name, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGINT) // fast shutdown
		for deadline := time.Now().Add(10 * time.Second); processAlive(pid) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		if processAlive(pid) {
			if _, err := pgnode.KillServer(pid, 10*time.Second); err != nil {
				e.log.Warn("stop postmaster", "node", n.Name, "err", err)
			}
		}
	}
}

// processAlive reports whether pid names a live process (not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
