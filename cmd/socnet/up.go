package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/patroni"
	"socnet/internal/stack"
)

// Names of the stack's clusters and databases (stack's).
const (
	mainDBName     = stack.MainDB
	counterDBName  = stack.CounterDB
	mainCluster    = stack.MainCluster
	counterCluster = stack.CounterCluster
)

func cmdUp(ctx context.Context, e *env, args []string) error {
	fs := newFlags("up", e)
	home := fs.HomeDir()
	engine := fs.String("engine", stack.EngineSocnet, "what runs the PostgreSQL clusters: socnet (its own supervisor) or patroni (Patroni with etcd); a home keeps the engine that made it")
	hosts := fs.String("hosts", stack.HostsLocal, "where the nodes and services run: local (the machine's own network) or netns (each on its own network namespace, behind HAProxy on --http; needs root)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "address of the API (port 0: a free port, printed once up)")
	counterAddr := fs.String("counter-http", "", "address of the counter service (default: a free port chosen at first start and kept in the home)")
	relayAddr := fs.String("relay-http", "", "address of the outbox relay's /metrics and /healthz (default: a free port chosen at first start and kept in the home)")
	deadAfter := fs.Duration("dead-after", time.Second, "a primary failing its probes this long is failed over")
	sharedBuffers := fs.String("main-shared-buffers", cluster.MainSpec().Settings["shared_buffers"], "shared_buffers of the main cluster's nodes, when it is created")
	patroniTiming := fs.String("patroni-timing", "", "the Patroni engine's leader-lease timing: fast (ttl 10, loop_wait 1, retry_timeout 4) or default (Patroni's 30, 10, 10); empty keeps the home's (fast at first start); see docs/CLUSTER.md")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *hosts != stack.HostsLocal && *hosts != stack.HostsNetns {
		return usageError{fmt.Errorf("--hosts %q: want %s or %s", *hosts, stack.HostsLocal, stack.HostsNetns)}
	}
	timing, err := patroni.TimingByName(*patroniTiming)
	if err != nil {
		return usageError{fmt.Errorf("up: --patroni-timing: %w", err)}
	}
	if *patroniTiming != "" && *engine != stack.EnginePatroni {
		return usageError{fmt.Errorf("up: --patroni-timing is for --engine %s", stack.EnginePatroni)}
	}
	h, err := stack.NewHome(*home)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	eng, err := newEngine(*engine, h, e.log, engineOptions{DeadAfter: *deadAfter, MainSharedBuffers: *sharedBuffers, PatroniTiming: timing})
	if err != nil {
		return err
	}
	return stack.Up(ctx, stack.Config{Home: h, HTTP: *httpAddr, CounterHTTP: *counterAddr, RelayHTTP: *relayAddr,
		Hosts: *hosts, Self: e.self, Log: e.log, Out: e.stdout}, eng)
}

// engineOptions tune the engine `up` runs; zero values are the defaults.
type engineOptions struct {
	DeadAfter         time.Duration // socnet: a primary failing its probes this long is failed over
	MainSharedBuffers string        // shared_buffers of the main nodes at creation
	// PatroniTiming is the Patroni engine's leader-lease timing; zero keeps
	// the home's (fast at first start).
	PatroniTiming patroni.Timing
}

// newEngine returns the engine name for the home: the one place that knows
// the engines.
func newEngine(name string, h stack.Home, log *slog.Logger, o engineOptions) (stack.Engine, error) {
	switch name {
	case stack.EngineSocnet:
		return stack.NewSocnetEngine(h, log, stack.SocnetOptions{
			Cluster: cluster.Options{DeadAfter: o.DeadAfter}, MainSharedBuffers: o.MainSharedBuffers}), nil
	case stack.EnginePatroni:
		pe, err := patroni.NewEngine(patroni.EngineConfig{Home: h, Logger: log,
			Timing: o.PatroniTiming, MainSharedBuffers: o.MainSharedBuffers})
		if err != nil {
			return nil, err // not a typed nil *patroni.Engine
		}
		return pe, nil
	}
	return nil, usageError{fmt.Errorf("--engine %q: want %s or %s", name, stack.EngineSocnet, stack.EnginePatroni)}
}

// recordedEngine returns the engine that made the home, for the commands
// that work on a home where no `up` runs.
func recordedEngine(h stack.Home, log *slog.Logger) (stack.Engine, error) {
	name, err := stack.RecordedEngine(h)
	if err != nil {
		return nil, err
	}
	return newEngine(name, h, log, engineOptions{})
}

// closeEngine releases what an engine opened to read or act on a home.
func closeEngine(eng stack.Engine) {
	if c, ok := eng.(interface{ Close() }); ok {
		c.Close()
	}
}
