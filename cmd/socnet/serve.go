package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"socnet/internal/auth"
	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/httpapi"
	"socnet/internal/httpserve"
	"socnet/internal/postgres"
	"socnet/internal/stack"
)

// serveConfig is the configuration of the API process.
type serveConfig struct {
	HTTP          string
	DB            []string // DSNs of the nodes (each may be multi-host)
	AdminDB       string   // when set, migrations are applied with it at start
	KeyFile       string
	Key           string // hex; overrides KeyFile
	TokenTTL      time.Duration
	MaxReplicaLag time.Duration
	NoReplica     string
	WriteTimeout  time.Duration
	MaxConns      int
	ShutdownAfter time.Duration
	BcryptCost    int
	AddrFile      string // written with the bound address once listening
	RoutingFile   string // the router's snapshot, rewritten every second
	CounterURL    string // base URL of counterd
	ServiceKey    string // file of the key requests to counterd are signed with
	DebugHTTP     string // when set, /debug/pprof is served there
	MetricsAddr   string // when set, /metrics is served there
	// RequestTimeout is every request's deadline; the database's
	// statement_timeout sits under it and WriteTimeout (statementTimeout).
	RequestTimeout time.Duration
	Limits         httpapi.Limits
	Feed           feedOptions // Redis of the feed; none: SQL serves it
}

func cmdServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags("serve", e)
	httpAddr := fs.String("http", "127.0.0.1:8080", "address to serve the API on (port 0 picks a free one)")
	db := fs.String("db", "", "DSNs of the database nodes, DSN[,DSN...] or separated by spaces; any may be multi-host; the primary is found by probing")
	admin := fs.String("admin-db", "", "DSN with the right to create tables; when set, migrations are applied at start")
	key := fs.String("token-key", "", "token signing key, hex (at least 32 bytes); default: --key-file")
	keyFile := fs.String("key-file", filepath.Join(defaultHome(e.getenv), "token.key"), "file holding the token signing key; created (0600) when missing")
	ttl := fs.Duration("token-ttl", auth.DefaultTokenTTL, "how long a login token is valid")
	lag := fs.Duration("max-replica-lag", dbroute.DefaultMaxReplicaLag, "a replica lagging more than this gets no reads")
	noReplica := fs.String("no-replica", dbroute.NoReplicaPrimary, "when no replica is fit for reads: primary (read there) or fail (503)")
	wt := fs.Duration("write-timeout", dbroute.DefaultWriteTimeout, "bound on a write, including a commit waiting for a synchronous standby")
	maxConns := fs.Int("max-conns", 32, "connections per database node")
	cost := fs.Int("bcrypt-cost", auth.DefaultCost, "bcrypt cost of new password hashes")
	addrFile := fs.String("addr-file", "", "write the bound address to this file once listening")
	routingFile := fs.String("routing-file", "", "write where queries go (the router's view of the nodes) to this file every second")
	debugHTTP := fs.String("debug-http", "", "serve Go's /debug/pprof profiles on this address (keep it on loopback)")
	counterURL := fs.String("counter", "http://127.0.0.1:8091", "base URL of the unread-message counter service (socnet counterd)")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus /metrics on this address (keep it private); empty: no metrics listener. The API port never serves them")
	reqTimeout := fs.Duration("request-timeout", defaultRequestTimeout, "deadline of every API request; the database's statement_timeout is 90% of the lesser of it and --write-timeout")
	addrEvery := fs.Duration("auth-addr-interval", time.Duration(float64(time.Second)/httpapi.DefaultAddrLimit.Rate), "per client address, one /login or /user/register attempt more is allowed every this long (0: no limit)")
	addrBurst := fs.Int("auth-addr-burst", httpapi.DefaultAddrLimit.Burst, "per client address, /login and /user/register attempts allowed at once")
	userEvery := fs.Duration("auth-user-interval", time.Duration(float64(time.Second)/httpapi.DefaultUserLimit.Rate), "per target user, one /login attempt more is allowed every this long (0: no limit)")
	userBurst := fs.Int("auth-user-burst", httpapi.DefaultUserLimit.Burst, "per target user, /login attempts allowed at once")
	limitKeys := fs.Int("auth-limit-keys", httpapi.DefaultMaxLimitKeys, "addresses or users each login limit remembers")
	proxies := fs.String("trusted-proxies", "", "CIDRs or addresses of reverse proxies whose X-Forwarded-For / X-Real-IP name the client, comma-separated; empty: trust no header")
	serviceKey := fs.String("service-key-file", "", "file (0600) holding the key requests to counterd are signed with (without it they are unsigned)")
	feedOpts := addFeedFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	trusted, err := httpapi.ParseTrustedProxies(*proxies)
	if err != nil {
		return usageError{fmt.Errorf("--trusted-proxies: %w", err)}
	}
	c := serveConfig{HTTP: *httpAddr, DB: dbroute.SplitDSNList(*db), AdminDB: *admin, Key: *key, KeyFile: *keyFile,
		TokenTTL: *ttl, MaxReplicaLag: *lag, NoReplica: *noReplica, WriteTimeout: *wt,
		MaxConns: *maxConns, BcryptCost: *cost, AddrFile: *addrFile, RoutingFile: *routingFile, ShutdownAfter: 10 * time.Second,
		CounterURL: *counterURL, ServiceKey: *serviceKey, DebugHTTP: *debugHTTP, MetricsAddr: *metricsAddr, RequestTimeout: *reqTimeout,
		Limits: httpapi.Limits{PerAddr: rateLimit(*addrEvery, *addrBurst), PerUser: rateLimit(*userEvery, *userBurst),
			MaxKeys: *limitKeys, TrustedProxies: trusted}, Feed: feedOpts.options()}
	if len(c.DB) == 0 {
		return usageError{errors.New("serve: --db (or SOCNET_DB) is required")}
	}
	if c.RequestTimeout <= 0 || c.WriteTimeout <= 0 {
		return usageError{errors.New("serve: --request-timeout and --write-timeout must be positive")}
	}
	return serve(ctx, e, c)
}

// serve runs the API until ctx ends, then shuts down gracefully: it stops
// accepting, lets in-flight requests finish, and closes the pools.
func serve(ctx context.Context, e *env, c serveConfig) error {
	key, err := tokenKey(c)
	if err != nil {
		return err
	}
	if c.AdminDB != "" {
		if err := postgres.Migrate(ctx, c.AdminDB, e.log); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nodes := make([]string, len(c.DB))
	for i, dsn := range c.DB {
		nodes[i] = postgres.WithStatementTimeout(dsn, statementTimeout(c.WriteTimeout, c.RequestTimeout))
	}
	db, err := dbroute.Open(ctx, dbroute.Config{
		Name: "main", Nodes: nodes, MaxConns: int32(c.MaxConns), WriteTimeout: c.WriteTimeout,
		MaxReplicaLag: c.MaxReplicaLag, NoReplica: c.NoReplica, Registry: reg,
	}, e.log)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer db.Close()
	if c.DebugHTTP != "" {
		dctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			if err := listenAndServe(dctx, e, "debug", c.DebugHTTP, "", debugMux(), time.Second); err != nil {
				e.log.Warn("debug listener", "err", err)
			}
		}()
	}
	if c.MetricsAddr != "" {
		mctx, stop := context.WithCancel(ctx)
		defer stop()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		go func() {
			if err := listenAndServe(mctx, e, "metrics", c.MetricsAddr, "", mux, time.Second); err != nil {
				e.log.Warn("metrics listener", "err", err)
			}
		}()
	}
	if c.RoutingFile != "" {
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		go reportRouting(rctx, e.log, db, c.RoutingFile, time.Second)
	}

	// The feed's Redis also holds the login and registration limits, so
	// that API servers behind one balancer share them.
	var rdb *redis.Client
	limits := c.Limits
	if c.Feed.RedisAddr != "" {
		if rdb, err = c.Feed.redisClient(); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer rdb.Close()
		limits.Shared = rdb
	}
	posts, friends, err := feedStores(e, c.Feed, db, rdb, reg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	dialogs := postgres.NewDialogStore(db)
	counterOpts, err := counterClientOptions(e, c.ServiceKey)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	unread := counter.NewClient(c.CounterURL, counterOpts...)
	defer unread.Close()
	handler := httpapi.NewServer(e.log, httpapi.Deps{
		Users:    postgres.NewUserStore(db),
		Friends:  friends,
		Posts:    posts,
		Dialogs:  dialogs,
		Reader:   dialogs,
		Unread:   unread,
		Tokens:   auth.NewTokens(key, c.TokenTTL, nil),
		Registry: reg,
		Hasher:   auth.Hasher{Cost: c.BcryptCost},
		Limits:   limits,
		// The deadline of reads; writes have their own, WriteTimeout.
		RequestTimeout: c.RequestTimeout,
	})
	return listenAndServe(ctx, e, "api", c.HTTP, c.AddrFile, handler, c.ShutdownAfter)
}

// listenAndServe serves h on addr until ctx ends and then shuts down within
// grace (httpserve, the one path of every socnet HTTP server). It prints the
// bound address (useful with port 0) and, when addrFile is set, writes it
// there.
func listenAndServe(ctx context.Context, e *env, name, addr, addrFile string, h http.Handler, grace time.Duration) error {
	return httpserve.ListenAndServe(ctx, e.log, httpserve.Server{Name: name, Addr: addr, Handler: h, Grace: grace,
		Listening: func(bound string) error {
			if addrFile != "" {
				if err := stack.WriteFile(addrFile, []byte(bound+"\n"), 0o644); err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stdout, "%s listening on http://%s\n", name, bound)
			return nil
		}})
}

// defaultRequestTimeout is the deadline of an API request by default: above
// dbroute.DefaultWriteTimeout, so that a write's own, more precise, bound
// comes first.
const defaultRequestTimeout = 10 * time.Second

// statementTimeout is the database's own bound on every statement of the
// API: under both the write timeout and the request deadline, so that the
// server stops a runaway statement itself, even when the API's cancel
// request is lost or the API is gone. It never cuts a COMMIT's wait for the
// synchronous standby (PostgreSQL disarms the timer before the commit
// work), so an unreplicated commit is still reported by the API's own
// WriteTimeout as unconfirmed, with a 503.
func statementTimeout(write, request time.Duration) time.Duration {
	return min(write, request) * 9 / 10
}

// rateLimit is a limit of burst attempts refilled one per every; every 0
// turns it off.
func rateLimit(every time.Duration, burst int) httpapi.RateLimit {
	if every <= 0 {
		return httpapi.RateLimit{}
	}
	return httpapi.RateLimit{Rate: float64(time.Second) / float64(every), Burst: burst}
}

func tokenKey(c serveConfig) ([]byte, error) {
	if c.Key != "" {
		k, err := hex.DecodeString(c.Key)
		if err != nil || len(k) < auth.KeyLen {
			return nil, usageError{fmt.Errorf("--token-key: want at least %d bytes in hex", auth.KeyLen)}
		}
		return k, nil
	}
	k, err := auth.LoadOrCreateKey(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return k, nil
}

// debugMux serves the runtime profiles, for operators chasing CPU or memory.
func debugMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
