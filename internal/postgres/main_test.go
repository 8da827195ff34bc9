package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is a migrated database with the stores over it and an administrator
// pool for looking behind them.
type env struct {
	dsn     string
	db      *dbroute.DB
	admin   *pgxpool.Pool
	users   *postgres.UserStore
	friends *postgres.FriendStore
	posts   *postgres.PostStore
	dialogs *postgres.DialogStore
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(pgtest.LogWriter(tb, "log: "), nil))
}

// mustEnv gives the test a fresh migrated database.
func mustEnv(tb testing.TB) *env {
	tb.Helper()
	dsn := pgtest.MustDatabase(tb)
	return mustEnvAt(tb, dsn)
}

func mustEnvAt(tb testing.TB, dsn string) *env {
	tb.Helper()
	ctx := context.Background()
	if err := postgres.Migrate(ctx, dsn, testLogger(tb)); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Primary: dsn, MaxConns: 8}, testLogger(tb))
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(db.Close)
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		tb.Fatalf("admin pool: %v", err)
	}
	tb.Cleanup(admin.Close)
	return &env{dsn: dsn, db: db, admin: admin,
		users: postgres.NewUserStore(db), friends: postgres.NewFriendStore(db),
		posts: postgres.NewPostStore(db), dialogs: postgres.NewDialogStore(db)}
}

// mustUser registers a user with the names and returns it.
func (e *env) mustUser(tb testing.TB, first, second string) social.User {
	tb.Helper()
	u := social.User{FirstName: first, SecondName: second,
		Birthdate: time.Date(1990, 5, 17, 0, 0, 0, 0, time.UTC), Biography: "bio", City: "Москва"}
	if err := e.users.CreateUser(context.Background(), &u, []byte("$2a$10$hash")); err != nil {
		tb.Fatalf("create user %s %s: %v", first, second, err)
	}
	return u
}

// count returns the result of a SELECT count(*) query.
func (e *env) count(tb testing.TB, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := e.admin.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// wantCode fails unless err carries the social error code (nil for "").
func wantCode(tb testing.TB, err error, code string) {
	tb.Helper()
	if got := social.ErrorCode(err); got != code {
		tb.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

// wantField fails unless err is EINVALID naming field.
func wantField(tb testing.TB, err error, field string) {
	tb.Helper()
	wantCode(tb, err, social.EINVALID)
	var se *social.Error
	if !errors.As(err, &se) || se.Fields[field] == "" {
		tb.Fatalf("error %v does not name field %q", err, field)
	}
}

const unknownID = "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000"
