package stack

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/netns"
)

// Where the stack's processes run (`up --hosts`).
const (
	// HostsLocal runs everything on the machine's own network, on
	// cluster.Host (127.0.0.1).
	HostsLocal = "local"
	// HostsNetns runs every PostgreSQL node and every service on a host of
	// its own: a network namespace on a bridge (internal/netns).
	HostsNetns = "netns"
)

// The hosts of the services in netns mode; the engine adds its own
// (HostedEngine.HostNames).
const (
	HostCounter    = "counterd"
	HostRelay      = "relay"
	HostRedis      = "redis"
	HostFeedWorker = "feed-worker"
)

// APIInstances is how many API instances run behind HAProxy in netns
// mode, each on its host api-1, api-2, ...
const APIInstances = 2

// apiHost is the host (and service name) of the i-th API instance, from 1.
func apiHost(i int) string { return fmt.Sprintf("api-%d", i) }

// serviceHosts are the services' hosts in netns mode.
func serviceHosts() []string {
	hs := []string{HostCounter, HostRelay, HostRedis, HostFeedWorker}
	for i := 1; i <= APIInstances; i++ {
		hs = append(hs, apiHost(i))
	}
	return hs
}

// Hosts is where the stack's processes run. The nil *Hosts is `--hosts
// local`: every process on the machine's own network, on cluster.Host.
// Otherwise each host is a network namespace with its own address on a
// bridge that the machine's own namespace also reaches.
type Hosts struct {
	net *netns.Net
}

// Net is the namespaces' layout; nil in local mode.
func (h *Hosts) Net() *netns.Net {
	if h == nil {
		return nil
	}
	return h.net
}

// Addr is host's address: cluster.Host in local mode.
func (h *Hosts) Addr(host string) string {
	if h == nil {
		return cluster.Host
	}
	a, ok := h.net.Addr(host)
	if !ok {
		// A host missing from the plan is a programming error: the plan
		// is made from the same lists the callers use.
		panic(fmt.Sprintf("stack: host %q is not in the plan", host))
	}
	return a.String()
}

// Netns is host's network namespace, "" in local mode.
func (h *Hosts) Netns(host string) string {
	if h == nil {
		return ""
	}
	return h.net.Netns(host)
}

// ClientNet is the network PostgreSQL admits scram logins from: the
// bridge's /24; "" in local mode (loopback only).
func (h *Hosts) ClientNet() string {
	if h == nil {
		return ""
	}
	return h.net.Subnet().String()
}

// ProxyAddr is the address HAProxy, in the machine's namespace, reaches
// the hosts from: the bridge's; "" in local mode.
func (h *Hosts) ProxyAddr() string {
	if h == nil {
		return ""
	}
	return h.net.BridgeAddr().String()
}

// Placement is where node, named after its host, runs.
func (h *Hosts) Placement(node string) cluster.Placement {
	if h == nil {
		return cluster.Placement{}
	}
	return cluster.Placement{Host: h.Addr(node), Netns: h.Netns(node), ClientNet: h.ClientNet()}
}

// Command returns a command that runs name on host: inside its namespace
// (`ip netns exec`, which execs name in its own place, so the Cmd's
// process is name itself) or, in local mode, directly.
func (h *Hosts) Command(host, name string, args ...string) *exec.Cmd {
	if h == nil {
		return exec.Command(name, args...)
	}
	return netns.Exec(context.Background(), h.Netns(host), name, args...)
}

// HostedEngine is an engine that can run on hosts of their own (`up
// --hosts netns`). `up` asks it for the hosts it needs, makes them
// together with the services' hosts, and tells it where they are with
// Place before it calls Up.
//
// The socnet engine needs one host per PostgreSQL node, named after the
// node (main-1, ..., counter-2), and places each node there with
// Hosts.Placement. The Patroni engine must return the same node hosts
// (each node's agent runs on its node's host, started with
// Hosts.Command) plus one host per etcd member (etcd-1, etcd-2, etcd-3,
// so that a partition can cost a quorum); its etcd members listen on
// Hosts.Addr of their host, its agents reach them there, and NodeAddr.Host
// and NodeAddr.Netns it reports are those of the node's host.
type HostedEngine interface {
	Engine
	// HostNames are the hosts the engine's processes need. Names are
	// lower-case letters, digits and dashes, and must not be a service's
	// host (counterd, relay, redis, feed-worker, api-N).
	HostNames() []string
	// Place tells the engine where its hosts are. It is called once,
	// before Up, and h stays valid until Stop returns.
	Place(h *Hosts)
}

// upHosts brings up the hosts of netns mode: it removes what a killed
// `up` of the same home left (the home is locked, so no running stack
// owns them), then makes one host per engine host and service. The
// returned function removes them.
func upHosts(ctx context.Context, h Home, eng Engine, log *slog.Logger) (*Hosts, func(), error) {
	he, ok := eng.(HostedEngine)
	if !ok {
		return nil, nil, fmt.Errorf("up: the %s engine cannot run with --hosts %s yet", eng.Name(), HostsNetns)
	}
	if err := netns.Cleanup(ctx, h.Dir); err != nil {
		return nil, nil, fmt.Errorf("up: remove the hosts of a previous run: %w", err)
	}
	n, err := netns.Plan(h.Dir, append(he.HostNames(), serviceHosts()...))
	if err != nil {
		return nil, nil, fmt.Errorf("up: %w", err)
	}
	down := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.Down(ctx); err != nil {
			log.Error("remove hosts", "err", err)
		}
	}
	if err := n.Up(ctx); err != nil {
		down()
		return nil, nil, fmt.Errorf("up: %w", err)
	}
	hosts := &Hosts{net: n}
	he.Place(hosts)
	return hosts, down, nil
}

// placeAsPlanned places the engine of a stopped home that last ran on hosts
// of its own on the hosts as planned (netns.Plan: the names, and the
// subnet the next `up` prefers and almost always gets), so that its status
// names the nodes' hosts rather than the machine's loopback. It creates
// nothing.
func placeAsPlanned(h Home, eng Engine) {
	he, ok := eng.(HostedEngine)
	if !ok {
		return
	}
	if info, err := ReadInfo(h); err != nil || info.Hosts != HostsNetns {
		return
	}
	if n, err := netns.Plan(h.Dir, append(he.HostNames(), serviceHosts()...)); err == nil {
		he.Place(&Hosts{net: n})
	}
}

// hostsRecord is the hosts mode as stack.json records it.
func hostsRecord(mode string) string {
	if mode == HostsNetns {
		return HostsNetns
	}
	return ""
}

// checkHostsMode refuses to start on the machine's own network a home
// whose nodes were last on hosts of their own: their pg_hba.conf admits
// the bridge's network only (it is rewritten at each start on hosts, not
// on loopback). The other way round is fine.
func checkHostsMode(h Home, mode string) error {
	info, err := ReadInfo(h)
	if err != nil || !clustersExist(h) {
		return nil
	}
	if info.Hosts == HostsNetns && hostsRecord(mode) == "" {
		return fmt.Errorf("up: %s last ran with --hosts %s (its nodes admit logins from the hosts' network only): start it with --hosts %s, or use another --home",
			h.Dir, HostsNetns, HostsNetns)
	}
	if info.Engine == EnginePatroni && info.Hosts != HostsNetns && hostsRecord(mode) == HostsNetns {
		return fmt.Errorf("up: %s ran the patroni engine on this machine's network: its clusters' state is in a one-member etcd there, which --hosts %s would replace with three empty members; start it without --hosts, or use another --home",
			h.Dir, HostsNetns)
	}
	return nil
}
