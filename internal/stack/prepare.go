package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/counter"
	"socnet/internal/feed"
	"socnet/internal/pgnode"
	"socnet/internal/pgrole"
	"socnet/internal/postgres"
)

// HomeOwners is who may own what in a home: the user running socnet, and
// PostgreSQL's OS account when socnet runs as root.
func HomeOwners() Owners {
	o := Owners{UID: os.Geteuid(), DataUID: -1}
	if name := pgnode.OSUser(); name != "" {
		if u, err := user.Lookup(name); err == nil {
			if uid, err := strconv.Atoi(u.Uid); err == nil {
				o.DataUID = uid
			}
		}
	}
	return o
}

// Ports are the internal services' addresses (ports.json), chosen free at
// first start and kept in the home so that two stacks on one machine never
// collide and a restarted stack keeps its addresses.
type Ports struct {
	Counter string `json:"counter"`
	Relay   string `json:"relay"`
	// The feed's: Redis, its /healthz, the feed worker's /metrics.
	Redis       string `json:"redis"`
	RedisHealth string `json:"redis_health"`
	Feed        string `json:"feed_worker"`
}

// loadPorts reads ports.json, choosing and recording the missing ports.
func loadPorts(h Home) (Ports, error) {
	var p Ports
	data, err := ReadFile(h.Ports())
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &p); err != nil {
			return p, fmt.Errorf("read %s: %w", h.Ports(), err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return p, err
	}
	changed := false
	for _, a := range []*string{&p.Counter, &p.Relay, &p.Redis, &p.RedisHealth, &p.Feed} {
		if *a != "" {
			if _, port, err := net.SplitHostPort(*a); err == nil {
				if n, err := strconv.Atoi(port); err == nil {
					pgnode.RenewPorts(n)
				}
			}
			continue
		}
		port, err := pgnode.FreePort()
		if err != nil {
			return p, err
		}
		*a, changed = net.JoinHostPort(cluster.Host, strconv.Itoa(port)), true
	}
	if changed {
		data, _ := json.MarshalIndent(p, "", "  ")
		if err := WriteFile(h.Ports(), data, 0o600); err != nil {
			return p, err
		}
	}
	return p, nil
}

// secrets are the application roles' passwords (secrets.json, 0600),
// created once.
type secrets struct {
	MainApp    string `json:"main_app_password"`
	CounterApp string `json:"counter_app_password"`
}

func loadSecrets(h Home) (secrets, error) {
	path := h.Secrets()
	var s secrets
	data, err := ReadFile(path)
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
		if err := WriteFile(path, data, 0o600); err != nil {
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

// prepareRedis creates the home's Redis directory (0700), its password
// (0600, made once) and its config (0600: it holds the password), for a
// Redis on addr. Redis is a cache: it keeps nothing on disk, and a
// restarted one starts empty (timelines are rebuilt from PostgreSQL).
func prepareRedis(h Home, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("redis address %q: %w", addr, err)
	}
	if err := os.MkdirAll(h.Redis(), 0o700); err != nil {
		return err
	}
	pw, err := ReadFile(h.RedisPassword())
	switch {
	case errors.Is(err, os.ErrNotExist):
		pw = []byte(randomPassword())
		if err := WriteFile(h.RedisPassword(), append(pw, '\n'), 0o600); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	conf := strings.Join(append([]string{
		"bind " + host,
		"port " + port,
		"protected-mode yes",
		"requirepass " + strings.TrimSpace(string(pw)),
		`save ""`,
		"appendonly no",
		"dir " + h.Redis(),
		"pidfile " + h.RedisPidFile(),
		`logfile ""`,
		"daemonize no",
		"loglevel notice",
	}, feed.RedisSettings()...), "\n") + "\n"
	return WriteFile(h.RedisConf(), []byte(conf), 0o600)
}

// prepareDatabases creates the stack's databases on the clusters'
// primaries, applies their migrations and makes the application roles.
func prepareDatabases(ctx context.Context, eng Engine, sec secrets, log *slog.Logger) error {
	mainPG, err := primaryDSN(ctx, eng, MainCluster, "postgres")
	if err != nil {
		return err
	}
	if err := createDatabase(ctx, mainPG, MainDB); err != nil {
		return err
	}
	admin, err := primaryDSN(ctx, eng, MainCluster, MainDB)
	if err != nil {
		return err
	}
	if err := postgres.Migrate(ctx, admin, log); err != nil {
		return err
	}
	if err := postgres.EnsureAppRole(ctx, admin, MainAppRole, sec.MainApp); err != nil {
		return err
	}

	counterPG, err := primaryDSN(ctx, eng, CounterCluster, "postgres")
	if err != nil {
		return err
	}
	if err := createDatabase(ctx, counterPG, CounterDB); err != nil {
		return err
	}
	cadmin, err := primaryDSN(ctx, eng, CounterCluster, CounterDB)
	if err != nil {
		return err
	}
	if err := counter.Migrate(ctx, []string{cadmin}, log); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, cadmin)
	if err != nil {
		return fmt.Errorf("counter role: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := pgrole.Ensure(ctx, conn, CounterAppRole, sec.CounterApp, "NOSUPERUSER NOCREATEDB NOCREATEROLE"); err != nil {
		return err
	}
	return counter.GrantAppRole(ctx, []string{cadmin}, CounterAppRole)
}

// primaryDSN is the administrator's DSN of database db on the cluster's
// primary.
func primaryDSN(ctx context.Context, eng Engine, clusterName, db string) (string, error) {
	p, err := eng.Primary(ctx, clusterName)
	if err != nil {
		return "", fmt.Errorf("primary of %s: %w", clusterName, err)
	}
	if p == "" {
		return "", fmt.Errorf("cluster %s has no primary", clusterName)
	}
	return eng.AdminDSN(clusterName, p, db), nil
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

// appDSNs returns the application's DSN for every node.
func appDSNs(nodes []NodeAddr, role, password, db string) []string {
	var out []string
	for _, n := range nodes {
		u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password),
			Host: net.JoinHostPort(n.Host, strconv.Itoa(n.Port)), Path: "/" + db, RawQuery: "sslmode=disable"}
		out = append(out, u.String())
	}
	return out
}

// adminDSNs returns the administrator's DSN of database db on every node
// of the cluster.
func adminDSNs(eng Engine, clusterName, db string) []string {
	var out []string
	for _, n := range eng.Nodes(clusterName) {
		out = append(out, eng.AdminDSN(clusterName, n.Name, db))
	}
	return out
}
