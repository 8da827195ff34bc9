package seed_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/seed"
)

// Measuring the load of 1,000,000 people (every index in place), as
// docs/SEARCH_INDEX.md records it:
//
//	go test ./internal/seed -run '^$' -bench Million -benchtime 1x -timeout 15m
//
// The users/s metric is what the load sustained; load-avg is the machine's
// one-minute load average at the end, since other work on the machine
// slows it.

// BenchmarkRunMillionOneNode loads into a single node with the main
// cluster's shared_buffers.
func BenchmarkRunMillionOneNode(b *testing.B) {
	node := pgtest.MustNode(b, "seedbench", map[string]string{"shared_buffers": "64MB"})
	benchmarkRunMillion(b, dbroute.Config{Name: "bench", Primary: node.DSN("")})
}

// BenchmarkRunMillionMainCluster loads into the main cluster as socnet up
// runs it: a primary whose commits wait for a synchronous replica, and an
// asynchronous replica.
func BenchmarkRunMillionMainCluster(b *testing.B) {
	log := slog.New(slog.NewTextHandler(pgtest.LogWriter(b, "slog"), nil))
	spec := cluster.MainSpec()
	c, err := cluster.Open(cluster.Dir(b.TempDir(), spec.Name), spec, log, cluster.Options{Output: pgtest.LogWriter(b, "")})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.Up(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			b.Errorf("stop cluster: %v", err)
		}
	})
	var nodes []string
	for _, n := range c.Nodes() {
		nodes = append(nodes, c.Node(n).DSN(""))
	}
	benchmarkRunMillion(b, dbroute.Config{Name: "bench", Nodes: nodes})
}

func benchmarkRunMillion(b *testing.B, cfg dbroute.Config) {
	ctx := context.Background()
	db, err := dbroute.Open(ctx, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	// The primary's DSN: dbroute found it.
	admin := db.Primary().Config().ConnConfig.ConnString()
	if err := postgres.Migrate(ctx, admin, nil); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		res, err := seed.Run(ctx, db, seed.Options{Users: 1_000_000, Seed: int64(1000 + i)}, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Loaded)/time.Since(start).Seconds(), "users/s")
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(la)); len(f) > 0 {
			b.Logf("load average at the end: %s", f[0])
		}
	}
}
