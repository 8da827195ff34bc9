package feed_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"socnet/internal/dbroute"
	"socnet/internal/feed"
	"socnet/internal/feed/feedtest"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

// roleEnv makes the test binary, started again by a test, run a feed
// worker instead of the tests, so that the test can kill it with a real
// signal.
const roleEnv = "SOCNET_FEED_TEST_ROLE"

// Settings of the child worker, passed in the environment.
const (
	envDB            = "SOCNET_FEED_TEST_DB"
	envRedisAddr     = "SOCNET_FEED_TEST_REDIS_ADDR"
	envRedisPassword = "SOCNET_FEED_TEST_REDIS_PASSWORD"
	envBatch         = "SOCNET_FEED_TEST_BATCH"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	// go-redis reports failed dials on its own logger; the tests see the
	// errors where they matter.
	redis.SetLogger(quiet{})
	pgtest.Main(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// runRole runs the child worker until SIGTERM.
func runRole(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	err := func() error {
		if role != "worker" {
			return fmt.Errorf("unknown role %q", role)
		}
		db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Primary: os.Getenv(envDB), MaxConns: 4}, log)
		if err != nil {
			return err
		}
		defer db.Close()
		rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedisAddr), Password: os.Getenv(envRedisPassword)})
		defer rdb.Close()
		batch, _ := strconv.Atoi(os.Getenv(envBatch))
		w, err := feed.NewWorker(feed.Config{DB: db, Redis: rdb, SQL: postgres.NewPostStore(db), Log: log},
			feed.WorkerConfig{Batch: batch, Poll: 10 * time.Millisecond})
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "worker running")
		return w.Run(ctx)
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}

func testLogger(tb testing.TB, prefix string) *slog.Logger {
	return slog.New(slog.NewTextHandler(pgtest.LogWriter(tb, prefix), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// env is a migrated main database, a Redis, and the feed over them.
type env struct {
	dsn    string
	db     *dbroute.DB
	admin  *pgxpool.Pool
	posts  *postgres.PostStore
	redis  *feedtest.Redis
	rdb    *redis.Client
	cfg    feed.Config
	reader *feed.Reader
	worker *feed.Worker
	reg    *prometheus.Registry // the reader's and the worker's metrics
}

// mustEnv builds an env whose celebrities are authors with more than
// celebrity followers (0: the default).
func mustEnv(tb testing.TB, celebrity int) *env {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &env{dsn: pgtest.MustDatabase(tb), redis: feedtest.MustRedis(tb)}
	log := testLogger(tb, "test:")
	if err := postgres.Migrate(ctx, e.dsn, log); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	var err error
	if e.db, err = dbroute.Open(ctx, dbroute.Config{Name: "main", Primary: e.dsn, MaxConns: 8}, log); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.db.Close)
	if e.admin, err = pgxpool.New(ctx, e.dsn); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.admin.Close)
	e.posts = postgres.NewPostStore(e.db)
	e.rdb = e.redis.Client(tb)
	e.reg = prometheus.NewRegistry()
	e.cfg = feed.Config{DB: e.db, Redis: e.rdb, SQL: e.posts, CelebrityFollowers: celebrity, Log: log, Registry: e.reg}
	if e.reader, err = feed.NewReader(e.cfg); err != nil {
		tb.Fatal(err)
	}
	if e.worker, err = feed.NewWorker(e.cfg, feed.WorkerConfig{Batch: 50, Poll: 10 * time.Millisecond}); err != nil {
		tb.Fatal(err)
	}
	return e
}

func testCtx(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// mustUsers inserts n users and returns their ids.
func (e *env) mustUsers(tb testing.TB, n int) []uuid.UUID {
	tb.Helper()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}
	_, err := e.admin.Exec(testCtx(tb, time.Minute), `INSERT INTO users (id, first_name, second_name, birthdate, password_hash)
		SELECT id, 'F', 'S', DATE '2000-01-01', '\x01' FROM unnest($1::uuid[]) id`, ids)
	if err != nil {
		tb.Fatalf("insert users: %v", err)
	}
	return ids
}

// write runs fn in a transaction on the primary, as the postgres package
// does for the API's writes.
func (e *env) write(tb testing.TB, what string, fn func(ctx context.Context, tx pgx.Tx) error) {
	tb.Helper()
	ctx := testCtx(tb, 30*time.Second)
	if err := e.db.Transact(ctx, func(tx pgx.Tx) error { return fn(ctx, tx) }); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

func (e *env) post(tb testing.TB, author uuid.UUID) uuid.UUID {
	tb.Helper()
	id := uuid.Must(uuid.NewV7())
	e.write(tb, "create post", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO posts (id, author_user_id, text) VALUES ($1, $2, 'hello')`, id, author); err != nil {
			return err
		}
		return feed.EnqueuePostCreated(ctx, tx, id, author)
	})
	return id
}

func (e *env) deletePost(tb testing.TB, author, id uuid.UUID) {
	tb.Helper()
	e.write(tb, "delete post", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM posts WHERE id = $1`, id); err != nil {
			return err
		}
		return feed.EnqueuePostDeleted(ctx, tx, id, author)
	})
}

func (e *env) follow(tb testing.TB, user, author uuid.UUID) {
	tb.Helper()
	e.write(tb, "follow", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO friends (user_id, friend_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, user, author); err != nil {
			return err
		}
		return feed.EnqueueFriendSet(ctx, tx, user, author)
	})
}

func (e *env) unfollow(tb testing.TB, user, author uuid.UUID) {
	tb.Helper()
	e.write(tb, "unfollow", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM friends WHERE user_id = $1 AND friend_id = $2`, user, author); err != nil {
			return err
		}
		return feed.EnqueueFriendDeleted(ctx, tx, user, author)
	})
}

// drain applies every pending event.
func (e *env) drain(tb testing.TB) {
	tb.Helper()
	if _, err := e.worker.Drain(testCtx(tb, time.Minute)); err != nil {
		tb.Fatalf("drain feed outbox: %v", err)
	}
}

// page reads a page through the reader and checks that it is the SQL
// feed's page; it returns the ids and where they came from.
func (e *env) page(tb testing.TB, user uuid.UUID, offset, limit int) ([]string, feed.Served) {
	tb.Helper()
	ctx := testCtx(tb, 30*time.Second)
	got, served, err := e.reader.Page(ctx, user.String(), offset, limit)
	if err != nil {
		tb.Fatalf("Page(%s, %d, %d): %v", user, offset, limit, err)
	}
	want, err := e.posts.Feed(ctx, user.String(), offset, limit)
	if err != nil {
		tb.Fatalf("SQL feed: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		tb.Fatalf("Page(%s, %d, %d) served from %s differs from the SQL feed (-want +got):\n%s", user, offset, limit, served, diff)
	}
	return ids(got), served
}

func ids(posts []social.Post) []string {
	out := make([]string, len(posts))
	for i, p := range posts {
		out[i] = p.ID
	}
	return out
}

// mustCheck runs feed.Check on users and fails on any difference; it
// returns the report.
func (e *env) mustCheck(tb testing.TB, users []uuid.UUID) feed.Report {
	tb.Helper()
	s := make([]string, len(users))
	for i, u := range users {
		s[i] = u.String()
	}
	rep, err := feed.Check(testCtx(tb, time.Minute), e.reader, s)
	if err != nil {
		tb.Fatalf("check: %v", err)
	}
	if rep.Backlog != 0 {
		tb.Fatalf("check with %d events not applied", rep.Backlog)
	}
	if len(rep.Differences) > 0 {
		tb.Fatalf("check found %d differences, first %+v", len(rep.Differences), rep.Differences[0])
	}
	return rep
}

// timeline returns the post ids of a user's cached timeline itself,
// without the celebrities merged at read.
func (e *env) timeline(tb testing.TB, user uuid.UUID) []string {
	tb.Helper()
	members, err := e.rdb.ZRangeArgs(testCtx(tb, 10*time.Second), redis.ZRangeArgs{
		Key: feed.TimelineKey(user.String()), Start: 0, Stop: -1, Rev: true}).Result()
	if err != nil {
		tb.Fatalf("read timeline: %v", err)
	}
	got := make([]string, len(members))
	for i, m := range members {
		id, err := uuid.FromBytes([]byte(m))
		if err != nil {
			tb.Fatalf("timeline member %x is no post id: %v", m, err)
		}
		got[i] = id.String()
	}
	return got
}

func contains(s []string, id uuid.UUID) bool { return slices.Contains(s, id.String()) }
