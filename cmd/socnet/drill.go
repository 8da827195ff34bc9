package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/drill"
	"socnet/internal/netns"
	"socnet/internal/patroni"
	"socnet/internal/stack"
)

// drillUsage lists the drills.
const drillUsage = `usage: socnet drill DRILL [flags]

Failure experiments against the stack of 'socnet up --home DIR'; each judges
itself and exits non-zero (3) when an acknowledged write was lost (or, on the
counter cluster, when an unread counter drifted from the messages or lost an
acknowledged state or read mark). The failover and replica drills also record
the history of a few sessions writing and reading through the API and check
it: no acknowledged write lost, no read staler than --max-replica-lag,
read-your-writes in each session.

drills:
  failover   SIGKILL a cluster's primary (--fault postmaster) or its host
             (--fault host: the postmaster and the node's agent) under write
             load, its asynchronous replica held back; verify every node
             (--cluster counter: dialog messages and read marks, then the
             unread counters)
  fill       SIGKILL the primary part-way through a bulk load of users; verify
  replica    SIGKILL the sync replica, the async one, then both, under load
  partition  cut a host off the network under write load (a stack of
             'socnet up --hosts netns'), heal it; verify every node, and that
             there were never two primaries
  compare    group failover reports (--json files) by engine and fault into
             one table: write unavailability, promotion, rejoin, writes lost
             and in doubt (scripts/bench.sh engines runs it)

Run 'socnet drill DRILL -h' for the flags of a drill. docs/DRILLS.md explains
what each drill proves and how to read its report.
`

func cmdDrill(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, drillUsage)
		if len(args) == 0 {
			return usageError{fmt.Errorf("drill: name a drill")}
		}
		return nil
	}
	switch args[0] {
	case drill.DrillFailover:
		return drillFailover(ctx, e, args[1:])
	case drill.DrillFill:
		return drillFill(ctx, e, args[1:])
	case drill.DrillReplica:
		return drillReplica(ctx, e, args[1:])
	case drill.DrillPartition:
		return drillPartition(ctx, e, args[1:])
	case "compare":
		return drillCompare(e, args[1:])
	}
	fmt.Fprint(e.stderr, drillUsage)
	return usageError{fmt.Errorf("drill: unknown drill %q", args[0])}
}

// reportFlags are the output flags every drill has.
type reportFlags struct {
	json, html *string
}

func addReportFlags(fs *flags) reportFlags {
	return reportFlags{
		json: fs.String("json", "", "also write the report as JSON to this file"),
		html: fs.String("html", "", "also write the report as an HTML page with a timeline chart to this file"),
	}
}

// finish prints the report, writes its files and turns a failed verdict
// into an error with exit status 3.
func (rf reportFlags) finish(e *env, r drill.Report) error {
	if err := r.WriteText(e.stdout); err != nil {
		return err
	}
	if *rf.json != "" {
		if err := r.WriteFile(*rf.json, drill.Report.WriteJSON); err != nil {
			return err
		}
	}
	if *rf.html != "" {
		if err := r.WriteFile(*rf.html, drill.Report.WriteHTML); err != nil {
			return err
		}
	}
	return drill.VerdictError(r)
}

func drillFailover(ctx context.Context, e *env, args []string) error {
	fs := newFlags("drill failover", e)
	home := fs.HomeDir()
	clusterName := fs.String("cluster", mainCluster, "cluster whose primary is killed: main (posts through the API) or counter (dialog messages and read marks through the API, then the unread counters are checked)")
	writes := fs.String("writes", writesAPI, "how the drill writes: api, or sql (direct INSERTs into drill_writes; --cluster counter only)")
	killAfter := fs.String("kill-after", drill.DefaultKillAfter.String(), "when to kill the primary after the writes start: a duration, or random (20%-80% of --duration)")
	duration := fs.Duration("duration", drill.DefaultDuration, "how long to write at least")
	writers := fs.Int("writers", drill.DefaultWriters, "concurrent writers")
	repeat := fs.Int("repeat", 1, "runs; each kills the primary of the moment")
	hold := fs.Bool("hold-async", true, "hold the asynchronous replica back from the WAL from half-way to the kill, so that promoting it would lose writes")
	faultName := fs.String("fault", string(drill.FaultPostmaster), "what is done to the primary: postmaster (SIGKILL to the postmaster and its children) or host (the postmaster and the node's agent at once, the node kept down until another is primary)")
	hf := addHistoryFlags(fs)
	rf := addReportFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	fault, err := drill.ParseFault(*faultName)
	if err != nil {
		return usageError{fmt.Errorf("drill failover: --fault: %w", err)}
	}
	opt := drill.FailoverOptions{Duration: *duration, Writers: *writers, Log: e.log, NoHold: !*hold, Fault: fault}
	if *killAfter == "random" {
		opt.RandomKill = true
	} else {
		d, err := time.ParseDuration(*killAfter)
		if err != nil || d <= 0 {
			return usageError{fmt.Errorf("drill failover: --kill-after %q: want a positive duration or random", *killAfter)}
		}
		opt.KillAfter = d
	}
	if err := checkDrillFlags(*duration, *writers, *repeat); err != nil {
		return err
	}
	if err := checkWrites(*clusterName, *writes); err != nil {
		return err
	}
	if err := hf.check(); err != nil {
		return err
	}
	t, closeTarget, err := drillTarget(ctx, e, *home, *clusterName, *writes, *writers)
	if err != nil {
		return err
	}
	defer closeTarget()
	if err := hf.attach(ctx, &t, *home); err != nil {
		return err
	}
	runs, err := drill.RepeatFailover(ctx, t, *repeat, opt)
	if len(runs) > 0 {
		if ferr := rf.finish(e, drill.NewReport(drill.DrillFailover, *clusterName, runs)); ferr != nil && err == nil {
			return ferr
		}
	}
	if err != nil {
		return fmt.Errorf("drill failover: %w", err)
	}
	return nil
}

// drillCompare groups the failover runs of report files by engine and
// fault, prints the table, and writes it as JSON, HTML and into a Markdown
// document between its markers. Its exit status is 3 when a run failed.
func drillCompare(e *env, args []string) error {
	fs := newFlags("drill compare", e)
	jsonOut := fs.String("json", "", "write the comparison as JSON to this file")
	htmlOut := fs.String("html", "", "write the comparison as an HTML page to this file")
	mdInto := fs.String("markdown-into", "", "put the table between the markers "+drill.CompareBegin+" and "+drill.CompareEnd+" of this Markdown file (added at its end when absent)")
	command := fs.String("command", "socnet drill compare", "the command that produced the reports, for the record")
	files, err := parseInterspersed(fs.FlagSet, args)
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	if err != nil {
		return usageError{err}
	}
	if len(files) == 0 {
		return usageError{errors.New("drill compare: name the failover reports (socnet drill failover --json FILE)")}
	}
	var reports []drill.Report
	for _, f := range files {
		r, err := drill.ReadReport(f)
		if err != nil {
			return fmt.Errorf("drill compare: %w", err)
		}
		reports = append(reports, r)
	}
	c := drill.Compare(reports, drill.Machine(), *command)
	if len(c.Rows) == 0 {
		return fmt.Errorf("drill compare: the reports hold no failover run")
	}
	if err := c.WriteText(e.stdout); err != nil {
		return err
	}
	if *jsonOut != "" {
		if err := writeFileWith(*jsonOut, c.WriteJSON); err != nil {
			return fmt.Errorf("drill compare: %w", err)
		}
	}
	if *htmlOut != "" {
		if err := writeFileWith(*htmlOut, c.WriteHTML); err != nil {
			return fmt.Errorf("drill compare: %w", err)
		}
	}
	if *mdInto != "" {
		if err := c.WriteMarkdownInto(*mdInto); err != nil {
			return fmt.Errorf("drill compare: %w", err)
		}
	}
	if !c.OK {
		return drill.CompareError(c)
	}
	return nil
}

// writeFileWith creates path and writes it with write.
func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func drillReplica(ctx context.Context, e *env, args []string) error {
	fs := newFlags("drill replica", e)
	home := fs.HomeDir()
	clusterName := fs.String("cluster", mainCluster, "cluster whose replicas are killed: main or counter")
	writers := fs.Int("writers", drill.DefaultWriters, "concurrent writers")
	settle := fs.Duration("settle", 2*time.Second, "writing before each kill and after the replicas are back")
	hf := addHistoryFlags(fs)
	rf := addReportFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := checkDrillFlags(*settle, *writers, 1); err != nil {
		return err
	}
	if err := hf.check(); err != nil {
		return err
	}
	// The replica drill measures the stalls of commits on the cluster whose
	// replicas die; dialog messages commit on main, so the counter cluster
	// gets direct SQL writes.
	writes := writesAPI
	if *clusterName != mainCluster {
		writes = writesSQL
	}
	t, closeTarget, err := drillTarget(ctx, e, *home, *clusterName, writes, *writers)
	if err != nil {
		return err
	}
	defer closeTarget()
	if err := hf.attach(ctx, &t, *home); err != nil {
		return err
	}
	run, err := drill.RunReplica(ctx, t, drill.ReplicaOptions{Writers: *writers, Settle: *settle, Log: e.log})
	if err != nil {
		return err
	}
	return rf.finish(e, drill.NewReport(drill.DrillReplica, *clusterName, []drill.Run{run}))
}

// Targets of the partition drill (--target).
const (
	partitionPrimary = "primary" // the cluster's primary's host
	partitionSync    = "sync"    // the synchronous replica's host
	partitionAPI     = "api"     // the first API instance's host (api-1)
	partitionEtcd    = "etcd"    // an etcd member's host (Patroni engine)
	// the primary's host and the etcd leader's at once (Patroni engine):
	// the majority side must elect a new etcd leader and fail over
	partitionPrimaryEtcd = "primary+etcd-leader"
)

// etcdLeaderWait bounds the wait for an etcd leader to cut (an election
// after the previous run's heal).
const etcdLeaderWait = 30 * time.Second

func drillPartition(ctx context.Context, e *env, args []string) error {
	fs := newFlags("drill partition", e)
	home := fs.HomeDir()
	clusterName := fs.String("cluster", mainCluster, "cluster written and watched: main or counter")
	target := fs.String("target", partitionPrimary, "what to cut off: primary, sync (the synchronous replica), api (the host of api-1), etcd (an etcd member, Patroni engine) or primary+etcd-leader (both hosts at once, Patroni engine)")
	hostFlag := fs.String("host", "", "host to cut off by name instead of --target: a node (main-1), or another host of the stack (api-2)")
	repeat := fs.Int("repeat", 1, "runs; each cuts the target of the moment (the primary changes with each failover)")
	cutAfter := fs.Duration("cut-after", drill.DefaultKillAfter, "when to cut the host off after the writes start")
	cutFor := fs.Duration("cut-for", drill.DefaultHealAfter, "how long the host stays cut off before it is healed")
	duration := fs.Duration("duration", drill.DefaultDuration, "how long to write at least")
	writers := fs.Int("writers", drill.DefaultWriters, "concurrent writers")
	rf := addReportFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := checkDrillFlags(*duration, *writers, *repeat); err != nil {
		return err
	}
	if *cutAfter <= 0 || *cutFor <= 0 {
		return usageError{fmt.Errorf("drill partition: --cut-after and --cut-for must be positive")}
	}
	switch *target {
	case partitionPrimary, partitionSync, partitionAPI, partitionEtcd, partitionPrimaryEtcd:
	default:
		return usageError{fmt.Errorf("drill partition: --target %q: want %s, %s, %s, %s or %s", *target,
			partitionPrimary, partitionSync, partitionAPI, partitionEtcd, partitionPrimaryEtcd)}
	}
	if *hostFlag != "" && *target == partitionPrimaryEtcd {
		return usageError{fmt.Errorf("drill partition: --host and --target %s exclude each other", partitionPrimaryEtcd)}
	}
	hosts, err := netns.Attach(ctx, *home)
	if err != nil {
		return fmt.Errorf("drill partition: %w", err)
	}
	// pick names the host to cut, asked again before each run: the
	// primary and the synchronous replica change with every failover. also
	// are the hosts cut with it (the etcd leader's, which moves too).
	pick := func(ctx context.Context) (host string, also []string, isNode bool, err error) {
		st, err := stackStatusFunc(*home)(ctx)
		if err != nil {
			return "", nil, false, err
		}
		cs, ok := st.Cluster(*clusterName)
		if !ok {
			return "", nil, false, usageError{fmt.Errorf("drill partition: the stack in %s has no cluster %q", *home, *clusterName)}
		}
		host = *hostFlag
		if host == "" {
			switch *target {
			case partitionSync:
				for _, n := range cs.Nodes {
					if n.Role == cluster.RoleReplica && n.SyncState == "sync" {
						host = n.Name
					}
				}
				if host == "" {
					return "", nil, false, fmt.Errorf("drill partition: cluster %s has no synchronous replica now", *clusterName)
				}
			case partitionAPI:
				host = "api-1"
			case partitionEtcd, partitionPrimaryEtcd:
				if st.Engine != stack.EnginePatroni {
					return "", nil, false, usageError{fmt.Errorf("drill partition: --target %s: the %s engine runs no etcd (its supervisor lives in `up`); it is a target under --engine %s",
						*target, st.Engine, stack.EnginePatroni)}
				}
				if *target == partitionPrimaryEtcd {
					leader, err := waitEtcdLeader(ctx, *home, hosts, etcdLeaderWait)
					if err != nil {
						return "", nil, false, fmt.Errorf("drill partition: %w", err)
					}
					return "", []string{leader}, true, nil // with the primary of the moment
				}
				// The Patroni engine's etcd members run on hosts etcd-1..3
				// (stack.HostedEngine); one of three is a minority.
				host = "etcd-1"
			}
		}
		if host == "" { // the primary of the moment, which RunPartition finds
			return "", nil, true, nil
		}
		if _, ok := hosts.Addr(host); !ok {
			return "", nil, false, usageError{fmt.Errorf("drill partition: --host %q: the stack's hosts are %s", host, strings.Join(hosts.Hosts(), ", "))}
		}
		_, isNode = cs.Node(host)
		return host, nil, isNode, nil
	}
	host, also, isNode, err := pick(ctx)
	if err != nil {
		return err
	}
	// A node's cut is written with SQL, so that the drill knows which node
	// acknowledged each write; any other host's (an API instance) through
	// the API at --http, so that the report counts what clients saw.
	writes := writesSQL
	if !isNode {
		writes = writesAPI
	}
	t, closeTarget, err := drillTarget(ctx, e, *home, *clusterName, writes, *writers)
	if err != nil {
		return err
	}
	defer closeTarget()
	fault := "cut-" + *target // the comparison's row (drill compare)
	if *hostFlag != "" {
		fault = "cut-" + *hostFlag
	}
	var runs []drill.Run
	for i := range *repeat {
		if i > 0 {
			if host, also, _, err = pick(ctx); err != nil {
				return err
			}
		}
		var cutter drill.Partitioner = hosts
		if len(also) > 0 {
			cutter = drill.CutTogether{P: hosts, Also: also}
			e.log.Info("drill: cutting the primary's host together with", "hosts", also)
		}
		run, err := drill.RunPartition(ctx, t, cutter, drill.PartitionOptions{
			Host: host, Duration: *duration, CutAfter: *cutAfter, HealAfter: *cutFor, Writers: *writers, Log: e.log,
		})
		if err != nil {
			return fmt.Errorf("drill partition: run %d of %d: %w", i+1, *repeat, err)
		}
		run.Fault = fault
		for i, ev := range run.Events {
			if ev.Kind == drill.EventCut && len(also) > 0 {
				run.Events[i].Detail += ", and those of " + strings.Join(also, ", ") + ", the etcd leader"
			}
		}
		runs = append(runs, run)
	}
	return rf.finish(e, drill.NewReport(drill.DrillPartition, *clusterName, runs))
}

// waitEtcdLeader returns the host of the etcd leader of the Patroni stack
// in home, waiting out an election for up to limit.
func waitEtcdLeader(ctx context.Context, home string, hosts *netns.Net, limit time.Duration) (string, error) {
	h, err := stack.NewHome(home)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		leader, err := patroni.EtcdLeaderHost(ctx, h, hosts.Addr)
		if err == nil {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func drillFill(ctx context.Context, e *env, args []string) error {
	fs := newFlags("drill fill", e)
	home := fs.HomeDir()
	users := fs.Int("users", 1_000_000, "users to load")
	killAt := fs.String("kill-at", "30%", "kill the primary when this share of the users is acknowledged (30% or 0.3)")
	batch := fs.Int("batch", 0, "rows per COPY transaction (default: the loader's)")
	rf := addReportFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	share, err := parseShare(*killAt)
	if err != nil {
		return usageError{fmt.Errorf("drill fill: --kill-at: %w", err)}
	}
	if *users < 1 || *batch < 0 {
		return usageError{fmt.Errorf("drill fill: --users must be ≥ 1 and --batch ≥ 0")}
	}
	// The load runs as the administrator, like the verification: the drill
	// is an operator's tool.
	c := &drill.StackCluster{Status: stackStatusFunc(*home), Cluster: mainCluster, Database: mainDBName}
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return err
	}
	var dsns []string
	for _, n := range nodes {
		dsns = append(dsns, n.DSN)
	}
	db, err := dbroute.Open(ctx, dbroute.Config{Name: mainCluster, Nodes: dsns, MaxConns: 4, WriteTimeout: 2 * time.Minute}, e.log)
	if err != nil {
		return fmt.Errorf("drill fill: %w", err)
	}
	defer db.Close()
	run, err := drill.RunFill(ctx, db, c, drill.FillOptions{Users: *users, KillAt: share, BatchSize: *batch,
		Progress: e.stderr, Log: e.log})
	if err != nil {
		return err
	}
	return rf.finish(e, drill.NewReport(drill.DrillFill, mainCluster, []drill.Run{run}))
}

// historyFlags are the flags of the session workload whose history the
// failover and replica drills check.
type historyFlags struct {
	sessions *int
	lag      *time.Duration
}

func addHistoryFlags(fs *flags) historyFlags {
	return historyFlags{
		sessions: fs.Int("sessions", drill.DefaultSessions, "drill users writing and reading through the API next to the writers, whose history is checked; 0: none"),
		lag: fs.Duration("max-replica-lag", dbroute.DefaultMaxReplicaLag,
			"the API's --max-replica-lag: a read without a session may miss a write acknowledged at most this plus the health interval earlier"),
	}
}

func (hf historyFlags) check() error {
	switch {
	case *hf.sessions < 0 || *hf.sessions > 32:
		return usageError{fmt.Errorf("drill: --sessions must be 0 to 32, got %d", *hf.sessions)}
	case *hf.lag <= 0:
		return usageError{fmt.Errorf("drill: --max-replica-lag must be positive")}
	}
	return nil
}

// attach adds the session workload to t, its users signed up before the
// drill starts, when the stack runs an API.
func (hf historyFlags) attach(ctx context.Context, t *drill.Target, home string) error {
	if *hf.sessions == 0 {
		return nil
	}
	st, err := stackStatusFunc(home)(ctx)
	if err != nil {
		return err
	}
	addr, err := stackAPI(st, home)
	if err != nil {
		return err
	}
	s := drill.NewSessions(addr, *hf.sessions, *hf.lag+dbroute.DefaultHealthInterval, 15*time.Second)
	if err := s.Setup(ctx); err != nil {
		return fmt.Errorf("drill: %w", err)
	}
	t.Sessions = s
	return nil
}

func checkDrillFlags(duration time.Duration, writers, repeat int) error {
	switch {
	case duration <= 0:
		return usageError{fmt.Errorf("drill: durations must be positive")}
	case writers < 1 || writers > 256:
		return usageError{fmt.Errorf("drill: --writers must be 1 to 256, got %d", writers)}
	case repeat < 1 || repeat > 100:
		return usageError{fmt.Errorf("drill: --repeat must be 1 to 100, got %d", repeat)}
	}
	return nil
}

// parseShare reads "30%" or "0.3" as a share strictly between 0 and 1.
func parseShare(s string) (float64, error) {
	scale := 1.0
	if p, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		s, scale = p, 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a share (30%% or 0.3)", s)
	}
	v /= scale
	if v <= 0 || v >= 1 {
		return 0, fmt.Errorf("%q: want more than 0%% and less than 100%%", s)
	}
	return v, nil
}

// stackStatusFunc returns the status of the stack in home: the document of
// `socnet status --json`, which drills read.
func stackStatusFunc(home string) drill.StatusFunc {
	return func(ctx context.Context) (drill.Status, error) { return stackStatus(ctx, home) }
}

// The write paths of the failover and replica drills (--writes).
const (
	writesAPI = "api" // through the API: posts (main), dialog messages (counter)
	writesSQL = "sql" // direct INSERTs into drill_writes (counter)
)

// checkWrites refuses a write path the cluster has no use for.
func checkWrites(clusterName, writes string) error {
	switch {
	case writes != writesAPI && writes != writesSQL:
		return usageError{fmt.Errorf("drill: --writes %q: want %s or %s", writes, writesAPI, writesSQL)}
	case writes == writesSQL && clusterName == mainCluster:
		return usageError{fmt.Errorf("drill: --writes %s is for --cluster %s; the main cluster is written through the API", writesSQL, counterCluster)}
	}
	return nil
}

// drillTarget builds what the failover, replica and partition drills run
// against. With writes = sql, either cluster is written with direct SQL
// inserts into drill_writes through dbroute (the failover drill allows it
// on counter only). Otherwise the main cluster is written through the API
// (posts) and verified in its database, and the counter cluster through the
// API as the unread counter's saga (dialog messages, verified in the main
// database, then the counters checked against them).
func drillTarget(ctx context.Context, e *env, home, clusterName, writes string, writers int) (drill.Target, func(), error) {
	status := stackStatusFunc(home)
	st, err := status(ctx)
	if err != nil {
		return drill.Target{}, nil, err
	}
	cs, ok := st.Cluster(clusterName)
	if !ok {
		return drill.Target{}, nil, usageError{fmt.Errorf("drill: the stack in %s has no cluster %q", home, clusterName)}
	}
	c := &drill.StackCluster{Status: status, Cluster: clusterName}
	switch {
	case clusterName == mainCluster && writes != writesSQL:
		c.Database = mainDBName
		addr, err := stackAPI(st, home)
		if err != nil {
			return drill.Target{}, nil, err
		}
		return drill.Target{Writer: drill.NewAPIWriter(addr, writers, 15*time.Second), Cluster: c}, func() {}, nil
	case writes == writesAPI:
		t, err := dialogTarget(ctx, e, st, home, writers)
		if err != nil {
			return drill.Target{}, nil, err
		}
		t.Cluster = c
		return t, func() {}, nil
	default:
		var dsns []string
		for _, n := range cs.Nodes {
			dsns = append(dsns, n.DSN)
		}
		db, err := dbroute.Open(ctx, dbroute.Config{Name: clusterName, Nodes: dsns, MaxConns: int32(writers)}, e.log)
		if err != nil {
			return drill.Target{}, nil, fmt.Errorf("drill: %w", err)
		}
		w, err := drill.NewSQLWriter(ctx, db)
		if err != nil {
			db.Close()
			return drill.Target{}, nil, fmt.Errorf("drill: %w", err)
		}
		return drill.Target{Writer: w, Cluster: c}, db.Close, nil
	}
}

// dialogTarget returns the writes of a drill on the counter cluster through
// its saga: dialog messages sent through the API, verified on the main
// cluster, with a read mark of the recipient every drill.DefaultReadEvery
// sends, and the counters checked afterwards: every state and acknowledged
// read mark on the counter primary, the counts by the API and by a
// reconciliation of the stack's databases. Its drill users are signed up
// before the drill starts.
func dialogTarget(ctx context.Context, e *env, st drill.Status, home string, writers int) (drill.Target, error) {
	addr, err := stackAPI(st, home)
	if err != nil {
		return drill.Target{}, err
	}
	info, err := readStack(home)
	if err != nil {
		return drill.Target{}, fmt.Errorf("drill: %w", err)
	}
	if len(info.MainAdmin) == 0 || len(info.CounterAdmin) == 0 {
		return drill.Target{}, fmt.Errorf("drill: the stack in %s lists no administrator DSNs of its databases", home)
	}
	w := drill.NewDialogWriter(addr, drill.DefaultDialogSenders, writers, 15*time.Second)
	if err := w.Setup(ctx); err != nil {
		return drill.Target{}, fmt.Errorf("drill: %w", err)
	}
	return drill.Target{
		Writer: w,
		Verify: &drill.StackCluster{Status: stackStatusFunc(home), Cluster: mainCluster, Database: mainDBName},
		Counters: &drill.CounterCheck{Dialogs: w,
			Counter:    &drill.StackCluster{Status: stackStatusFunc(home), Cluster: counterCluster, Database: counterDBName},
			Reconciler: stackReconciler{mains: info.MainAdmin, counters: info.CounterAdmin, log: e.log}},
	}, nil
}

// stackAPI returns the address of the stack's API.
func stackAPI(st drill.Status, home string) (string, error) {
	if api, ok := st.Service("api"); ok && api.Addr != "" {
		return api.Addr, nil
	}
	if info, err := readStack(home); err == nil && info.API != "" {
		return info.API, nil
	}
	return "", fmt.Errorf("drill: the stack in %s runs no API", home)
}

// stackReconciler reconciles the counters of a stack's databases as
// `socnet reconcile` does, opening the counter database for each run only,
// so that nothing watches the counter cluster while a drill breaks it.
type stackReconciler struct {
	mains, counters []string // administrator DSNs
	log             *slog.Logger
}

// Run runs one reconciliation.
func (s stackReconciler) Run(ctx context.Context, opts counter.ReconcileOptions) (counter.ReconcileReport, error) {
	db, err := dbroute.Open(ctx, dbroute.Config{Name: counterCluster, Nodes: s.counters, MaxConns: 2}, s.log)
	if err != nil {
		return counter.ReconcileReport{}, fmt.Errorf("reconcile: %w", err)
	}
	defer db.Close()
	rc, err := counter.NewReconciler(s.mains, db, nil, s.log)
	if err != nil {
		return counter.ReconcileReport{}, fmt.Errorf("reconcile: %w", err)
	}
	return rc.Run(ctx, opts)
}
