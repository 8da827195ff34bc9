package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"socnet/internal/load"
	"socnet/internal/noderole"
)

const loadUsage = `usage: socnet load [flags]
       socnet load --compare A.json B.json [--html FILE] [--png DIR]

Drives the socnet API with a workload and reports throughput, latency
(HDR histograms: p50 p90 p99 p99.9 max), errors by status and kind, and,
given the database nodes, the load each node carried (transactions, tuples,
CPU, replication lag), as text, JSON, HTML and PNG charts.

Workload: --scenario get|search|register|post|feed|dialog|unread|healthz, or --mix
get=70,search=20,register=5,post=5. Users come from the database when
--dsn is given (or the stack's nodes are known): TABLESAMPLE of the users
table, logged in with the seed password; otherwise users are registered
through the API.

Closed loop by default (--connections N); --rate R runs an open loop at R
req/s whose latency counts from each request's scheduled time, so stalls
are not hidden. Bound the run with --duration and/or --requests.

The stack under --home (default ~/.socnet, if there is one) gives the API's
address, the nodes to sample (from 'socnet status --home DIR --json') and
the users table; --url, --status FILE|-, --nodes name=DSN,... and --dsn
override it.

flags:
`

// cmdLoad runs `socnet load`.
func cmdLoad(ctx context.Context, e *env, args []string) error {
	fs := newFlags("load", e)
	fs.Usage = func() {
		fmt.Fprint(e.stderr, loadUsage)
		fs.PrintDefaults()
	}
	home := fs.HomeDir()
	target := fs.String("url", "", "base URL of the socnet API (default: the stack's API, else http://127.0.0.1:8080)")
	dsn := fs.String("dsn", "", "PostgreSQL DSN of a node with the users table to sample users from (default: the stack's)")
	dbName := fs.String("database", "", "database of the users table (default: the DSN's, or the stack's "+mainDBName+"); also restricts node statistics to it (default: all databases)")
	var (
		allowRemote = fs.FlagSet.Bool("allow-remote", false, "allow a target that is not a loopback address")
		scenario    = fs.FlagSet.String("scenario", "get", "workload: get, search, register, post, feed, dialog, unread, healthz or mix (see --mix)")
		mixSpec     = fs.FlagSet.String("mix", "", "weighted mix of scenarios, e.g. get=70,search=20,register=5,post=5")
		conns       = fs.FlagSet.Int("connections", 0, "concurrent requests (closed loop, default 16) or most in flight (open loop, default rate/10, at least 32)")
		rate        = fs.FlagSet.Float64("rate", 0, "open loop: requests per second (0: closed loop)")
		duration    = fs.FlagSet.Duration("duration", 10*time.Second, "how long to send (0: bounded by --requests only)")
		requests    = fs.FlagSet.Int64("requests", 0, "how many requests to send (0: bounded by --duration only)")
		timeout     = fs.FlagSet.Duration("timeout", 5*time.Second, "per request: connecting and waiting for the response headers")
		cpus        = fs.FlagSet.Int("cpus", 0, "GOMAXPROCS of the generator (0: all cores)")
		label       = fs.FlagSet.String("label", "", "name of the run in reports, e.g. \"reads on replicas\"")
		jsonOut     = fs.FlagSet.String("json", "", "write the result as JSON to FILE, or - for stdout")
		htmlOut     = fs.FlagSet.String("html", "", "write a self-contained HTML report to FILE")
		pngOut      = fs.FlagSet.String("png", "", "write PNG charts into DIR")
		compare     = fs.FlagSet.Bool("compare", false, "compare two saved runs: socnet load --compare A.json B.json")
		data        = fs.FlagSet.String("data", "auto", "where users come from: auto (the database when a DSN is known), db or api")
		usersTable  = fs.FlagSet.String("users-table", "", "sample the users from this table (id, first_name, second_name) instead of users, e.g. a chosen set")
		users       = fs.FlagSet.Int("users", 20, "users to log in (or to register when users come from the API)")
		password    = fs.FlagSet.String("password", load.SeedPassword, "password of seeded users")
		nodesSpec   = fs.FlagSet.String("nodes", "", "database nodes to sample: name=DSN,name=DSN (instead of the stack's)")
		statusFile  = fs.FlagSet.String("status", "", "read the nodes from a 'socnet status --json' document in FILE, or - for stdin (instead of the stack's)")
		quiet       = fs.FlagSet.Bool("quiet", false, "no progress line")
	)
	positional, err := parseInterspersed(fs.FlagSet, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	summaryOut := e.stdout
	if *jsonOut == "-" {
		summaryOut = e.stderr // keep stdout for the JSON
	}

	if *compare {
		if len(positional) != 2 {
			return usageError{errors.New("load --compare takes two result files: A.json B.json")}
		}
		if *jsonOut != "" {
			return usageError{errors.New("load --compare writes no JSON: the two runs are the data")}
		}
		return loadCompare(e, positional[0], positional[1], *htmlOut, *pngOut, summaryOut)
	}
	if len(positional) > 0 {
		return usageError{fmt.Errorf("load: unexpected argument %q", positional[0])}
	}

	mix, err := loadMix(fs.FlagSet, *scenario, *mixSpec)
	if err != nil {
		return usageError{err}
	}
	if *cpus < 0 || *cpus > 1024 {
		return usageError{fmt.Errorf("load: --cpus %d: want 1 to 1024", *cpus)}
	}
	if *data != "auto" && *data != "db" && *data != "api" {
		return usageError{fmt.Errorf("load: --data %q: want auto, db or api", *data)}
	}

	// The stack under --home supplies defaults: the API's address, the
	// nodes to sample and a DSN of the users table. It must exist when
	// --home (or SOCNET_HOME) names it; the default home may hold none.
	homeSet := e.getenv("SOCNET_HOME") != ""
	fs.Visit(func(f *flag.Flag) { homeSet = homeSet || f.Name == "home" })
	var stack load.Stack
	var info stackInfo
	haveInfo := false
	if i, err := readStack(*home); err == nil {
		info, haveInfo = i, true
	} else if homeSet {
		return fmt.Errorf("load: %w", err)
	}
	switch {
	case *statusFile == "-":
		stack, err = load.ParseStatusJSON(os.Stdin)
	case *statusFile != "":
		stack, err = stackFromFile(*statusFile)
	case *nodesSpec == "" && haveInfo:
		stack, err = stackFromHome(ctx, e, *home)
		if err != nil && !homeSet {
			e.log.Warn("no status of the stack; sampling no database node", "home", *home, "err", err)
			err = nil
		}
	}
	if err != nil {
		return err
	}
	nodes := stack.Nodes
	if *nodesSpec != "" {
		extra, err := load.ParseNodes(*nodesSpec)
		if err != nil {
			return usageError{err}
		}
		nodes = append(nodes, extra...)
	}

	if *target == "" {
		switch {
		case stack.ServiceAddr("api") != "":
			*target = "http://" + stack.ServiceAddr("api")
		case haveInfo && info.API != "":
			*target = "http://" + info.API
		default:
			*target = "http://127.0.0.1:8080"
		}
	}

	needUsers, needSessions, err := load.NeedsData(mix)
	if err != nil {
		return usageError{err}
	}
	usersDSN, usersDB := *dsn, *dbName
	if usersDSN == "" && *data != "api" {
		// The nodes' DSNs are the administrator's and name no database.
		if usersDSN = usersNode(nodes); usersDSN != "" && usersDB == "" {
			usersDB = mainDBName
		}
		if usersDSN == "" && haveInfo && len(info.MainDB) > 0 {
			usersDSN = info.MainDB[0]
		}
	}
	if *data == "db" && usersDSN == "" {
		return usageError{errors.New("load: --data db needs --dsn, --status or a stack in --home")}
	}
	if *data == "api" {
		usersDSN = ""
	}
	if *cpus > 0 {
		prev := runtime.GOMAXPROCS(*cpus)
		defer runtime.GOMAXPROCS(prev)
	}

	pc := load.PrepareConfig{Target: *target, AllowRemote: *allowRemote, DSN: usersDSN, Database: usersDB, UsersTable: *usersTable, Sessions: *users,
		Password: *password, NeedUsers: needUsers, NeedSessions: needSessions, Timeout: *timeout, Log: e.log}
	ds, err := load.Prepare(ctx, pc)
	if err != nil && *data == "auto" && usersDSN != "" && ctx.Err() == nil {
		e.log.Warn("cannot sample users from the database; registering users through the API", "err", err)
		pc.DSN = ""
		ds, err = load.Prepare(ctx, pc)
	}
	if err != nil {
		return fmt.Errorf("load: prepare: %w", err)
	}

	cfg := load.Config{
		Target: *target, AllowRemote: *allowRemote, Mix: mix, Connections: *conns, Rate: *rate,
		Duration: *duration, Requests: *requests, Timeout: *timeout, Label: *label, Data: ds,
		Nodes: nodes, Database: *dbName, Log: e.log,
	}
	if !*quiet {
		cfg.Progress = e.stderr
		cfg.ProgressTTY = isTerminal(e.stderr)
	}
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return usageError{fmt.Errorf("load: %w", err)}
	}
	if err := load.WriteSummary(summaryOut, res); err != nil {
		return err
	}
	if err := writeLoadReports(e, res, *jsonOut, *htmlOut, *pngOut, summaryOut); err != nil {
		return err
	}
	if res.Interrupted {
		return errors.New("load: interrupted")
	}
	return nil
}

// parseInterspersed parses flags that may come after positional arguments
// (socnet load --compare A.json B.json --html out.html); everything after
// "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional, tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return append(positional, tail...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// loadMix returns the workload of --scenario and --mix.
func loadMix(fs *flag.FlagSet, scenario, mixSpec string) ([]load.MixPart, error) {
	scenarioSet := false
	fs.Visit(func(f *flag.Flag) { scenarioSet = scenarioSet || f.Name == "scenario" })
	switch {
	case mixSpec != "" && scenarioSet && scenario != "mix":
		return nil, fmt.Errorf("load: --mix weighs scenarios itself; drop --scenario %s", scenario)
	case mixSpec != "":
		return load.ParseMix(mixSpec)
	case scenario == "mix":
		return nil, errors.New("load: --scenario mix needs --mix, e.g. get=70,search=20,register=5,post=5")
	}
	if strings.Contains(scenario, ",") || strings.Contains(scenario, "=") {
		return nil, fmt.Errorf("load: --scenario %q: one scenario; use --mix for several", scenario)
	}
	return load.ParseMix(scenario)
}

// usersNode returns the DSN to sample users from: a replica of the main
// cluster if there is one, so that sampling does not touch the primary.
func usersNode(nodes []load.Node) string {
	var primary string
	for _, n := range nodes {
		if n.Cluster != "" && n.Cluster != mainCluster {
			continue
		}
		switch n.Role {
		case noderole.Replica:
			return n.DSN
		case noderole.Primary:
			primary = n.DSN
		}
	}
	return primary
}

// stackFromHome asks this binary for the status of the stack under dir.
func stackFromHome(ctx context.Context, e *env, dir string) (load.Stack, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.self, "status", "--home", dir, "--json")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return load.Stack{}, fmt.Errorf("load: socnet status --home %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	st, err := load.ParseStatusJSON(bytes.NewReader(out))
	if err != nil {
		return load.Stack{}, fmt.Errorf("load: status of %s: %w", dir, err)
	}
	return st, nil
}

func stackFromFile(path string) (load.Stack, error) {
	f, err := os.Open(path)
	if err != nil {
		return load.Stack{}, fmt.Errorf("load: %w", err)
	}
	defer f.Close()
	st, err := load.ParseStatusJSON(f)
	if err != nil {
		return load.Stack{}, fmt.Errorf("load: %s: %w", path, err)
	}
	return st, nil
}

// writeLoadReports writes the JSON, HTML and PNG outputs that were asked for.
func writeLoadReports(e *env, res *load.Result, jsonOut, htmlOut, pngOut string, notes io.Writer) error {
	if jsonOut != "" {
		if err := writeOutput(e, jsonOut, func(w io.Writer) error { return load.WriteJSON(w, res) }); err != nil {
			return err
		}
	}
	if htmlOut != "" {
		if err := writeOutput(e, htmlOut, func(w io.Writer) error { return load.WriteHTML(w, res) }); err != nil {
			return err
		}
		fmt.Fprintf(notes, "html report: %s\n", htmlOut)
	}
	if pngOut != "" {
		paths, err := load.WritePNGs(pngOut, res)
		if err != nil {
			return err
		}
		fmt.Fprintf(notes, "charts: %s\n", strings.Join(paths, " "))
	}
	return nil
}

// loadCompare reports run b beside run a.
func loadCompare(e *env, pathA, pathB, htmlOut, pngOut string, notes io.Writer) error {
	a, err := load.ReadJSONFile(pathA)
	if err != nil {
		return err
	}
	b, err := load.ReadJSONFile(pathB)
	if err != nil {
		return err
	}
	if err := load.WriteCompareSummary(notes, a, b); err != nil {
		return err
	}
	if htmlOut != "" {
		if err := writeOutput(e, htmlOut, func(w io.Writer) error { return load.WriteCompareHTML(w, a, b) }); err != nil {
			return err
		}
		fmt.Fprintf(notes, "html report: %s\n", htmlOut)
	}
	if pngOut != "" {
		paths, err := load.WriteComparePNGs(pngOut, a, b)
		if err != nil {
			return err
		}
		fmt.Fprintf(notes, "charts: %s\n", strings.Join(paths, " "))
	}
	return nil
}

// writeOutput writes to stdout for "-", else to a new file at path.
func writeOutput(e *env, path string, write func(io.Writer) error) error {
	if path == "-" {
		return write(e.stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	return nil
}
