package main

import (
	"context"
	"fmt"
	"time"

	"socnet/internal/dbroute"
	"socnet/internal/seed"
)

func cmdSeed(ctx context.Context, e *env, args []string) error {
	fs := newFlags("seed", e)
	home := fs.HomeDir()
	db := fs.String("db", "", "administrator DSNs of the main database's nodes, separated by spaces (default: the stack in --home)")
	users := fs.Int("users", seed.DefaultUsers, "how many people to generate")
	seedN := fs.Int("seed", 1, "random seed: the same seed gives the same people")
	batch := fs.Int("batch", seed.DefaultBatchSize, "rows per COPY transaction")
	csv := fs.String("csv", "", "load the course's people file (`Фамилия Имя,YYYY-MM-DD,Город` per line) instead of generating")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *users < 0 || *batch < 1 {
		return usageError{fmt.Errorf("seed: --users must be ≥ 0 and --batch ≥ 1")}
	}
	nodes, err := mainAdminNodes(*db, *home)
	if err != nil {
		return err
	}
	rdb, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Nodes: nodes, MaxConns: 4, WriteTimeout: 2 * time.Minute}, e.log)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	defer rdb.Close()
	opts := seed.Options{Users: *users, Seed: int64(*seedN), BatchSize: *batch, Terminal: isTerminal(e.stderr)}
	var res seed.Result
	if *csv != "" {
		res, err = seed.LoadCSV(ctx, rdb, *csv, opts, e.stderr)
	} else {
		res, err = seed.Run(ctx, rdb, opts, e.stderr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "seeded: %d loaded now, %d already there, %d in all, %d lines skipped, in %s\n",
		res.Loaded, res.Existing, res.Target, len(res.Skipped), res.Elapsed.Round(time.Millisecond))
	for _, b := range res.Skipped {
		fmt.Fprintf(e.stdout, "  skipped line %d: %s\n", b.Line, b.Reason)
	}
	return nil
}
