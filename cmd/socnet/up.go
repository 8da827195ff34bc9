package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/auth"
	"socnet/internal/cluster"
	"socnet/internal/counter"
	"socnet/internal/pgnode"
	"socnet/internal/pgrole"
	"socnet/internal/postgres"
	"socnet/internal/stack"
)

// Database and role names of the local stack.
const (
	mainDBName     = "socnet"
	mainAppRole    = "socnet_app"
	counterDBName  = "counter"
	counterAppRole = "counter_app"
	serviceGrace   = 10 * time.Second
	readyTimeout   = 3 * time.Minute
	mainCluster    = "main"
	counterCluster = "counter"
)

// upSecrets are the passwords `up` creates once and keeps under home (0600).
type upSecrets struct {
	MainApp    string `json:"main_app_password"`
	CounterApp string `json:"counter_app_password"`
}

func cmdUp(ctx context.Context, e *env, args []string) error {
	fs := newFlags("up", e)
	home := fs.HomeDir()
	httpAddr := fs.String("http", "127.0.0.1:8080", "address of the API (port 0: a free port, printed once up)")
	counterAddr := fs.String("counter-http", "", "address of the counter service (default: a free port chosen at first start and kept in the home)")
	relayAddr := fs.String("relay-http", "", "address of the outbox relay's /metrics and /healthz (default: a free port chosen at first start and kept in the home)")
	deadAfter := fs.Duration("dead-after", time.Second, "a primary failing its probes this long is failed over")
	sharedBuffers := fs.String("main-shared-buffers", cluster.MainSpec().Settings["shared_buffers"], "shared_buffers of the main cluster's nodes, when it is created")
	if err := fs.parse(args); err != nil {
		return err
	}
	return up(ctx, e, upConfig{Home: *home, HTTP: *httpAddr, CounterHTTP: *counterAddr, RelayHTTP: *relayAddr,
		DeadAfter: *deadAfter, MainSharedBuffers: *sharedBuffers})
}

type upConfig struct {
	Home        string
	HTTP        string
	CounterHTTP string // "": the port kept in the home's ports.json
	RelayHTTP   string // "": the port kept in the home's ports.json
	DeadAfter   time.Duration
	// MainSharedBuffers is the main nodes' shared_buffers at creation.
	MainSharedBuffers string
}

// Environment of the services `up` runs.
const (
	// stackHomeEnv marks a service as a child of the stack in that home, so
	// that the next `up` can tell its leftovers from unrelated processes.
	stackHomeEnv = "SOCNET_STACK_HOME"
	// serviceKeyEnv is the path of the key of the services' calls to each other.
	serviceKeyEnv = "SOCNET_SERVICE_KEY_FILE"
)

// up runs the whole local stack until ctx ends: both clusters with their
// supervisor, the control socket, and the services, each restarted when it
// dies. On the end of ctx it stops the services, then the clusters.
func up(ctx context.Context, e *env, c upConfig) (err error) {
	h, err := stack.NewHome(c.Home)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	home := h.Dir
	if err := prepareHome(h); err != nil {
		return err
	}
	unlock, err := lockHome(home)
	if err != nil {
		return err
	}
	defer unlock()
	stopLeftovers(h, e.log, serviceGrace)
	sec, err := loadUpSecrets(home)
	if err != nil {
		return err
	}
	ports, err := loadPorts(h)
	if err != nil {
		return err
	}
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
	// A port held by another process would let it answer our health
	// checks: refuse it before starting anything.
	for _, a := range []struct{ name, addr string }{{"api", c.HTTP}, {"counter", c.CounterHTTP}, {"relay", c.RelayHTTP}} {
		if err := checkAddrFree(a.addr); err != nil {
			return fmt.Errorf("up: %s cannot listen on %s: %w (another process holds it: stop it, or pass another address; removing %s picks new internal ports)", a.name, a.addr, err, h.Ports())
		}
	}
	// Both keys are checked (owner, mode) before any service reads them.
	if _, err := auth.LoadOrCreateKey(h.TokenKey()); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if _, err := auth.LoadOrCreateKey(h.ServiceKeyFile()); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := prepareRedis(h, ports.Redis); err != nil {
		return err
	}

	opts := cluster.Options{DeadAfter: c.DeadAfter}
	mainSpec := cluster.MainSpec()
	if c.MainSharedBuffers != "" {
		mainSpec.Settings["shared_buffers"] = c.MainSharedBuffers
	}
	mainC, err := cluster.Open(cluster.Dir(home, mainCluster), mainSpec, e.log, opts)
	if err != nil {
		return err
	}
	counterC, err := cluster.Open(cluster.Dir(home, counterCluster), cluster.CounterSpec(), e.log, opts)
	if err != nil {
		return err
	}
	clusters := []*cluster.Cluster{mainC, counterC}
	if _, err := stack.PassfileDSNs(h.PassFile(), append(adminDSNs(mainC, "postgres"), adminDSNs(counterC, "postgres")...)); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	fmt.Fprintf(e.stdout, "starting PostgreSQL clusters in %s (logs in %s)...\n", home, h.Logs())
	started := time.Now()
	if err := forEach(clusters, func(cl *cluster.Cluster) error { return cl.Up(ctx) }); err != nil {
		stopClusters(e, clusters)
		return fmt.Errorf("up: %w", err)
	}
	defer stopClusters(e, clusters)
	fmt.Fprintf(e.stdout, "clusters up in %s\n", time.Since(started).Round(time.Millisecond))

	if err := prepareMainDB(ctx, e, mainC, sec.MainApp); err != nil {
		return err
	}
	if err := prepareCounterDB(ctx, e, counterC, sec.CounterApp); err != nil {
		return err
	}

	// The supervisors and the control socket live as long as the stack.
	var wg sync.WaitGroup
	defer wg.Wait()
	sctx, stopSupervisors := context.WithCancel(ctx)
	defer stopSupervisors()
	for _, cl := range clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cl.Supervise(sctx); err != nil && sctx.Err() == nil {
				e.log.Error("supervisor stopped", "cluster", cl.Name(), "err", err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		byName := map[string]*cluster.Cluster{mainCluster: mainC, counterCluster: counterC}
		if err := cluster.ServeControl(sctx, cluster.ControlSocket(home), byName); err != nil && sctx.Err() == nil {
			e.log.Error("control socket stopped", "err", err)
		}
	}()

	mainAdmin, err := stack.PassfileDSNs(h.PassFile(), adminDSNs(mainC, mainDBName))
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	counterAdmin, err := stack.PassfileDSNs(h.PassFile(), adminDSNs(counterC, counterDBName))
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	info := stackInfo{
		API:          c.HTTP,
		Counter:      c.CounterHTTP,
		MainDB:       appDSNs(mainC, mainAppRole, sec.MainApp, mainDBName),
		MainAdmin:    mainAdmin,
		CounterDB:    appDSNs(counterC, counterAppRole, sec.CounterApp, counterDBName),
		CounterAdmin: counterAdmin,
		Redis:        ports.Redis,
	}
	if err := writeStack(home, info); err != nil {
		return err
	}
	counterURL := "http://" + c.CounterHTTP
	common := []string{stackHomeEnv + "=" + home, serviceKeyEnv + "=" + h.ServiceKeyFile()}
	feedSvcs, feedEnv := feedServices(h, ports, info.MainDB, common)
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
	}, {
		Name:    "relay",
		Args:    []string{"relay", "--counter", counterURL, "--http", c.RelayHTTP},
		Env:     append([]string{"SOCNET_MAIN_DB=" + strings.Join(info.MainDB, " ")}, common...),
		Addr:    c.RelayHTTP,
		LogPath: h.Log("relay"),
	}, {
		Name: "api",
		Args: []string{"serve", "--http", c.HTTP, "--key-file", h.TokenKey(),
			"--routing-file", h.Routing(), "--counter", counterURL},
		Env:     slices.Concat([]string{"SOCNET_DB=" + strings.Join(info.MainDB, " ")}, feedEnv, common),
		Addr:    c.HTTP,
		LogPath: h.Log("api"),
	}}
	svcs = append(svcs, feedSvcs...)
	var svcMu sync.Mutex
	saveServices := func() {
		svcMu.Lock()
		defer svcMu.Unlock()
		if err := writeServices(h.Services(), svcs); err != nil {
			e.log.Warn("write services.json", "err", err)
		}
	}
	defer os.Remove(h.Services())
	svcCtx, stopServices := context.WithCancel(ctx)
	var svcWG sync.WaitGroup
	// Services stop before the supervisors and the clusters (defers run in reverse).
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
				s.supervise(svcCtx, e.self, e.log, serviceGrace, saveServices)
			}()
		}
		for _, s := range stage {
			if err := s.waitHealthy(rctx); err != nil {
				return fmt.Errorf("up: %w", err)
			}
		}
	}
	cancel()
	fmt.Fprintf(e.stdout, "socnet is up: API on http://%s (ready in %s)\n", c.HTTP, time.Since(started).Round(time.Millisecond))
	fmt.Fprintf(e.stdout, "  try: curl -s 'http://%s/user/search?first_name=Ко&last_name=Ос'\n", c.HTTP)
	fmt.Fprintf(e.stdout, "  state: socnet status --home %s; stop: Ctrl-C\n", home)
	<-ctx.Done()
	fmt.Fprintln(e.stdout, "stopping socnet...")
	return nil
}

// prepareHome refuses a home that another local user could have written
// (stack.CheckHome) and creates a missing one, 0700.
func prepareHome(h stack.Home) error {
	if err := stack.CheckHome(h, homeOwners()); err != nil {
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

// homeOwners is who may own what in a home: the user running socnet, and
// PostgreSQL's OS account when socnet runs as root.
func homeOwners() stack.Owners {
	o := stack.Owners{UID: os.Geteuid(), DataUID: -1}
	if name := pgnode.OSUser(); name != "" {
		if u, err := user.Lookup(name); err == nil {
			if uid, err := strconv.Atoi(u.Uid); err == nil {
				o.DataUID = uid
			}
		}
	}
	return o
}

// upPorts are the internal services' addresses, chosen free at first start
// and kept in the home so that two stacks on one machine never collide and
// a restarted stack keeps its addresses.
type upPorts struct {
	Counter string `json:"counter"`
	Relay   string `json:"relay"`
	// The feed's: Redis, its /healthz, the feed worker's /metrics.
	Redis       string `json:"redis"`
	RedisHealth string `json:"redis_health"`
	Feed        string `json:"feed_worker"`
}

func loadPorts(h stack.Home) (upPorts, error) {
	var p upPorts
	data, err := stack.ReadFile(h.Ports())
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &p); err != nil {
			return p, fmt.Errorf("up: read %s: %w", h.Ports(), err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return p, fmt.Errorf("up: %w", err)
	}
	changed := false
	for _, a := range []*string{&p.Counter, &p.Relay, &p.Redis, &p.RedisHealth, &p.Feed} {
		if *a != "" {
			continue
		}
		port, err := pgnode.FreePort()
		if err != nil {
			return p, fmt.Errorf("up: %w", err)
		}
		*a, changed = net.JoinHostPort(cluster.Host, strconv.Itoa(port)), true
	}
	if changed {
		data, _ := json.MarshalIndent(p, "", "  ")
		if err := stack.WriteFile(h.Ports(), data, 0o600); err != nil {
			return p, fmt.Errorf("up: %w", err)
		}
	}
	return p, nil
}

// prepareMainDB creates the social database on the main primary, applies
// the migrations as the administrator and makes the API's role.
func prepareMainDB(ctx context.Context, e *env, c *cluster.Cluster, appPassword string) error {
	if err := createDatabase(ctx, c.PrimaryDSN("postgres"), mainDBName); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	admin := c.PrimaryDSN(mainDBName)
	if err := postgres.Migrate(ctx, admin, e.log); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := postgres.EnsureAppRole(ctx, admin, mainAppRole, appPassword); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return nil
}

// prepareCounterDB creates the counter service's database on the counter
// primary, applies its migrations and makes its role.
func prepareCounterDB(ctx context.Context, e *env, c *cluster.Cluster, appPassword string) error {
	if err := createDatabase(ctx, c.PrimaryDSN("postgres"), counterDBName); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	admin := []string{c.PrimaryDSN(counterDBName)}
	if err := counter.Migrate(ctx, admin, e.log); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	conn, err := pgx.Connect(ctx, admin[0])
	if err != nil {
		return fmt.Errorf("up: counter role: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := pgrole.Ensure(ctx, conn, counterAppRole, appPassword, "NOSUPERUSER NOCREATEDB NOCREATEROLE"); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := counter.GrantAppRole(ctx, admin, counterAppRole); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return nil
}

// createDatabase creates database name unless it exists.
func createDatabase(ctx context.Context, adminDSN, name string) error {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// appDSNs returns the application's DSN for every node of the cluster.
func appDSNs(c *cluster.Cluster, role, password, db string) []string {
	var out []string
	for _, name := range c.Nodes() {
		port := c.Node(name).Config().Port
		u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password),
			Host: net.JoinHostPort(cluster.Host, strconv.Itoa(port)), Path: "/" + db, RawQuery: "sslmode=disable"}
		out = append(out, u.String())
	}
	return out
}

// adminDSNs returns the administrator's DSN of database db on every node.
func adminDSNs(c *cluster.Cluster, db string) []string {
	var out []string
	for _, name := range c.Nodes() {
		out = append(out, c.Node(name).DSN(db))
	}
	return out
}

func stopClusters(e *env, clusters []*cluster.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := forEach(clusters, func(cl *cluster.Cluster) error { return cl.Stop(ctx) }); err != nil {
		e.log.Error("stop clusters", "err", err)
	}
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

func loadUpSecrets(home string) (upSecrets, error) {
	path := filepath.Join(home, "secrets.json")
	var s upSecrets
	data, err := stack.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &s); err != nil {
			return s, fmt.Errorf("read %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return s, err
	}
	changed := false
	for _, p := range []*string{&s.MainApp, &s.CounterApp} {
		if *p == "" {
			*p = randomPassword()
			changed = true
		}
	}
	if changed {
		data, _ := json.MarshalIndent(s, "", "  ")
		if err := stack.WriteFile(path, data, 0o600); err != nil {
			return s, err
		}
	}
	return s, nil
}

func randomPassword() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockHome takes an exclusive lock on home so that two `up` never run the
// same clusters.
func lockHome(home string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(home, stack.LockFile), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("up: another `socnet up` runs on %s", home)
	}
	return func() { f.Close() }, nil
}
