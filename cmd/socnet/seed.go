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
	friends := fs.Int("friends", 0, "then make each generated person follow this many others, drawn from a power law (a few authors get tens of thousands of followers)")
	posts := fs.Int("posts", 0, "then have each generated person write this many posts over the last 30 days")
	skew := fs.Float64("skew", seed.DefaultSkew, "exponent of the followers' power law (> 1; higher: more concentrated)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *users < 0 || *batch < 1 || *friends < 0 || *posts < 0 || *skew <= 1 {
		return usageError{fmt.Errorf("seed: --users, --friends and --posts must be ≥ 0, --batch ≥ 1 and --skew > 1")}
	}
	if *csv != "" && (*friends > 0 || *posts > 0) {
		return usageError{fmt.Errorf("seed: --friends and --posts work on generated people, not --csv")}
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
	if *friends == 0 && *posts == 0 {
		return nil
	}
	// Straight into PostgreSQL: feed timelines are rebuilt from the tables
	// on their first read.
	g, err := seed.Graph(ctx, rdb, seed.GraphOptions{Users: res.Target, Seed: int64(*seedN), Friends: *friends,
		Posts: *posts, Skew: *skew}, e.stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "graph: %d follows and %d posts written now, in %s\n", g.Friends, g.Posts, g.Elapsed.Round(time.Millisecond))
	return nil
}
