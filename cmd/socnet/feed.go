package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"socnet/internal/dbroute"
	"socnet/internal/feed"
	"socnet/internal/postgres"
	"socnet/internal/social"
	"socnet/internal/stack"
)

// Timeouts of the Redis client: a dead Redis fails a feed read fast, and
// the page comes from PostgreSQL instead.
const (
	redisDialTimeout = 200 * time.Millisecond
	redisIOTimeout   = 500 * time.Millisecond
)

// feedOptions connect a command to the feed's Redis.
type feedOptions struct {
	RedisAddr          string
	RedisPasswordFile  string
	CelebrityFollowers int
}

// feedFlags are the flags that set feedOptions.
type feedFlags struct {
	addr, passwordFile *string
	celebrity          *int
}

// addFeedFlags adds --redis-addr, --redis-password-file and
// --feed-celebrity-followers to fs.
func addFeedFlags(fs *flags) feedFlags {
	return feedFlags{
		addr:         fs.String("redis-addr", "", "host:port of the feed's Redis; empty: the feed is computed by SQL on every read"),
		passwordFile: fs.String("redis-password-file", "", "file holding the Redis password (empty: none)"),
		celebrity: fs.Int("feed-celebrity-followers", feed.DefaultCelebrityFollowers,
			"authors with more followers than this are merged into feeds at read instead of fanned out"),
	}
}

// options returns the parsed flags.
func (f feedFlags) options() feedOptions {
	return feedOptions{RedisAddr: *f.addr, RedisPasswordFile: *f.passwordFile, CelebrityFollowers: *f.celebrity}
}

// redisClient returns a client of the feed's Redis with short timeouts.
func (o feedOptions) redisClient() (*redis.Client, error) {
	if o.RedisAddr == "" {
		return nil, errors.New("--redis-addr (or SOCNET_REDIS_ADDR) is required")
	}
	opts := &redis.Options{Addr: o.RedisAddr, DialTimeout: redisDialTimeout,
		ReadTimeout: redisIOTimeout, WriteTimeout: redisIOTimeout, MaxRetries: 1}
	if o.RedisPasswordFile != "" {
		pw, err := os.ReadFile(o.RedisPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("redis password: %w", err)
		}
		opts.Password = strings.TrimSpace(string(pw))
	}
	return newRedisClient(opts), nil
}

// newRedisClient returns a Redis client that leaves the reporting of its
// errors to its callers, which log them through slog (or answer 503):
// go-redis's own logger writes every failed dial to the process's stderr,
// and can only be set process-wide, so it is silenced.
func newRedisClient(opts *redis.Options) *redis.Client {
	logging.Disable()
	return redis.NewClient(opts)
}

// config returns the feed's configuration over db and Redis.
func (o feedOptions) config(e *env, db *dbroute.DB, rdb redis.UniversalClient, reg prometheus.Registerer) feed.Config {
	return feed.Config{DB: db, Redis: rdb, SQL: postgres.NewPostStore(db),
		CelebrityFollowers: o.CelebrityFollowers, Log: e.log, Registry: reg}
}

// feedStores returns the API's post and friend stores: the SQL feed when
// rdb (the client of the feed's Redis) is nil, else the feed served from
// Redis timelines.
func feedStores(e *env, o feedOptions, db *dbroute.DB, rdb *redis.Client, reg prometheus.Registerer) (social.PostStore, social.FriendStore, error) {
	posts, friends := postgres.NewPostStore(db), postgres.NewFriendStore(db)
	if rdb == nil {
		return posts, friends, nil
	}
	reader, err := feed.NewReader(o.config(e, db, rdb, reg))
	if err != nil {
		return nil, nil, err
	}
	e.log.Info("feed served from Redis timelines", "redis", o.RedisAddr)
	return feed.NewPostStore(posts, reader), feed.NewFriendStore(friends, reader), nil
}

// cmdFeed runs the feed's subcommands.
func cmdFeed(ctx context.Context, e *env, args []string) error {
	const usage = "feed: want a subcommand: work (apply feed_outbox to Redis), check (compare timelines with SQL) or redis (run the stack's redis-server; `up` does)"
	if len(args) == 0 {
		return usageError{errors.New(usage)}
	}
	switch args[0] {
	case "work":
		return cmdFeedWork(ctx, e, args[1:])
	case "check":
		return cmdFeedCheck(ctx, e, args[1:])
	case "redis":
		return cmdFeedRedis(ctx, e, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(e.stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("feed: unknown subcommand %q; %s", args[0], usage)}
}

// cmdFeedWork runs the feed worker: it applies feed_outbox to the Redis
// timelines, one batch at a time across all workers.
func cmdFeedWork(ctx context.Context, e *env, args []string) error {
	fs := newFlags("feed work", e)
	mainDB := fs.String("main-db", "", "DSNs of the main database's nodes, DSN[,DSN...]; the worker works on the primary")
	httpAddr := fs.String("http", "", "address of the worker's /metrics and /healthz (empty: none)")
	batch := fs.Int("batch", feed.DefaultWorkerBatch, "most events per batch")
	poll := fs.Duration("poll", feed.DefaultWorkerPoll, "pause when nothing is due")
	ff := addFeedFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	o := ff.options()
	mains := dbroute.SplitDSNList(*mainDB)
	switch {
	case len(mains) == 0:
		return usageError{errors.New("feed work: --main-db (or SOCNET_MAIN_DB) is required")}
	case o.RedisAddr == "":
		return usageError{errors.New("feed work: --redis-addr (or SOCNET_REDIS_ADDR) is required")}
	case *batch < 1:
		return usageError{errors.New("feed work: --batch must be at least 1")}
	}
	warnArgvPasswords(e, args, "main-db")

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Nodes: mains, MaxConns: 4, Registry: reg}, e.log)
	if err != nil {
		return fmt.Errorf("feed work: %w", err)
	}
	defer db.Close()
	rdb, err := o.redisClient()
	if err != nil {
		return usageError{fmt.Errorf("feed work: %w", err)}
	}
	defer rdb.Close()
	w, err := feed.NewWorker(o.config(e, db, rdb, reg), feed.WorkerConfig{Batch: *batch, Poll: *poll})
	if err != nil {
		return fmt.Errorf("feed work: %w", err)
	}
	e.log.Info("feed worker running", "redis", o.RedisAddr)
	return runBesideHTTP(ctx, e, "feed-worker", *httpAddr, reg, func() string { return `{"status":"ok"}` }, w.Run)
}

// cmdFeedCheck compares cached timelines, drawn uniformly among the users
// who have one (feed.CheckSample), with the SQL feed and fails (exit 1)
// when any differs.
func cmdFeedCheck(ctx context.Context, e *env, args []string) error {
	fs := newFlags("feed check", e)
	home := fs.HomeDir()
	mainDB := fs.String("main-db", "", "DSNs of the main database's nodes, DSN[,DSN...] (default: the stack in --home)")
	sample := fs.Int("sample", 300, "how many cached timelines to check, drawn uniformly among the users who have one")
	fs.FlagSet.IntVar(sample, "users", *sample, "the same as --sample")
	all := fs.Bool("all", false, "check every cached timeline (small data sets)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	ff := addFeedFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	o := ff.options()
	mains := dbroute.SplitDSNList(*mainDB)
	if len(mains) == 0 || o.RedisAddr == "" {
		st, err := readStack(*home)
		if err == nil && len(mains) == 0 {
			mains = st.MainDB
		}
		if err == nil && o.RedisAddr == "" && st.Redis != "" {
			o.RedisAddr, o.RedisPasswordFile = st.Redis, stack.Home{Dir: *home}.RedisPassword()
		}
	}
	switch {
	case len(mains) == 0 || o.RedisAddr == "":
		return usageError{errors.New("feed check: --main-db and --redis-addr are required, or a stack in --home that runs Redis")}
	case *sample < 1:
		return usageError{errors.New("feed check: --sample must be at least 1")}
	}
	warnArgvPasswords(e, args, "main-db")
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Nodes: mains, MaxConns: 4}, e.log)
	if err != nil {
		return fmt.Errorf("feed check: %w", err)
	}
	defer db.Close()
	rdb, err := o.redisClient()
	if err != nil {
		return usageError{fmt.Errorf("feed check: %w", err)}
	}
	defer rdb.Close()
	reader, err := feed.NewReader(o.config(e, db, rdb, nil))
	if err != nil {
		return fmt.Errorf("feed check: %w", err)
	}
	n := *sample
	if *all {
		n = 0
	}
	rep, err := feed.CheckSample(ctx, reader, n)
	if err != nil {
		return fmt.Errorf("feed check: %w", err)
	}
	if *asJSON {
		out, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(e.stdout, string(out))
	} else {
		const shown = 10 // differences, and ids of each
		for _, d := range rep.Differences[:min(len(rep.Differences), shown)] {
			fmt.Fprintf(e.stdout, "user %s: %d missing, %d extra, misordered %t", d.UserID, len(d.Missing), len(d.Extra), d.Misordered)
			if len(d.Missing) > 0 {
				fmt.Fprintf(e.stdout, "; missing %s", strings.Join(d.Missing[:min(len(d.Missing), 3)], " "))
			}
			if len(d.Extra) > 0 {
				fmt.Fprintf(e.stdout, "; extra %s", strings.Join(d.Extra[:min(len(d.Extra), 3)], " "))
			}
			fmt.Fprintln(e.stdout)
		}
		if len(rep.Differences) > shown {
			fmt.Fprintf(e.stdout, "... and %d more (--json lists them all)\n", len(rep.Differences)-shown)
		}
		fmt.Fprintf(e.stdout, "checked %d cached timelines (%d users drawn, %d of them not cached), %d differ; feed_outbox backlog %d\n",
			rep.Checked, rep.Drawn, rep.Uncached, len(rep.Differences), rep.Backlog)
	}
	if len(rep.Differences) > 0 {
		return fmt.Errorf("feed check: %d of %d timelines differ from the SQL feed", len(rep.Differences), rep.Checked)
	}
	return nil
}
