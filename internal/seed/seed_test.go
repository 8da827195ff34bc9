package seed_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/seed"
	"socnet/internal/social"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// mustDB returns a migrated database on dsn (a fresh one when dsn is "")
// through dbroute, and an administrator pool for checks.
func mustDB(tb testing.TB, dsn string) (*dbroute.DB, *pgxpool.Pool) {
	tb.Helper()
	if dsn == "" {
		dsn = pgtest.MustDatabase(tb)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(pgtest.LogWriter(tb, "log: "), nil))
	if err := postgres.Migrate(ctx, dsn, log); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Primary: dsn, MaxConns: 4, WriteTimeout: 30 * time.Second}, log)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(db.Close)
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(admin.Close)
	return db, admin
}

// person is a users row as the checks compare it.
type person struct {
	ID, FirstName, SecondName, Biography, City string
	Birthdate                                  time.Time
}

func mustPeople(tb testing.TB, admin *pgxpool.Pool) []person {
	tb.Helper()
	rows, err := admin.Query(context.Background(),
		`SELECT id::text, first_name, second_name, biography, city, birthdate FROM users ORDER BY id`)
	if err != nil {
		tb.Fatal(err)
	}
	ps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[person])
	if err != nil {
		tb.Fatal(err)
	}
	return ps
}

// wantGenerated fails unless the users table holds exactly persons
// [0, n) of the seed, as the generator makes them.
func wantGenerated(tb testing.TB, admin *pgxpool.Pool, s int64, n int) {
	tb.Helper()
	g, err := seed.NewGenerator(s)
	if err != nil {
		tb.Fatal(err)
	}
	want := make([]person, n)
	for i := range want {
		u := g.Person(i)
		want[i] = person{u.ID, u.FirstName, u.SecondName, u.Biography, u.City, u.Birthdate}
	}
	if diff := cmp.Diff(want, mustPeople(tb, admin)); diff != "" {
		tb.Fatalf("users table (-want +got):\n%s", diff)
	}
}

func TestRunLoadsOnceAndOnlyOnce(t *testing.T) {
	db, admin := mustDB(t, "")
	ctx := context.Background()
	var out bytes.Buffer
	var ledger []string
	opts := seed.Options{Users: 2000, Seed: 42, BatchSize: 300,
		OnBatch: func(first, n int, ids []string) {
			if first != len(ledger) || n != len(ids) {
				t.Errorf("OnBatch(%d, %d, %d ids) after %d ids", first, n, len(ids), len(ledger))
			}
			ledger = append(ledger, ids...)
		}}
	res, err := seed.Run(ctx, db, opts, &out)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if res.Target != 2000 || res.Loaded != 2000 || res.Existing != 0 {
		t.Errorf("Result %+v, want 2000 loaded", res)
	}
	wantGenerated(t, admin, 42, 2000)
	for i, id := range ledger {
		if id != seed.UserID(42, i) {
			t.Fatalf("ledger[%d] = %s, want %s", i, id, seed.UserID(42, i))
		}
	}
	if len(ledger) != 2000 {
		t.Errorf("OnBatch reported %d ids, want 2000", len(ledger))
	}
	if !strings.Contains(out.String(), "loaded 2000/2000 users (100%)") {
		t.Errorf("progress output:\n%s", out.String())
	}

	// Everyone has the documented password.
	var hash []byte
	if err := admin.QueryRow(ctx, `SELECT password_hash FROM users ORDER BY id DESC LIMIT 1`).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte("socnet-seed")); err != nil {
		t.Errorf("seeded password: %v", err)
	}

	out.Reset()
	ledger = nil
	res, err = seed.Run(ctx, db, opts, &out)
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if res.Loaded != 0 || res.Existing != 2000 || len(ledger) != 0 {
		t.Errorf("second Run: %+v, %d ids reported; want nothing loaded", res, len(ledger))
	}
	if got := out.String(); got != "already seeded: 2000 users\n" {
		t.Errorf("second Run printed %q", got)
	}
	wantGenerated(t, admin, 42, 2000)
}

func TestRunIsDeterministicAcrossDatabases(t *testing.T) {
	ctx := context.Background()
	var tables [2][]person
	for i := range tables {
		db, admin := mustDB(t, "")
		if _, err := seed.Run(ctx, db, seed.Options{Users: 700, Seed: 9, BatchSize: 100 + 250*i}, &bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
		tables[i] = mustPeople(t, admin)
	}
	if diff := cmp.Diff(tables[0], tables[1]); diff != "" {
		t.Errorf("the same seed made different tables (-first +second):\n%s", diff)
	}
}

func TestRunResumesAfterCancel(t *testing.T) {
	db, admin := mustDB(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	batches := 0
	opts := seed.Options{Users: 2000, Seed: 5, BatchSize: 300, OnBatch: func(int, int, []string) {
		if batches++; batches == 3 {
			cancel()
		}
	}}
	_, err := seed.Run(ctx, db, opts, &bytes.Buffer{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Run: %v, want context.Canceled", err)
	}
	wantGenerated(t, admin, 5, 900)

	var out bytes.Buffer
	opts.OnBatch = nil
	res, err := seed.Run(context.Background(), db, opts, &out)
	if err != nil {
		t.Fatalf("resumed Run: %v", err)
	}
	if res.Existing != 900 || res.Loaded != 1100 {
		t.Errorf("resumed Run: %+v, want 900 existing and 1100 loaded", res)
	}
	if !strings.Contains(out.String(), "resuming at 900 of 2000 users") {
		t.Errorf("resumed Run printed:\n%s", out.String())
	}
	wantGenerated(t, admin, 5, 2000)
}

func TestRunExtendsButNeverShrinks(t *testing.T) {
	db, admin := mustDB(t, "")
	ctx := context.Background()
	if _, err := seed.Run(ctx, db, seed.Options{Users: 500, Seed: 3}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	res, err := seed.Run(ctx, db, seed.Options{Users: 800, Seed: 3, BatchSize: 128}, &bytes.Buffer{})
	if err != nil || res.Loaded != 300 {
		t.Fatalf("extending: %+v, %v; want 300 loaded", res, err)
	}
	wantGenerated(t, admin, 3, 800)
	_, err = seed.Run(ctx, db, seed.Options{Users: 600, Seed: 3}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "800 users of this seed are already loaded") {
		t.Fatalf("shrinking: %v, want a refusal", err)
	}
	_, err = seed.Run(ctx, db, seed.Options{Users: -1, Seed: 3}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("negative users accepted")
	}
	wantGenerated(t, admin, 3, 800)
	// Another seed adds its own people.
	if _, err := seed.Run(ctx, db, seed.Options{Users: 50, Seed: 4}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 850 {
		t.Errorf("%d users after a second seed, want 850 (%v)", n, err)
	}
}

func TestRunTerminalProgress(t *testing.T) {
	db, _ := mustDB(t, "")
	var out bytes.Buffer
	if _, err := seed.Run(context.Background(), db, seed.Options{Users: 400, Seed: 8, BatchSize: 100, Terminal: true}, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Count(s, "\r[") != 4 || !strings.Contains(s, "] 100% 400/400 users") || !strings.Contains(s, "ETA") {
		t.Errorf("terminal progress:\n%q", s)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunSurvivesAServerCrash kills the server with SIGKILL in the middle
// of a load and starts it again: the load retries, finishes, and every
// person is there exactly once.
func TestRunSurvivesAServerCrash(t *testing.T) {
	node := pgtest.MustNode(t, "seed", nil)
	db, admin := mustDB(t, node.DSN(""))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restarted := make(chan error, 1)
	batches := 0
	var out syncBuffer
	opts := seed.Options{Users: 3000, Seed: 11, BatchSize: 200, OnBatch: func(int, int, []string) {
		if batches++; batches != 4 {
			return
		}
		if err := node.Kill(); err != nil {
			t.Errorf("kill: %v", err)
		}
		go func() {
			// The loader must notice the crash before the server is back.
			if err := waitForOutput(ctx, &out, "database unavailable"); err != nil {
				restarted <- err
				return
			}
			restarted <- node.Start(ctx)
		}()
	}}
	res, err := seed.Run(ctx, db, opts, &out)
	if err != nil {
		t.Fatalf("Run across a crash: %v\n%s", err, out.String())
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restart: %v", err)
	}
	if res.Loaded != 3000 {
		t.Errorf("Result %+v, want 3000 loaded", res)
	}
	wantGenerated(t, admin, 11, 3000)
	t.Logf("progress:\n%s", out.String())
}

// waitForOutput polls the buffer until it holds s or ctx ends.
func waitForOutput(ctx context.Context, b *syncBuffer, s string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(b.String(), s) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

func TestCopyUsersAreSearchable(t *testing.T) {
	db, _ := mustDB(t, "")
	ctx := context.Background()
	if _, err := seed.Run(ctx, db, seed.Options{Users: 3000, Seed: 1}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	got, err := postgres.NewUserStore(db).SearchUsers(ctx, social.UserSearch{FirstNamePrefix: "Ал", SecondNamePrefix: "Ив"})
	if err != nil || len(got) == 0 {
		t.Fatalf("search Ал/Ив in 3000 seeded people: %d found, %v", len(got), err)
	}
	for _, u := range got {
		if !strings.HasPrefix(u.FirstName, "Ал") || !strings.HasPrefix(u.SecondName, "Ив") {
			t.Errorf("found %s %s", u.FirstName, u.SecondName)
		}
	}
}
