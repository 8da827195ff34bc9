package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"socnet/internal/auth"
	"socnet/internal/netns"
	"socnet/internal/pgnode"
)

// Names of the stack's clusters, databases and application roles. Every
// engine runs the two clusters under these names.
const (
	MainCluster    = "main"
	CounterCluster = "counter"
	MainDB         = "socnet"
	MainAppRole    = "socnet_app"
	CounterDB      = "counter"
	CounterAppRole = "counter_app"
)

// Timing of `up`.
const (
	// ServiceGrace is how long a service may take to stop on SIGTERM.
	ServiceGrace = 10 * time.Second
	// readyTimeout bounds the wait for the services' first healthy answer.
	readyTimeout = 3 * time.Minute
)

// Environment of the services `up` runs.
const (
	// HomeEnv marks a service as a child of the stack in that home, so
	// that the next `up` can tell its leftovers from unrelated processes.
	HomeEnv = "SOCNET_STACK_HOME"
	// ServiceKeyEnv is the path of the key of the services' calls to each other.
	ServiceKeyEnv = "SOCNET_SERVICE_KEY_FILE"
)

// Config is what `up` needs besides its engine.
type Config struct {
	Home Home
	// HTTP is the API's address; port 0 picks a free port once.
	HTTP string
	// CounterHTTP and RelayHTTP are the counter service's and the relay's
	// addresses; "" keeps those chosen at the home's first start.
	CounterHTTP string
	RelayHTTP   string
	// Hosts is where the processes run: HostsLocal ("" too) or HostsNetns.
	Hosts string
	// Self is the socnet binary the services run as (`socnet serve`, ...).
	Self string
	Log  *slog.Logger
	// Out receives the progress an operator reads.
	Out io.Writer
}

// Up runs the whole local stack until ctx ends, then stops it in order:
//
//  1. take the home: refuse one another user could have written, lock it,
//     refuse one another engine made, stop what a killed `up` left running;
//  2. load or create the passwords, keys, internal ports and Redis config;
//  3. bring the engine's clusters up (created, or resumed as they are);
//  4. create the databases, apply the migrations, make the app roles;
//  5. let the engine supervise the clusters (failover, control socket);
//  6. write stack.json, then run the services, each restarted when it dies:
//     those others call (counter, Redis) first, the rest once they answer;
//  7. on the end of ctx stop the services, the supervision, the clusters.
func Up(ctx context.Context, c Config, eng Engine) error {
	h := c.Home
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := c.Out
	if out == nil {
		out = io.Discard
	}
	switch c.Hosts {
	case "", HostsLocal:
	case HostsNetns:
		// Root first, in one line, before the home is touched.
		if err := netns.Check(ctx); err != nil {
			return fmt.Errorf("up --hosts %s: %w", HostsNetns, err)
		}
		if _, ok := eng.(HostedEngine); !ok {
			return fmt.Errorf("up: the %s engine cannot run with --hosts %s yet", eng.Name(), HostsNetns)
		}
	default:
		return fmt.Errorf("up: --hosts %q: want %s or %s", c.Hosts, HostsLocal, HostsNetns)
	}
	if err := prepareHome(h); err != nil {
		return err
	}
	unlock, err := Lock(h)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	defer unlock()
	if err := recordEngine(h, eng.Name()); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	StopLeftovers(h, log, ServiceGrace)
	if err := checkHostsMode(h, c.Hosts); err != nil {
		return err
	}
	sec, err := loadSecrets(h)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	ports, err := loadPorts(h)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	var hosts *Hosts
	if c.Hosts == HostsNetns {
		hs, down, err := upHosts(ctx, h, eng, log)
		if err != nil {
			return err
		}
		defer down() // after the clusters and services stopped (defers run in reverse)
		hosts = hs
		fmt.Fprintf(out, "hosts: %d network namespaces %s-* on bridge %s (%s, the machine at %s)\n",
			len(hs.Net().Hosts()), hs.Net().Prefix(), hs.Net().Bridge(), hs.Net().Subnet(), hs.Net().BridgeAddr())
	}
	if err := resolveAddrs(h, &c, ports, hosts != nil); err != nil {
		return err
	}
	ports = placePorts(ports, hosts)
	c.CounterHTTP = onHost(c.CounterHTTP, hosts, HostCounter)
	c.RelayHTTP = onHost(c.RelayHTTP, hosts, HostRelay)
	// Both keys are checked (owner, mode) before any service reads them.
	if _, err := auth.LoadOrCreateKey(h.TokenKey()); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if _, err := auth.LoadOrCreateKey(h.ServiceKeyFile()); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := prepareRedis(h, ports.Redis); err != nil {
		return fmt.Errorf("up: %w", err)
	}

	fmt.Fprintf(out, "starting PostgreSQL clusters (%s engine) in %s (logs in %s)...\n", eng.Name(), h.Dir, h.Logs())
	started := time.Now()
	if err := eng.Up(ctx); err != nil {
		stopEngine(eng, log)
		return fmt.Errorf("up: %w", err)
	}
	defer stopEngine(eng, log)
	fmt.Fprintf(out, "clusters up in %s\n", time.Since(started).Round(time.Millisecond))

	if err := prepareDatabases(ctx, eng, sec, log); err != nil {
		return fmt.Errorf("up: %w", err)
	}

	// The engine's supervision lives as long as the stack.
	var supWG sync.WaitGroup
	defer supWG.Wait()
	sctx, stopSupervision := context.WithCancel(ctx)
	defer stopSupervision()
	supWG.Add(1)
	go func() {
		defer supWG.Done()
		if err := eng.Supervise(sctx); err != nil && sctx.Err() == nil {
			log.Error("supervision stopped", "engine", eng.Name(), "err", err)
		}
	}()

	info, err := stackInfo(h, c, eng, sec, ports)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := WriteInfo(h, info); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	svcs := stackServices(h, c, info, ports, hosts)
	var svcMu sync.Mutex
	var proxyRec *Service // HAProxy, in netns mode
	saveServices := func() {
		svcMu.Lock()
		defer svcMu.Unlock()
		if err := writeServices(h.Services(), svcs, proxyRec); err != nil {
			log.Warn("write services.json", "err", err)
		}
	}
	defer os.Remove(h.Services())
	svcCtx, stopServices := context.WithCancel(ctx)
	var svcWG sync.WaitGroup
	// Services stop before the supervision and the clusters (defers run in reverse).
	defer func() { stopServices(); svcWG.Wait() }()

	// The services others call (counter, redis) start first; the rest start
	// once those answer, so that the API's /healthz, which whoever started
	// `up` polls, answers only when the calls it makes can succeed.
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for _, stage := range [][]*service{
		slices.DeleteFunc(slices.Clone(svcs), func(s *service) bool { return !s.Called }),
		slices.DeleteFunc(slices.Clone(svcs), func(s *service) bool { return s.Called }),
	} {
		for _, s := range stage {
			svcWG.Add(1)
			go func() {
				defer svcWG.Done()
				s.supervise(svcCtx, c.Self, log, ServiceGrace, saveServices)
			}()
		}
		for _, s := range stage {
			if err := s.waitHealthy(rctx); err != nil {
				return fmt.Errorf("up: %w", err)
			}
		}
	}
	if hosts != nil {
		// HAProxy on --http in the machine's namespace, over the API
		// instances; it lives as long as the services.
		svcWG.Add(1)
		started := make(chan error, 1)
		go func() {
			defer svcWG.Done()
			runProxy(svcCtx, rctx, h, c.HTTP, apiBackends(svcs), log, started, func(r *Service) {
				svcMu.Lock()
				proxyRec = r
				svcMu.Unlock()
				saveServices()
			})
		}()
		if err := <-started; err != nil {
			return fmt.Errorf("up: %w", err)
		}
	}
	cancel()
	fmt.Fprintf(out, "socnet is up: API on http://%s (ready in %s)\n", c.HTTP, time.Since(started).Round(time.Millisecond))
	fmt.Fprintf(out, "  try: curl -s 'http://%s/user/search?first_name=Ко&last_name=Ос'\n", c.HTTP)
	fmt.Fprintf(out, "  state: socnet status --home %s; stop: Ctrl-C\n", h.Dir)
	<-ctx.Done()
	fmt.Fprintln(out, "stopping socnet...")
	return nil
}

// resolveAddrs fills the services' addresses: the internal ones kept in the
// home, a free port for an API on port 0. It refuses an address another
// process holds, which would let it answer our health checks.
//
// On hosts of their own (onHosts) only the API's address, HAProxy's in
// the machine's namespace, is checked: the others are on new hosts.
func resolveAddrs(h Home, c *Config, ports Ports, onHosts bool) error {
	if c.CounterHTTP == "" {
		c.CounterHTTP = ports.Counter
	}
	if c.RelayHTTP == "" {
		c.RelayHTTP = ports.Relay
	}
	if host, port, err := net.SplitHostPort(c.HTTP); err == nil && port == "0" {
		// The services' address is recorded for status, drills and load:
		// port 0 is resolved here, once, rather than by the API's listener.
		p, err := pgnode.FreePort()
		if err != nil {
			return fmt.Errorf("up: %w", err)
		}
		c.HTTP = net.JoinHostPort(host, strconv.Itoa(p))
	}
	addrs := []struct{ name, addr string }{{"api", c.HTTP}, {"counter", c.CounterHTTP}, {"relay", c.RelayHTTP}}
	if onHosts {
		addrs = addrs[:1]
	}
	for _, a := range addrs {
		if err := checkAddrFree(a.addr); err != nil {
			return fmt.Errorf("up: %s cannot listen on %s: %w (another process holds it: stop it, or pass another address; removing %s picks new internal ports)", a.name, a.addr, err, h.Ports())
		}
	}
	return nil
}

// stackInfo is stack.json for the running stack: the app DSNs of every
// node, the administrator's through the home's passfile.
func stackInfo(h Home, c Config, eng Engine, sec secrets, ports Ports) (Info, error) {
	mainAdmin, err := PassfileDSNs(h.PassFile(), adminDSNs(eng, MainCluster, MainDB))
	if err != nil {
		return Info{}, err
	}
	counterAdmin, err := PassfileDSNs(h.PassFile(), adminDSNs(eng, CounterCluster, CounterDB))
	if err != nil {
		return Info{}, err
	}
	return Info{
		Engine:       eng.Name(),
		API:          c.HTTP,
		Counter:      c.CounterHTTP,
		MainDB:       appDSNs(eng.Nodes(MainCluster), MainAppRole, sec.MainApp, MainDB),
		MainAdmin:    mainAdmin,
		CounterDB:    appDSNs(eng.Nodes(CounterCluster), CounterAppRole, sec.CounterApp, CounterDB),
		CounterAdmin: counterAdmin,
		Redis:        ports.Redis,
		Hosts:        hostsRecord(c.Hosts),
	}, nil
}

// stackServices are the services `up` runs, each told where the others
// are. On hosts of their own (hosts not nil) each runs on its host, and
// the API runs as APIInstances instances, api-1, api-2, ..., on the port
// of --http, behind HAProxy.
func stackServices(h Home, c Config, info Info, p Ports, hosts *Hosts) []*service {
	counterURL := "http://" + c.CounterHTTP
	common := []string{HomeEnv + "=" + h.Dir, ServiceKeyEnv + "=" + h.ServiceKeyFile()}
	redisEnv := []string{"SOCNET_REDIS_ADDR=" + p.Redis, "SOCNET_REDIS_PASSWORD_FILE=" + h.RedisPassword()}
	apiArgs := []string{"--key-file", h.TokenKey(), "--routing-file", h.Routing(), "--counter", counterURL}
	if hosts != nil {
		// Behind HAProxy: the client's address is in X-Forwarded-For,
		// believed from HAProxy's address only (limits per client).
		apiArgs = append(apiArgs, "--trusted-proxies", hosts.ProxyAddr())
	}
	api := func(name, addr string) *service {
		return &service{
			Name:     name,
			Args:     append([]string{"serve", "--http", addr}, apiArgs...),
			Env:      slices.Concat([]string{"SOCNET_DB=" + strings.Join(info.MainDB, " ")}, redisEnv, common),
			Addr:     addr,
			LogPath:  h.Log(name),
			Host:     name,
			Balanced: true,
		}
	}
	var apis []*service
	if hosts == nil {
		apis = []*service{api("api", c.HTTP)}
	} else {
		_, port, _ := net.SplitHostPort(c.HTTP)
		for i := 1; i <= APIInstances; i++ {
			apis = append(apis, api(apiHost(i), net.JoinHostPort(hosts.Addr(apiHost(i)), port)))
		}
	}
	svcs := []*service{{
		Name: "counter",
		Args: []string{"counterd", "--http", c.CounterHTTP},
		// The dialogs database as administrator: scheduled reconciliation
		// (counterd's --reconcile-every) writes its repairs there.
		Env: append([]string{"SOCNET_DB=" + strings.Join(info.CounterDB, " "),
			"SOCNET_MAIN_DB=" + strings.Join(info.MainAdmin, " ")}, common...),
		Addr:    c.CounterHTTP,
		LogPath: h.Log("counterd"),
		Called:  true,
		Host:    HostCounter,
	}, {
		Name:    "relay",
		Args:    []string{"relay", "--counter", counterURL, "--http", c.RelayHTTP},
		Env:     append([]string{"SOCNET_MAIN_DB=" + strings.Join(info.MainDB, " ")}, common...),
		Addr:    c.RelayHTTP,
		LogPath: h.Log("relay"),
		Host:    HostRelay,
	}}
	svcs = append(svcs, apis...)
	svcs = append(svcs, &service{
		// The feed's Redis, run by `socnet feed redis`, which answers
		// /healthz while Redis answers PING.
		Name:    "redis",
		Args:    []string{"feed", "redis", "--home", h.Dir, "--redis-addr", p.Redis, "--http", p.RedisHealth},
		Env:     common,
		Addr:    p.RedisHealth,
		LogPath: h.Log("redis"),
		Called:  true,
		Host:    HostRedis,
	}, &service{
		Name:    "feed-worker",
		Args:    []string{"feed", "work", "--http", p.Feed},
		Env:     slices.Concat([]string{"SOCNET_MAIN_DB=" + strings.Join(info.MainDB, " ")}, redisEnv, common),
		Addr:    p.Feed,
		LogPath: h.Log("feed-worker"),
		Host:    HostFeedWorker,
	})
	for _, s := range svcs {
		s.hosts = hosts
	}
	return svcs
}

// onHost moves addr to host's address, keeping its port; unchanged in
// local mode.
func onHost(addr string, hosts *Hosts, host string) string {
	if hosts == nil {
		return addr
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(hosts.Addr(host), port)
}

// placePorts moves the internal services' addresses to their hosts.
func placePorts(p Ports, hosts *Hosts) Ports {
	p.Counter = onHost(p.Counter, hosts, HostCounter)
	p.Relay = onHost(p.Relay, hosts, HostRelay)
	p.Redis = onHost(p.Redis, hosts, HostRedis)
	p.RedisHealth = onHost(p.RedisHealth, hosts, HostRedis)
	p.Feed = onHost(p.Feed, hosts, HostFeedWorker)
	return p
}

// stopEngine stops the engine's clusters, bounded.
func stopEngine(eng Engine, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := eng.Stop(ctx); err != nil {
		log.Error("stop clusters", "engine", eng.Name(), "err", err)
	}
}

// prepareHome refuses a home that another local user could have written
// (CheckHome) and creates a missing one, 0700.
func prepareHome(h Home) error {
	if err := CheckHome(h, HomeOwners()); err != nil {
		return fmt.Errorf("up: refusing home: %w", err)
	}
	if _, err := os.Lstat(h.Dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(h.Dir, 0o700); err != nil {
			return fmt.Errorf("up: %w", err)
		}
		// The umask cannot loosen 0700, but a home socnet made is its to tighten.
		if err := os.Chmod(h.Dir, 0o700); err != nil {
			return fmt.Errorf("up: %w", err)
		}
	}
	return nil
}

// Lock takes the home's exclusive lock, so that two processes never run
// the same clusters; the returned function releases it.
func Lock(h Home) (func(), error) {
	f, err := os.OpenFile(h.Lock(), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", h.Dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another `socnet up` runs on %s", h.Dir)
	}
	return func() { f.Close() }, nil
}
