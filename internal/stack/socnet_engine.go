package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"socnet/internal/cluster"
)

// SocnetOptions tune the socnet engine.
type SocnetOptions struct {
	// Cluster tunes both clusters (DeadAfter, ...); its zero value is the
	// production default.
	Cluster cluster.Options
	// MainSharedBuffers is the main nodes' shared_buffers when the cluster
	// is created; "" keeps cluster.MainSpec's.
	MainSharedBuffers string
}

// SocnetEngine is the stack's default engine: socnet's own supervisor
// (internal/cluster) running the main and counter clusters of the home as
// children of this process. It also takes the operator's commands beyond
// switchover (Operator).
//
// Opened on a home where no `up` runs (status, `socnet cluster`), it works
// on the clusters persisted there; Close releases them.
type SocnetEngine struct {
	h    Home
	log  *slog.Logger
	opts SocnetOptions

	mu       sync.Mutex
	clusters map[string]*cluster.Cluster // opened
	names    []string                    // their order: main, counter, others by name
	running  map[string]bool             // started by this process
}

// NewSocnetEngine returns the socnet engine of the home. Nothing is opened
// or started until a method needs it.
func NewSocnetEngine(h Home, log *slog.Logger, opts SocnetOptions) *SocnetEngine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Cluster.LogDir == "" {
		opts.Cluster.LogDir = h.Logs() // the nodes' logs beside the services'
	}
	return &SocnetEngine{h: h, log: log, opts: opts, running: map[string]bool{}}
}

var (
	_ Engine       = (*SocnetEngine)(nil)
	_ Operator     = (*SocnetEngine)(nil)
	_ HostedEngine = (*SocnetEngine)(nil)
)

// HostNames are the nodes' names: each node runs on a host named after it.
func (e *SocnetEngine) HostNames() []string {
	return append(cluster.MainSpec().NodeNames(), cluster.CounterSpec().NodeNames()...)
}

// Place puts every node on the host named after it; the nodes' logins
// come from the hosts' network only. The supervisor stays in the
// machine's namespace and watches the nodes over the bridge like any client.
func (e *SocnetEngine) Place(h *Hosts) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opts.Cluster.Placement = h.Placement
}

// Name is EngineSocnet.
func (e *SocnetEngine) Name() string { return EngineSocnet }

// Up opens (creating them on the first start) the main and counter
// clusters and brings both up at once: bootstrapped, or resumed in their
// persisted roles.
func (e *SocnetEngine) Up(ctx context.Context) error {
	mainSpec := cluster.MainSpec()
	if e.opts.MainSharedBuffers != "" {
		mainSpec.Settings["shared_buffers"] = e.opts.MainSharedBuffers
	}
	specs := []cluster.Spec{mainSpec, cluster.CounterSpec()}
	e.mu.Lock()
	if e.clusters == nil {
		e.clusters = map[string]*cluster.Cluster{}
	}
	for _, spec := range specs {
		if e.clusters[spec.Name] != nil {
			continue
		}
		c, err := cluster.Open(e.h.Cluster(spec.Name), spec, e.log, e.opts.Cluster)
		if err != nil {
			e.mu.Unlock()
			return err
		}
		e.clusters[spec.Name] = c
	}
	e.names = orderClusters(e.clusters)
	all := e.opened()
	for _, c := range all {
		e.running[c.Name()] = true
	}
	e.mu.Unlock()
	return forEach(all, func(c *cluster.Cluster) error { return c.Up(ctx) })
}

// open loads the clusters persisted in the home, once.
func (e *SocnetEngine) open() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clusters != nil {
		return nil
	}
	names, err := cluster.List(e.h.Dir)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("no clusters in %s: create them with `socnet up --home %s`", e.h.Dir, e.h.Dir)
	}
	clusters := map[string]*cluster.Cluster{}
	for _, name := range names {
		c, err := cluster.Load(e.h.Cluster(name), e.log, e.opts.Cluster)
		if err != nil {
			for _, c := range clusters {
				c.Close()
			}
			return err
		}
		clusters[name] = c
	}
	e.clusters, e.names = clusters, orderClusters(clusters)
	return nil
}

// orderClusters lists the stack's clusters first, the others by name.
func orderClusters(m map[string]*cluster.Cluster) []string {
	var names, rest []string
	for _, n := range []string{MainCluster, CounterCluster} {
		if m[n] != nil {
			names = append(names, n)
		}
	}
	for n := range m {
		if n != MainCluster && n != CounterCluster {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	return append(names, rest...)
}

// opened returns the opened clusters in order; e.mu is held.
func (e *SocnetEngine) opened() []*cluster.Cluster {
	out := make([]*cluster.Cluster, 0, len(e.names))
	for _, n := range e.names {
		out = append(out, e.clusters[n])
	}
	return out
}

// cluster returns the named cluster, opening the home's when needed.
func (e *SocnetEngine) cluster(name string) (*cluster.Cluster, error) {
	if err := e.open(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.clusters[name]
	if !ok {
		return nil, &UnknownClusterError{Cluster: name, Known: slices.Clone(e.names)}
	}
	return c, nil
}

// Supervise runs the supervisor of every cluster this process started and
// serves the control socket, until ctx ends.
func (e *SocnetEngine) Supervise(ctx context.Context) error {
	e.mu.Lock()
	var supervised []*cluster.Cluster
	for _, c := range e.opened() {
		if e.running[c.Name()] {
			supervised = append(supervised, c)
		}
	}
	e.mu.Unlock()
	errs := make([]error, len(supervised)+1)
	var wg sync.WaitGroup
	for i, c := range supervised {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Supervise(ctx); err != nil && ctx.Err() == nil {
				e.log.Error("supervisor stopped", "cluster", c.Name(), "err", err)
				errs[i] = fmt.Errorf("supervise %s: %w", c.Name(), err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ServeControl(ctx, e.h.Control(), e); err != nil && ctx.Err() == nil {
			e.log.Error("control socket stopped", "err", err)
			errs[len(supervised)] = err
		}
	}()
	wg.Wait()
	return errors.Join(errs...)
}

// Stop stops the clusters this process started, all at once, and releases
// every opened cluster.
func (e *SocnetEngine) Stop(ctx context.Context) error {
	e.mu.Lock()
	var running []*cluster.Cluster
	for _, c := range e.opened() {
		if e.running[c.Name()] {
			running = append(running, c)
			delete(e.running, c.Name())
		}
	}
	e.mu.Unlock()
	err := forEach(running, func(c *cluster.Cluster) error { return c.Stop(ctx) })
	e.Close()
	return err
}

// Close releases the connections the opened clusters keep for probing. It
// stops nothing.
func (e *SocnetEngine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.opened() {
		c.Close()
	}
}

// Clusters are the home's clusters: main and counter, then any other
// persisted there. Nil when the home holds none.
func (e *SocnetEngine) Clusters() []string {
	if err := e.open(); err != nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.names)
}

// Nodes are the cluster's nodes, where they listen.
func (e *SocnetEngine) Nodes(clusterName string) []NodeAddr {
	c, err := e.cluster(clusterName)
	if err != nil {
		return nil
	}
	var out []NodeAddr
	for _, name := range c.Nodes() {
		cfg := c.Node(name).Config()
		out = append(out, NodeAddr{Name: name, Host: cfg.Host, Port: cfg.Port, Netns: cfg.Netns})
	}
	return out
}

// AdminDSN is the administrator's DSN of db on node, with its password.
func (e *SocnetEngine) AdminDSN(clusterName, node, db string) string {
	c, err := e.cluster(clusterName)
	if err != nil || c.Node(node) == nil {
		return ""
	}
	return c.Node(node).DSN(db)
}

// Primary is the node the supervisor holds primary.
func (e *SocnetEngine) Primary(_ context.Context, clusterName string) (string, error) {
	c, err := e.cluster(clusterName)
	if err != nil {
		return "", err
	}
	return c.Primary(), nil
}

// Status asks every node of every cluster for its state; AgentPid stays
// null: the socnet engine runs no agents.
func (e *SocnetEngine) Status(ctx context.Context) ([]cluster.Status, error) {
	if err := e.open(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	all := e.opened()
	e.mu.Unlock()
	out := make([]cluster.Status, 0, len(all))
	for _, c := range all {
		s, err := c.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("status %s: %w", c.Name(), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Switchover hands the primary role to node (cluster.Cluster.Switchover);
// node "" chooses the synchronous replica, else the first streaming one.
func (e *SocnetEngine) Switchover(ctx context.Context, clusterName, node string) (cluster.Outcome, error) {
	c, err := e.cluster(clusterName)
	if err != nil {
		return cluster.Outcome{}, err
	}
	if node == "" {
		s, err := c.Status(ctx)
		if err != nil {
			return cluster.Outcome{}, fmt.Errorf("switchover: %w", err)
		}
		if node = switchoverTarget(s); node == "" {
			return cluster.Outcome{}, &cluster.RefusedError{Op: OpSwitchover,
				Reason: fmt.Sprintf("cluster %s has no streaming replica to hand the primary role to", clusterName)}
		}
	}
	return c.Switchover(ctx, node)
}

// switchoverTarget is the replica a switchover without a target chooses:
// the synchronous one, else the first that streams.
func switchoverTarget(s cluster.Status) string {
	first := ""
	for _, n := range s.Nodes {
		if n.Role != cluster.RoleReplica || n.NeedsRejoin || n.SyncState == "" {
			continue
		}
		if n.SyncState == "sync" {
			return n.Name
		}
		if first == "" {
			first = n.Name
		}
	}
	return first
}

// Promote is cluster.Cluster.Promote.
func (e *SocnetEngine) Promote(ctx context.Context, clusterName, node string, force bool) (cluster.Outcome, error) {
	c, err := e.cluster(clusterName)
	if err != nil {
		return cluster.Outcome{}, err
	}
	return c.Promote(ctx, node, force)
}

// Rejoin is cluster.Cluster.Rejoin.
func (e *SocnetEngine) Rejoin(ctx context.Context, clusterName, node string) (cluster.Outcome, error) {
	c, err := e.cluster(clusterName)
	if err != nil {
		return cluster.Outcome{}, err
	}
	return c.Rejoin(ctx, node)
}

// StopCluster stops every node of the cluster; its supervisor leaves it
// alone until StartCluster.
func (e *SocnetEngine) StopCluster(ctx context.Context, clusterName string) (cluster.Outcome, error) {
	c, err := e.cluster(clusterName)
	if err != nil {
		return cluster.Outcome{}, err
	}
	if err := c.Stop(ctx); err != nil {
		return cluster.Outcome{}, err
	}
	return cluster.Outcome{Message: fmt.Sprintf("cluster %s stopped", clusterName)}, nil
}

// StartCluster starts the cluster again in its persisted roles, as a child
// of this process.
func (e *SocnetEngine) StartCluster(ctx context.Context, clusterName string) (cluster.Outcome, error) {
	c, err := e.cluster(clusterName)
	if err != nil {
		return cluster.Outcome{}, err
	}
	if err := c.Start(ctx); err != nil {
		return cluster.Outcome{}, err
	}
	e.mu.Lock()
	e.running[clusterName] = true
	e.mu.Unlock()
	return cluster.Outcome{Message: fmt.Sprintf("cluster %s started; primary %s", clusterName, c.Primary())}, nil
}

// forEach runs fn on every cluster at once and joins the errors.
func forEach(clusters []*cluster.Cluster, fn func(*cluster.Cluster) error) error {
	errs := make([]error, len(clusters))
	var wg sync.WaitGroup
	for i, cl := range clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(cl); err != nil {
				errs[i] = fmt.Errorf("cluster %s: %w", cl.Name(), err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
