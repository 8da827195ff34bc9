package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/pgnode"
	"socnet/internal/pgrole"
)

// Host is the address every node listens on, unless Options.Placement
// places it elsewhere.
const Host = "127.0.0.1"

// Cluster is one topology of PostgreSQL nodes persisted under a directory:
// state.json (the nodes, their ports, roles and timelines, the failover
// history), secrets.json (passwords, 0600) and one data directory per node.
// Its methods are safe for concurrent use; operations that change roles or
// processes run one at a time.
type Cluster struct {
	dir  string
	log  *slog.Logger
	opts Options
	sec  secrets

	// op serialises the operations: bootstrap, start, stop, failover,
	// switchover, promote, rejoin, restarts by the supervisor.
	op sync.Mutex

	mu      sync.Mutex // guards the fields below
	st      state
	nodes   map[string]*pgnode.Node
	probers map[string]*prober
	owned   bool   // this process started the nodes (Up or Start)
	stopped bool   // stopped by an operator: the supervisor leaves it alone
	gen     uint64 // bumped by every change of roles or processes by an operation
	waiting string // why a pending failover waits, for Status
	view    *primaryView
}

// Open opens the cluster persisted in dir, or prepares a new one for spec
// (nothing runs until Up): it picks free ports for the nodes, creates the
// passwords and writes state.json. An existing cluster keeps its persisted
// spec; a spec with another name or node count is refused.
func Open(dir string, spec Spec, log *slog.Logger, opts Options) (*Cluster, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open cluster %s: %w", spec.Name, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open cluster %s: %w", spec.Name, err)
	}
	opts = opts.withDefaults(abs)
	if opts.BinDir == "" {
		if opts.BinDir, err = pgnode.FindBinDir(); err != nil {
			return nil, fmt.Errorf("open cluster %s: %w", spec.Name, err)
		}
	}
	c := &Cluster{dir: abs, log: log.With("cluster", spec.Name), opts: opts}

	st, err := loadState(abs)
	dirty := false // write state.json only when it changes: another process may own it
	switch {
	case errors.Is(err, fs.ErrNotExist):
		st, dirty = newState(spec), true
	case err != nil:
		return nil, fmt.Errorf("open cluster %s: %w", spec.Name, err)
	case st.Spec.Name != spec.Name || st.Spec.Nodes != spec.Nodes:
		return nil, fmt.Errorf("open cluster %s: %s holds cluster %s with %d nodes, not %d",
			spec.Name, abs, st.Spec.Name, st.Spec.Nodes, spec.Nodes)
	}
	if c.sec, err = loadOrCreateSecrets(abs); err != nil {
		return nil, fmt.Errorf("open cluster %s: %w", spec.Name, err)
	}
	assigned, err := assignPorts(&st)
	if err != nil {
		return nil, fmt.Errorf("open cluster %s: %w", spec.Name, err)
	}
	c.st = st
	if dirty || assigned {
		if err := c.persistLocked(); err != nil {
			return nil, fmt.Errorf("open cluster %s: %w", spec.Name, err)
		}
	}
	c.nodes = make(map[string]*pgnode.Node)
	c.probers = make(map[string]*prober)
	for _, ns := range st.Nodes {
		n := c.newNode(ns)
		c.nodes[ns.Name] = n
		c.probers[ns.Name] = &prober{dsn: n.DSN("")}
	}
	return c, nil
}

// Load opens the cluster persisted in dir with its persisted spec.
func Load(dir string, log *slog.Logger, opts Options) (*Cluster, error) {
	st, err := loadState(dir)
	if err != nil {
		return nil, fmt.Errorf("load cluster from %s: %w", dir, err)
	}
	return Open(dir, st.Spec, log, opts)
}

// List returns the names of the clusters persisted under a socnet home.
func List(home string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(home, "clusters", "*", stateFile))
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(filepath.Dir(p)))
	}
	sort.Strings(names)
	return names, nil
}

func loadState(dir string) (state, error) {
	var st state
	if err := readJSON(filepath.Join(dir, stateFile), &st); err != nil {
		return st, err
	}
	if err := st.validate(); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return st, nil
}

// assignPorts gives every node without a port a free, distinct one, and
// reports whether it assigned any.
func assignPorts(st *state) (bool, error) {
	used := map[int]bool{}
	for _, n := range st.Nodes {
		used[n.Port] = true
		pgnode.RenewPorts(n.Port)
	}
	assigned := false
	for i := range st.Nodes {
		for tries := 0; st.Nodes[i].Port == 0; tries++ {
			p, err := pgnode.FreePort()
			if err != nil {
				return assigned, err
			}
			if !used[p] {
				st.Nodes[i].Port = p
				used[p] = true
				assigned = true
			} else if tries > 100 {
				return assigned, errors.New("no distinct free ports")
			}
		}
	}
	return assigned, nil
}

// place returns where node runs: Options.Placement's answer, on Host when
// it names no address.
func (c *Cluster) place(node string) Placement {
	var p Placement
	if c.opts.Placement != nil {
		p = c.opts.Placement(node)
	}
	if p.Host == "" {
		p.Host = Host
	}
	return p
}

func (c *Cluster) newNode(ns nodeState) *pgnode.Node {
	settings := ReplicationSettings(c.st.Spec)
	maps.Copy(settings, c.st.Spec.Settings)
	place := c.place(ns.Name)
	return pgnode.New(pgnode.Config{
		Name:      ns.Name,
		DataDir:   filepath.Join(c.dir, ns.DataDir),
		LogPath:   filepath.Join(c.opts.LogDir, ns.Name+".log"),
		Host:      place.Host,
		Netns:     place.Netns,
		ClientNet: place.ClientNet,
		Port:      ns.Port,
		BinDir:    c.opts.BinDir,
		OSUser:    pgnode.OSUser(),
		Superuser: c.sec.Superuser,
		Password:  c.sec.SuperuserPassword,
		Settings:  settings,
		Logger:    c.log,
		Output:    c.opts.Output,
	})
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.st.Spec.Name }

// Dir returns the directory the cluster is persisted in.
func (c *Cluster) Dir() string { return c.dir }

// Nodes returns the names of the nodes in priority order.
func (c *Cluster) Nodes() []string { return c.st.Spec.NodeNames() }

// Node returns the named node, nil when there is none. Tests use it to kill
// a node; callers must not change roles behind the cluster's back.
func (c *Cluster) Node(name string) *pgnode.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// Primary returns the name of the node assigned the primary role.
func (c *Cluster) Primary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.primary().Name
}

// PrimaryDSN returns an administrator connection string for database db on
// the current primary.
func (c *Cluster) PrimaryDSN(db string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[c.st.primary().Name].DSN(db)
}

// ReplicaDSNs returns administrator connection strings for database db on
// the replicas that are not waiting to rejoin, in priority order.
func (c *Cluster) ReplicaDSNs(db string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.st.Nodes {
		if n.Role == RoleReplica && !n.NeedsRejoin {
			out = append(out, c.nodes[n.Name].DSN(db))
		}
	}
	return out
}

// FailoverDSN returns a multi-host connection string for database db that
// lists every node and asks for the primary (target_session_attrs=primary):
// a pool built on it finds the new primary after a failover by itself.
func (c *Cluster) FailoverDSN(db string) string {
	if db == "" {
		db = "postgres"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	hosts := make([]string, len(c.st.Nodes))
	for i, n := range c.st.Nodes {
		hosts[i] = net.JoinHostPort(c.place(n.Name).Host, strconv.Itoa(n.Port))
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(c.sec.Superuser, c.sec.SuperuserPassword),
		Host:     strings.Join(hosts, ","),
		Path:     "/" + db,
		RawQuery: "sslmode=disable&target_session_attrs=primary",
	}
	return u.String()
}

// History returns the failover history, oldest first.
func (c *Cluster) History() []FailoverRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]FailoverRecord(nil), c.st.Failovers...)
}

// snapshot returns a copy of the state.
func (c *Cluster) snapshot() state {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Nodes = append([]nodeState(nil), c.st.Nodes...)
	st.Failovers = append([]FailoverRecord(nil), c.st.Failovers...)
	return st
}

// update changes the state under the lock and persists it.
func (c *Cluster) update(fn func(st *state)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(&c.st)
	return c.persistLocked()
}

func (c *Cluster) persistLocked() error {
	if n := len(c.st.Failovers); n > maxHistory {
		c.st.Failovers = c.st.Failovers[n-maxHistory:]
	}
	return writeJSON(filepath.Join(c.dir, stateFile), c.st, 0o600)
}

// bump records a change of roles or processes made by an operation, so that
// the supervisor re-evaluates from fresh observations.
func (c *Cluster) bump() {
	c.mu.Lock()
	c.gen++
	c.view = nil
	c.mu.Unlock()
}

func (c *Cluster) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// replConnInfo is the conninfo node streams from primary with.
func (c *Cluster) replConnInfo(primary, node string) string {
	st := c.snapshot()
	p := st.node(primary)
	return pgnode.ReplicationConnInfo(c.place(primary).Host, p.Port, replicationUser, c.sec.ReplicatorPassword, AppName(node))
}

// connect opens an administrator connection to node. Its commits do not wait
// for a synchronous standby: the cluster's own statements (roles, slots)
// must work while no standby streams.
func (c *Cluster) connect(ctx context.Context, node string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.Node(node).DSN(""))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", node, err)
	}
	cfg.RuntimeParams["application_name"] = "socnet-cluster"
	cfg.RuntimeParams["synchronous_commit"] = "local"
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 5*time.Second {
		cfg.ConnectTimeout = 5 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", node, err)
	}
	return conn, nil
}

// exec runs statements on node in one connection.
func (c *Cluster) exec(ctx context.Context, node string, stmts ...string) error {
	conn, err := c.connect(ctx, node)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s on %s: %w", firstWords(s), node, err)
		}
	}
	return nil
}

// firstWords names a statement in errors without its literals (which may
// hold a password verifier).
func firstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 4 {
		f = f[:4]
	}
	return strings.Join(f, " ")
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// setSyncNames sets synchronous_standby_names on node (primary or standby)
// with ALTER SYSTEM and reloads it.
func (c *Cluster) setSyncNames(ctx context.Context, node, names string) error {
	return c.exec(ctx, node,
		"ALTER SYSTEM SET synchronous_standby_names = "+quoteLiteral(names),
		"SELECT pg_reload_conf()")
}

// ensureSlots creates on primary the physical replication slots of the
// given nodes that do not exist yet. immediately_reserve keeps the WAL from
// now on even before the replica connects.
func (c *Cluster) ensureSlots(ctx context.Context, primary string, nodes []string) error {
	conn, err := c.connect(ctx, primary)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, n := range nodes {
		slot := AppName(n)
		if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)
			WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot); err != nil {
			return fmt.Errorf("create slot %s on %s: %w", slot, primary, err)
		}
	}
	return nil
}

// dropInactiveSlots drops the physical slots of a node that no replica uses:
// a former primary keeps the slots of its old replicas, which would hold
// back its WAL forever.
func (c *Cluster) dropInactiveSlots(ctx context.Context, node string) error {
	return c.exec(ctx, node, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_type = 'physical' AND NOT active`)
}

// ensureReplicator creates (or resets) the replication role on the primary
// with the password of secrets.json, sending only its SCRAM verifier.
func (c *Cluster) ensureReplicator(ctx context.Context, primary string) error {
	conn, err := c.connect(ctx, primary)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return pgrole.Ensure(ctx, conn, replicationUser, c.sec.ReplicatorPassword, "REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE")
}

// startNode starts a node as a child of this process, first shutting down a
// server of its data directory that another process left running.
func (c *Cluster) startNode(ctx context.Context, name string) error {
	n := c.Node(name)
	if !n.Running() {
		if err := stopForeign(ctx, n.Config().DataDir); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
	}
	return n.Start(ctx)
}

// stopNode shuts a node down fast, whoever started it.
func (c *Cluster) stopNode(ctx context.Context, name string) error {
	n := c.Node(name)
	if n.Running() {
		return n.Stop(ctx)
	}
	if err := stopForeign(ctx, n.Config().DataDir); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	return nil
}

// killNode sends SIGKILL to a node, whoever started it.
func (c *Cluster) killNode(name string) error {
	n := c.Node(name)
	if n.Running() {
		return n.Kill()
	}
	if err := killForeign(n.Config().DataDir); err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	return nil
}

// nodePid returns the postmaster's pid of a node, whoever started it.
func (c *Cluster) nodePid(name string) int {
	n := c.Node(name)
	if pid := n.Pid(); pid != 0 {
		return pid
	}
	return pgnode.RunningPostmaster(n.Config().DataDir)
}

// Up brings the cluster up: on a new directory it bootstraps the topology
// (initdb on the first node, the replication role, a slot and a base backup
// per replica) and waits until every replica streams; on an existing one it
// starts the nodes in their persisted roles, finishes an interrupted
// failover and rejoins nodes that wait for it. The nodes run as children of
// this process.
func (c *Cluster) Up(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	defer c.bump()
	c.mu.Lock()
	c.stopped, c.owned = false, true
	c.mu.Unlock()
	if !c.snapshot().Bootstrapped {
		return c.bootstrap(ctx)
	}
	return c.resume(ctx)
}

// Start starts a cluster that was bootstrapped before, like Up.
func (c *Cluster) Start(ctx context.Context) error {
	if !c.snapshot().Bootstrapped {
		return refuse("start", "cluster %s was never brought up; run socnet up", c.Name())
	}
	return c.Up(ctx)
}

// Stop shuts every node down fast, the primary first (its shutdown
// checkpoint reaches the replicas, so they stop in step), and keeps the
// supervisor from acting until Start or Up. Stopping a stopped cluster is a
// no-op.
func (c *Cluster) Stop(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	defer c.bump()
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	st := c.snapshot()
	order := []string{st.primary().Name}
	order = append(order, st.others(st.primary().Name)...)
	var errs []error
	for _, name := range order {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := c.stopNode(sctx, name); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	c.closeProbers()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop cluster %s: %w", c.Name(), err)
	}
	c.log.Info("cluster stopped")
	return nil
}

// Close releases the connections the cluster keeps for probing. It does not
// stop the nodes.
func (c *Cluster) Close() { c.closeProbers() }

// Stopped reports whether an operator stopped the cluster.
func (c *Cluster) Stopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

func (c *Cluster) bootstrap(ctx context.Context) error {
	start := time.Now()
	st := c.snapshot()
	primary := st.Nodes[0].Name
	c.log.Info("bootstrapping", "primary", primary, "replicas", st.others(primary))
	if !st.Nodes[0].Initialized {
		n := c.Node(primary)
		if err := emptyDir(n.Config().DataDir); err != nil {
			return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
		}
		if err := n.InitDB(ctx); err != nil {
			return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
		}
		if err := c.update(func(st *state) { st.Nodes[0].Initialized = true }); err != nil {
			return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
		}
	}
	if err := c.startNode(ctx, primary); err != nil {
		return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
	}
	if err := c.ensureReplicator(ctx, primary); err != nil {
		return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
	}
	replicas := st.others(primary)
	if err := c.ensureSlots(ctx, primary, replicas); err != nil {
		return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
	}
	for i, name := range replicas {
		if !st.Nodes[i+1].Initialized {
			t0 := time.Now()
			n := c.Node(name)
			if err := emptyDir(n.Config().DataDir); err != nil {
				return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
			}
			if err := n.BaseBackup(ctx, c.replConnInfo(primary, name), AppName(name)); err != nil {
				return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
			}
			if err := c.update(func(st *state) { st.node(name).Initialized = true }); err != nil {
				return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
			}
			c.log.Info("base backup done", "node", name, "ms", time.Since(t0).Milliseconds())
		}
		if err := c.startNode(ctx, name); err != nil {
			return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
		}
	}
	if err := c.waitStreaming(ctx, primary, replicas, time.Minute); err != nil {
		return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
	}
	if err := c.update(func(st *state) { st.Bootstrapped = true }); err != nil {
		return fmt.Errorf("bootstrap %s: %w", c.Name(), err)
	}
	c.log.Info("bootstrapped", "primary", primary, "synchronous_standby_names", st.SyncNames,
		"ms", time.Since(start).Milliseconds())
	return nil
}

// resume starts the nodes of a bootstrapped cluster in their persisted roles.
func (c *Cluster) resume(ctx context.Context) error {
	st := c.snapshot()
	prim := st.primary()
	primaryUp := false
	cause := "resumed after an interrupted failover"
	if !prim.NeedsRejoin && st.Promoting == "" {
		if err := c.startNode(ctx, prim.Name); err != nil {
			// As if it had died: the replicas start and one is promoted
			// if it holds every acknowledged commit.
			c.log.Error("the primary does not start; failing over", "node", prim.Name, "err", err)
			cause = "it did not start: " + RedactDSN(err.Error())
		} else {
			primaryUp = true
		}
	}
	for _, n := range st.Nodes {
		if n.Role != RoleReplica || n.NeedsRejoin {
			continue
		}
		// A node whose promotion was interrupted starts as it is: it may
		// be a primary already, which following would undo.
		if n.Name != st.Promoting && primaryUp {
			if err := c.Node(n.Name).Follow(ctx, c.replConnInfo(prim.Name, n.Name), n.Slot); err != nil {
				c.log.Error("re-point replica", "node", n.Name, "err", err)
				continue
			}
		}
		if err := c.startNode(ctx, n.Name); err != nil {
			c.log.Error("start replica; the supervisor retries", "node", n.Name, "err", err)
		}
	}
	if !primaryUp {
		c.log.Warn("resuming without a primary", "old_primary", prim.Name, "promoting", st.Promoting, "cause", cause)
		if _, err := c.failoverLocked(ctx, failoverInput{old: prim.Name, trouble: c.opts.Now(), cause: cause}); err != nil {
			c.log.Warn("failover pending; the supervisor retries", "err", err)
		}
		return nil
	}
	for _, n := range st.Nodes {
		if n.NeedsRejoin && n.Role == RoleReplica {
			if _, err := c.rejoinLocked(ctx, n.Name); err != nil {
				c.log.Error("rejoin; the supervisor retries", "node", n.Name, "err", err)
			}
		}
	}
	c.log.Info("resumed", "primary", prim.Name)
	return nil
}

// waitStreaming polls the primary's pg_stat_replication until every one of
// nodes streams from it and takes part in synchronous replication, for at
// most limit.
func (c *Cluster) waitStreaming(ctx context.Context, primary string, nodes []string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var missing []string
	for {
		rows, err := c.replicationRows(ctx, primary)
		if err == nil {
			missing = missing[:0]
			for _, n := range nodes {
				// Every replica is in synchronous_standby_names: until the
				// walsender has ranked it, it still shows as async.
				if r, ok := rows[AppName(n)]; !ok || r.State != "streaming" || r.SyncState == SyncStateAsync {
					missing = append(missing, n)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("wait for streaming replicas: %w", err)
			}
			return fmt.Errorf("wait for streaming replicas: %v not streaming from %s after %v", missing, primary, limit)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// replicationRows reads pg_stat_replication on primary, by application name.
func (c *Cluster) replicationRows(ctx context.Context, primary string) (map[string]replRow, error) {
	conn, err := c.connect(ctx, primary)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return queryReplication(ctx, conn)
}
