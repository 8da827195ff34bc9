package dbroute_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
)

// BenchmarkTransactNoPrimary measures how long a write takes to fail while no
// node is primary (the only node does not answer): it must not wait for
// anything, so that a client learns at once that it has to retry.
//
//	go test -run '^$' -bench TransactNoPrimary ./internal/dbroute/
func BenchmarkTransactNoPrimary(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx := context.Background()
	db, err := dbroute.Open(ctx, dbroute.Config{
		Nodes: []string{"postgres://postgres:x@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable"},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := insertItem(ctx, db, "x"); !errors.Is(err, dbroute.ErrNoPrimary) {
			b.Fatalf("write with no primary: %v, want ErrNoPrimary", err)
		}
	}
}

// BenchmarkStuckCommitOvershoot measures how far past WriteTimeout a write
// whose COMMIT waits for a synchronous standby that never comes returns
// ErrCommitUnconfirmed: the cancel request's round trip and the closing of
// the connection. It reports the mean and the largest overshoot.
//
//	go test -run '^$' -bench StuckCommitOvershoot -benchtime 20x ./internal/dbroute/
func BenchmarkStuckCommitOvershoot(b *testing.B) {
	ctx := context.Background()
	node := pgtest.MustNode(b, "stuck", map[string]string{"synchronous_standby_names": "nobody"})
	dsn := node.DSN("")
	setup, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	// This session commits locally: every other commit waits for "nobody".
	if _, err := setup.Exec(ctx, "SET synchronous_commit = local"); err != nil {
		b.Fatal(err)
	}
	if _, err := setup.Exec(ctx, "CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	setup.Close(ctx)
	const writeTimeout = 200 * time.Millisecond
	db, err := dbroute.Open(ctx, dbroute.Config{Nodes: []string{dsn}, WriteTimeout: writeTimeout, MaxConns: 4},
		slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var over []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		_, err := insertItem(ctx, db, fmt.Sprint("stuck", i))
		over = append(over, time.Since(start)-writeTimeout)
		if !errors.Is(err, dbroute.ErrCommitUnconfirmed) {
			b.Fatalf("write %d: %v, want ErrCommitUnconfirmed", i, err)
		}
	}
	b.StopTimer()
	var sum time.Duration
	for _, d := range over {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(over))/1000, "mean-over-ms")
	b.ReportMetric(float64(slices.Max(over).Microseconds())/1000, "max-over-ms")
}
