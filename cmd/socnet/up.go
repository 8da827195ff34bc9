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
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/auth"
	"socnet/internal/cluster"
	"socnet/internal/counter"
	"socnet/internal/pgrole"
	"socnet/internal/postgres"
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
	httpAddr := fs.String("http", "127.0.0.1:8080", "address of the API")
	counterAddr := fs.String("counter-http", "127.0.0.1:8091", "address of the counter service")
	relayAddr := fs.String("relay-http", "127.0.0.1:8092", "address of the outbox relay's /metrics and /healthz")
	deadAfter := fs.Duration("dead-after", time.Second, "a primary failing its probes this long is failed over")
	if err := fs.parse(args); err != nil {
		return err
	}
	return up(ctx, e, upConfig{Home: *home, HTTP: *httpAddr, CounterHTTP: *counterAddr, RelayHTTP: *relayAddr, DeadAfter: *deadAfter})
}

type upConfig struct {
	Home        string
	HTTP        string
	CounterHTTP string
	RelayHTTP   string
	DeadAfter   time.Duration
}

// up runs the whole local stack until ctx ends: both clusters with their
// supervisor, the control socket, and the services, each restarted when it
// dies. On the end of ctx it stops the services, then the clusters.
func up(ctx context.Context, e *env, c upConfig) (err error) {
	home, err := filepath.Abs(c.Home)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	unlock, err := lockHome(home)
	if err != nil {
		return err
	}
	defer unlock()
	sec, err := loadUpSecrets(home)
	if err != nil {
		return err
	}

	opts := cluster.Options{DeadAfter: c.DeadAfter}
	mainC, err := cluster.Open(cluster.Dir(home, mainCluster), cluster.MainSpec(), e.log, opts)
	if err != nil {
		return err
	}
	counterC, err := cluster.Open(cluster.Dir(home, counterCluster), cluster.CounterSpec(), e.log, opts)
	if err != nil {
		return err
	}
	clusters := []*cluster.Cluster{mainC, counterC}
	fmt.Fprintf(e.stdout, "starting PostgreSQL clusters in %s (logs in %s)...\n", home, filepath.Join(home, "logs"))
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

	stack := stackInfo{
		API:          c.HTTP,
		Counter:      c.CounterHTTP,
		MainDB:       appDSNs(mainC, mainAppRole, sec.MainApp, mainDBName),
		MainAdmin:    adminDSNs(mainC, mainDBName),
		CounterDB:    appDSNs(counterC, counterAppRole, sec.CounterApp, counterDBName),
		CounterAdmin: adminDSNs(counterC, counterDBName),
	}
	if err := writeStack(home, stack); err != nil {
		return err
	}
	// The key the API and the relay sign their requests to counterd with.
	serviceKey := filepath.Join(home, "service.key")
	if _, err := auth.LoadOrCreateKey(serviceKey); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	keyEnv := "SOCNET_SERVICE_KEY_FILE=" + serviceKey
	logs := filepath.Join(home, "logs")
	counterURL := "http://" + c.CounterHTTP
	svcs := []*service{{
		Name: "counter",
		Args: []string{"counterd", "--http", c.CounterHTTP},
		// The dialogs database as administrator: scheduled reconciliation
		// (counterd's --reconcile-every) writes its repairs there.
		Env: []string{"SOCNET_DB=" + strings.Join(stack.CounterDB, " "), keyEnv,
			"SOCNET_MAIN_DB=" + strings.Join(stack.MainAdmin, " ")},
		Addr:    c.CounterHTTP,
		LogPath: filepath.Join(logs, "counterd.log"),
	}, {
		Name:    "relay",
		Args:    []string{"relay", "--counter", counterURL, "--http", c.RelayHTTP},
		Env:     []string{"SOCNET_MAIN_DB=" + strings.Join(stack.MainDB, " "), keyEnv},
		Addr:    c.RelayHTTP,
		LogPath: filepath.Join(logs, "relay.log"),
	}, {
		Name: "api",
		Args: []string{"serve", "--http", c.HTTP, "--key-file", filepath.Join(home, "token.key"),
			"--routing-file", routingPath(home), "--counter", counterURL},
		Env:     []string{"SOCNET_DB=" + strings.Join(stack.MainDB, " "), keyEnv},
		Addr:    c.HTTP,
		LogPath: filepath.Join(logs, "api.log"),
	}}
	var svcMu sync.Mutex
	saveServices := func() {
		svcMu.Lock()
		defer svcMu.Unlock()
		if err := writeServices(servicesPath(home), svcs); err != nil {
			e.log.Warn("write services.json", "err", err)
		}
	}
	defer os.Remove(servicesPath(home))
	svcCtx, stopServices := context.WithCancel(ctx)
	var svcWG sync.WaitGroup
	for _, s := range svcs {
		svcWG.Add(1)
		go func() {
			defer svcWG.Done()
			s.supervise(svcCtx, e.self, e.log, serviceGrace, saveServices)
		}()
	}
	// Services stop before the supervisors and the clusters (defers run in reverse).
	defer func() { stopServices(); svcWG.Wait() }()

	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for _, s := range svcs {
		if err := waitHTTPHealthy(rctx, "http://"+s.Addr+"/healthz"); err != nil {
			return fmt.Errorf("up: %s did not become healthy (see %s): %w", s.Name, s.LogPath, err)
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
	data, err := os.ReadFile(path)
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
		if err := writeFileAtomic(path, data, 0o600); err != nil {
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
	f, err := os.OpenFile(filepath.Join(home, "up.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("up: another `socnet up` runs on %s", home)
	}
	return func() { f.Close() }, nil
}
