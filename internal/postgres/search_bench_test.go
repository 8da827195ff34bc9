package postgres_test

import (
	"context"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/seed"
	"socnet/internal/social"
)

// BenchmarkSearchUsers measures /user/search's query on 1,000,000 seeded
// people (a node with the main cluster's shared_buffers): 32 concurrent
// clients search prefix pairs of 2 to 4 letters drawn from the data.
// It reports latency percentiles; docs/SEARCH_INDEX.md records runs.
//
//	go test ./internal/postgres -run '^$' -bench SearchUsers -benchtime 20000x -timeout 10m
func BenchmarkSearchUsers(b *testing.B) {
	node := pgtest.MustNode(b, "search", map[string]string{"shared_buffers": "64MB"})
	e := mustEnvAt(b, node.DSN(""))
	ctx := context.Background()
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "bench", Primary: node.DSN(""), MaxConns: 32}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	if _, err := seed.Run(ctx, db, seed.Options{Users: 1_000_000, Seed: 1}, io.Discard); err != nil {
		b.Fatal(err)
	}
	if _, err := e.admin.Exec(ctx, `VACUUM ANALYZE users`); err != nil {
		b.Fatal(err)
	}
	pairs := mustPrefixPairs(b, e, 5000)
	users := postgres.NewUserStore(db)

	// Sub-benchmarks run the setup above once.
	b.Run("clients=32", func(b *testing.B) { benchmarkSearch(b, users, pairs, 32) })
}

func benchmarkSearch(b *testing.B, users *postgres.UserStore, pairs [][2]string, clients int) {
	ctx := context.Background()
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		var mine []time.Duration
		for pb.Next() {
			p := pairs[r.IntN(len(pairs))]
			start := time.Now()
			if _, err := users.SearchUsers(ctx, social.UserSearch{FirstNamePrefix: p[0], SecondNamePrefix: p[1]}); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// mustPrefixPairs draws n (first, second) name prefixes of 2 to 4 letters
// from a sample of the users table.
func mustPrefixPairs(tb testing.TB, e *env, n int) [][2]string {
	rows, err := e.admin.Query(context.Background(),
		`SELECT first_name, second_name FROM users TABLESAMPLE SYSTEM (2) REPEATABLE (7) LIMIT $1`, n)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	r := rand.New(rand.NewPCG(1, 2))
	var pairs [][2]string
	for rows.Next() {
		var f, s string
		if err := rows.Scan(&f, &s); err != nil {
			tb.Fatal(err)
		}
		fr, sr := []rune(f), []rune(s)
		pairs = append(pairs, [2]string{string(fr[:min(2+r.IntN(3), len(fr))]), string(sr[:min(2+r.IntN(3), len(sr))])})
	}
	if len(pairs) == 0 {
		tb.Fatal("no users to draw prefixes from")
	}
	return pairs
}
