package drill_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"socnet/internal/auth"
	"socnet/internal/cluster"
	"socnet/internal/dbroute"
	"socnet/internal/drill"
	"socnet/internal/httpapi"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
)

// stack is a real cluster from internal/cluster, brought up in a temporary
// home with its supervisor running, and the drill's view of it.
type stack struct {
	c      *cluster.Cluster
	db     *dbroute.DB
	target drill.Target
}

// mustStack brings up a three-node cluster named main (primary, sync and
// potential replica) with fast failure detection and its supervisor
// running, and a drill Target that writes rows of drill_writes through
// dbroute and sees the cluster through its Status, as `socnet status
// --json` shows it.
func mustStack(t *testing.T) *stack { return mustCluster(t, true) }

// mustCluster is mustStack, with the supervisor running only when
// supervise is set: without it, nothing fails over but an operator.
func mustCluster(t *testing.T, supervise bool) *stack { return mustPlacedCluster(t, supervise, nil) }

// mustPlacedCluster is mustCluster with the nodes where place puts them
// (nil: on 127.0.0.1).
func mustPlacedCluster(t testing.TB, supervise bool, place func(node string) cluster.Placement) *stack {
	t.Helper()
	log := slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "slog"), nil))
	spec := cluster.MainSpec()
	spec.Settings = map[string]string{"shared_buffers": "32MB", "max_connections": "50"}
	c, err := cluster.Open(cluster.Dir(t.TempDir(), spec.Name), spec, log, cluster.Options{
		Output:         pgtest.LogWriter(t, ""),
		ProbeInterval:  100 * time.Millisecond,
		ProbeTimeout:   300 * time.Millisecond,
		DeadAfter:      time.Second,
		CatchUpTimeout: 10 * time.Second,
		Placement:      place,
	})
	if err != nil {
		t.Fatalf("open cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.Up(ctx); err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	supCtx, stopSup := context.WithCancel(context.Background())
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		if !supervise {
			return
		}
		if err := c.Supervise(supCtx); err != nil {
			t.Errorf("supervise: %v", err)
		}
	}()
	t.Cleanup(func() {
		stopSup()
		<-supDone
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})

	var dsns []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, c.Node(n).DSN(""))
	}
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "drill", Nodes: dsns, MaxConns: 8,
		WriteTimeout: 2 * time.Second, HealthInterval: 100 * time.Millisecond}, log)
	if err != nil {
		t.Fatalf("dbroute: %v", err)
	}
	t.Cleanup(db.Close)
	w, err := drill.NewSQLWriter(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	status := func(ctx context.Context) (drill.Status, error) {
		cs, err := c.Status(ctx)
		if err != nil {
			return drill.Status{}, err
		}
		// The JSON of a cluster's status is what `socnet status --json`
		// lists under "clusters".
		b, err := json.Marshal(map[string]any{"engine": "socnet", "clusters": []cluster.Status{cs}})
		if err != nil {
			return drill.Status{}, err
		}
		return drill.ParseStatus(b)
	}
	target := drill.Target{
		Writer:  w,
		Cluster: &drill.StackCluster{Status: status, Cluster: spec.Name, Poll: 100 * time.Millisecond},
	}
	if supervise {
		target.Sessions = mustAPI(t, ctx, c, log, apiLag)
	}
	return &stack{c: c, db: db, target: target}
}

// apiLag and apiHealth are the routing of the test's API: a replica
// lagging more than apiLag gets no reads, measured every apiHealth.
const apiLag, apiHealth = time.Second, 100 * time.Millisecond

// mustAPI serves the socnet API over the cluster, as `socnet serve` does,
// with replicas lagging more than lag getting no reads, and returns the
// drill's session workload against it, holding reads to apiLag+apiHealth.
func mustAPI(t testing.TB, ctx context.Context, c *cluster.Cluster, log *slog.Logger, lag time.Duration) *drill.Sessions {
	t.Helper()
	if err := postgres.Migrate(ctx, c.PrimaryDSN(""), log); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var dsns []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, c.Node(n).DSN(""))
	}
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "api", Nodes: dsns, MaxConns: 8, WriteTimeout: 2 * time.Second,
		MaxReplicaLag: lag, HealthInterval: apiHealth}, log)
	if err != nil {
		t.Fatalf("dbroute: %v", err)
	}
	t.Cleanup(db.Close)
	dialogs := postgres.NewDialogStore(db)
	h := httpapi.NewServer(log, httpapi.Deps{
		Users:   postgres.NewUserStore(db),
		Friends: postgres.NewFriendStore(db),
		Posts:   postgres.NewPostStore(db),
		Dialogs: dialogs,
		Reader:  dialogs,
		Tokens:  auth.NewTokens([]byte(strings.Repeat("k", auth.KeyLen)), time.Hour, nil),
		Hasher:  auth.Hasher{Cost: bcrypt.MinCost},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s := drill.NewSessions(srv.URL, 2, apiLag+apiHealth, 10*time.Second)
	if err := s.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "drill"), nil))
}

// TestDrillsOnRealCluster runs the failover drill and the replica drill
// against a real cluster whose supervisor fails over, and checks that the
// verification finds a loss when there is one.
func TestDrillsOnRealCluster(t *testing.T) {
	s := mustStack(t)

	t.Run("failover", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		run, err := drill.RunFailover(ctx, s.target, drill.FailoverOptions{
			Duration: 4 * time.Second, KillAfter: time.Second, Writers: 4, Log: testLog(t),
		})
		if err != nil {
			t.Fatalf("RunFailover: %v", err)
		}
		logReport(t, drill.NewReport(drill.DrillFailover, "main", []drill.Run{run}))
		checkFailoverHistory(t, run)
		v := run.Verdict
		if v.Acknowledged == 0 || v.Lost != 0 || v.Duplicates != 0 || len(v.Nodes) != 3 {
			t.Fatalf("verdict: %d acknowledged, %d lost, %d duplicates, %d nodes", v.Acknowledged, v.Lost, v.Duplicates, len(v.Nodes))
		}
		for _, n := range v.Nodes {
			if n.Err != "" || n.Rows < v.Acknowledged {
				t.Errorf("%s: %d rows (error %q), want at least the %d acknowledged", n.Node, n.Rows, n.Err, v.Acknowledged)
			}
		}
		if h := run.History; h == nil || h.Writes == 0 || h.Reads == 0 {
			t.Errorf("history checked: %+v", h)
		}
		if run.HeldBack == nil || run.HeldBack.AcknowledgedWhileHeld == 0 {
			t.Errorf("held back: %+v", run.HeldBack)
		}
		if run.NewPrimary == "" || run.NewPrimary == run.OldPrimary {
			t.Errorf("new primary %q, old %q", run.NewPrimary, run.OldPrimary)
		}
		if run.UnavailableMS == nil || run.PromotionMS == nil || run.RejoinMS == nil {
			t.Fatalf("figures missing: unavailable %v, promotion %v, rejoin %v", run.UnavailableMS, run.PromotionMS, run.RejoinMS)
		}
		if *run.PromotionMS > *run.RejoinMS {
			t.Errorf("promotion after %v ms, but the rejoin after %v ms", *run.PromotionMS, *run.RejoinMS)
		}
		kinds := map[string]bool{}
		for _, e := range run.Events {
			kinds[e.Kind] = true
		}
		for _, k := range []string{drill.EventKill, drill.EventPromotion, drill.EventRejoin, drill.EventStop} {
			if !kinds[k] {
				t.Errorf("no %s event in %+v", k, run.Events)
			}
		}
		if p := s.c.Primary(); p != run.NewPrimary {
			t.Errorf("cluster primary is %s, drill saw %s", p, run.NewPrimary)
		}
	})

	// Under the socnet engine a host loss is the postmaster's kill: no
	// agent runs on the node, and the supervisor fences a dead primary and
	// never restarts it in place; it rejoins as a replica.
	t.Run("host fault", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		run, err := drill.RunFailover(ctx, s.target, drill.FailoverOptions{
			Duration: 4 * time.Second, KillAfter: time.Second, Writers: 4, Log: testLog(t), Fault: drill.FaultHost,
		})
		if err != nil {
			t.Fatalf("RunFailover: %v", err)
		}
		logReport(t, drill.NewReport(drill.DrillFailover, "main", []drill.Run{run}))
		checkFailoverHistory(t, run)
		if run.Fault != "host" || run.Engine != "socnet" {
			t.Errorf("fault %q, engine %q", run.Fault, run.Engine)
		}
		if run.NewPrimary == "" || run.NewPrimary == run.OldPrimary || run.RestartedInPlace {
			t.Errorf("new primary %q, old %q, restarted in place %v", run.NewPrimary, run.OldPrimary, run.RestartedInPlace)
		}
		if run.UnavailableMS == nil || run.PromotionMS == nil || run.RejoinMS == nil || run.Verdict.Lost != 0 {
			t.Fatalf("unavailable %v, promotion %v, rejoin %v, lost %d", run.UnavailableMS, run.PromotionMS, run.RejoinMS, run.Verdict.Lost)
		}
		kills := 0
		for _, e := range run.Events {
			if e.Kind == drill.EventKill {
				kills++
				if !strings.Contains(e.Detail, "no agent runs on the node") {
					t.Errorf("kill event %q does not say that no agent runs", e.Detail)
				}
			}
		}
		if kills != 1 {
			t.Errorf("%d kills, want 1: the supervisor started nothing of the lost host before the promotion; events %+v", kills, run.Events)
		}
	})

	t.Run("verification finds a lost write", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l := drill.NewLedger(drill.NewRunID(time.Now()))
		for range 3 {
			seq, tag := l.Next()
			start := time.Now()
			res := s.target.Writer.Write(ctx, tag)
			if res.Outcome != drill.Acknowledged {
				t.Fatalf("write %s: %+v", tag, res)
			}
			l.Record(drill.Attempt{Seq: seq, Tag: tag, Outcome: res.Outcome, ID: res.ID, Start: start, End: time.Now()})
		}
		gone := l.Attempts()[1].Tag
		err := s.db.Transact(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM drill_writes WHERE tag = $1`, gone)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		v, err := drill.VerifyWrites(ctx, s.target, l.Prefix(), l.Attempts(), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if v.OK() || v.Lost != 1 || len(v.Nodes) != 3 {
			t.Fatalf("verdict after deleting an acknowledged row: ok %v, lost %d, %d nodes: %q", v.OK(), v.Lost, len(v.Nodes), v.Problems)
		}
		for _, n := range v.Nodes {
			if n.Lost != 1 || len(n.LostTags) != 1 || n.LostTags[0] != gone {
				t.Errorf("%s: lost %d %q, want 1 [%s]", n.Node, n.Lost, n.LostTags, gone)
			}
		}
	})

	t.Run("replica", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		run, err := drill.RunReplica(ctx, s.target, drill.ReplicaOptions{
			Writers: 4, Settle: 500 * time.Millisecond, Log: testLog(t),
		})
		if err != nil {
			t.Fatalf("RunReplica: %v", err)
		}
		logReport(t, drill.NewReport(drill.DrillReplica, "main", []drill.Run{run}))
		if !run.OK() {
			t.Fatalf("the drill failed: %q", run.Problems)
		}
		if len(run.Phases) != 3 {
			t.Fatalf("%d phases, want 3", len(run.Phases))
		}
		for _, p := range run.Phases {
			if p.Skipped != "" || p.BackMS == nil {
				t.Errorf("phase %s: skipped %q, back %v", p.Name, p.Skipped, p.BackMS)
			}
		}
		both := run.Phases[2]
		if len(both.Killed) != 2 {
			t.Errorf("phase both killed %q", both.Killed)
		}
		if run.Verdict.Lost != 0 || run.Verdict.Acknowledged == 0 {
			t.Errorf("verdict: %d acknowledged, %d lost", run.Verdict.Acknowledged, run.Verdict.Lost)
		}
	})
}

// TestFailoverRestartedInPlace plays Patroni's agent after a postmaster
// fault on a cluster without a supervisor: the killed primary is started
// again as it was, and nothing is promoted. The run must pass, with the
// writes back, no rejoin expected, and every acknowledged write on every
// node.
func TestFailoverRestartedInPlace(t *testing.T) {
	s := mustCluster(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	old := s.c.Primary()
	n := s.c.Node(old)
	restarted := make(chan error, 1)
	go func() {
		// Wait for the kill, then start the server in place.
		for n.Running() {
			if ctx.Err() != nil {
				restarted <- ctx.Err()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		restarted <- n.Start(ctx)
	}()
	// The asynchronous replica is not held back: the restart in place is
	// what is judged here, and a second of writing is too short, on a
	// loaded machine, for the hold to be sure to leave it behind.
	run, err := drill.RunFailover(ctx, s.target, drill.FailoverOptions{
		Duration: 4 * time.Second, KillAfter: time.Second, Writers: 4, Log: testLog(t), NoHold: true,
	})
	if err != nil {
		t.Fatalf("RunFailover: %v", err)
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restart in place: %v", err)
	}
	logReport(t, drill.NewReport(drill.DrillFailover, "main", []drill.Run{run}))
	if !run.OK() {
		t.Fatalf("a postmaster restarted in place failed the run: %q", run.Problems)
	}
	if !run.RestartedInPlace || run.OldPrimary != old || run.NewPrimary != old || run.Fault != "postmaster" {
		t.Errorf("restarted in place %v, old %q, new %q (want %s), fault %q", run.RestartedInPlace, run.OldPrimary, run.NewPrimary, old, run.Fault)
	}
	if run.RejoinMS != nil || run.PromotionMS == nil || run.UnavailableMS == nil || run.PromotionFrom != drill.PromotionPolled {
		t.Errorf("rejoin %v (want none), promotion %v from %q, unavailable %v", run.RejoinMS, run.PromotionMS, run.PromotionFrom, run.UnavailableMS)
	}
	if v := run.Verdict; v.Lost != 0 || v.Acknowledged == 0 || len(v.Nodes) != 3 {
		t.Errorf("verdict: %d acknowledged, %d lost, %d nodes", v.Acknowledged, v.Lost, len(v.Nodes))
	}
}

// logReport writes the report's text to the test log, and checks that the
// HTML and JSON forms render.
func logReport(t testing.TB, r drill.Report) {
	t.Helper()
	var text, page, js strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", text.String())
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, e := range r.Runs[0].Events {
		if !strings.Contains(page.String(), fmt.Sprintf("%s %s", e.Kind, e.Node)) && e.Node != "" {
			t.Errorf("the chart has no marker for %s %s", e.Kind, e.Node)
		}
	}
}

// checkFailoverHistory fails the test on any problem of a failover run but
// stale reads served while the API knew no primary. dbroute then counts a
// replica as fresh as anything that answers (docs/ROUTING.md), so the held-
// back replica serves reads older than the bound from the kill until the
// API has measured its lag against the new primary: up to the promotion
// plus the lag bound and two probes. The history without the reads of that
// window must keep every rule.
func checkFailoverHistory(t *testing.T, run drill.Run) {
	t.Helper()
	var problems []string
	for _, p := range run.Problems {
		if !strings.HasPrefix(p, "history: ") {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		t.Fatalf("the drill failed: %q", problems)
	}
	if run.History == nil || run.History.OK() {
		return
	}
	var killed, promoted time.Time
	for _, e := range run.Events {
		switch e.Kind {
		case drill.EventKill:
			killed = e.At
		case drill.EventPromotion:
			promoted = e.At
		}
	}
	end := promoted.Add(apiLag + 2*apiHealth)
	var outside []drill.Op
	for _, op := range run.HistoryOps {
		if op.Kind == drill.OpRead && !op.Final && !op.Invoke.Before(killed) && op.Invoke.Before(end) {
			continue
		}
		outside = append(outside, op)
	}
	if v := drill.CheckHistory(outside, apiLag+apiHealth); !v.OK() {
		t.Fatalf("history violations outside the failover window: %q", v.Problems())
	}
	t.Logf("stale reads while no primary was known (a known gap of dbroute): %q", run.History.Problems())
}
