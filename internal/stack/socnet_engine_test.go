package stack_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/pgtest"
	"socnet/internal/stack"
)

// TestSocnetEngine brings both clusters up through the engine seam with the
// socnet engine and checks what the seam reports against PostgreSQL's own
// views, then switches over through the interface and through the control
// socket, and checks that an engine without the operator's commands refuses
// them.
func TestSocnetEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five PostgreSQL nodes")
	}
	h := stack.Home{Dir: filepath.Join(t.TempDir(), "home")}
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "engine"), &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng := stack.NewSocnetEngine(h, log, stack.SocnetOptions{
		Cluster:           cluster.Options{Output: pgtest.LogWriter(t, "")},
		MainSharedBuffers: "32MB",
	})
	ctx := testCtx(t, 5*time.Minute)
	if err := eng.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Cleanup(func() {
		if err := eng.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	}) // a no-op once the test stopped it
	if eng.Name() != stack.EngineSocnet {
		t.Errorf("Name = %q, want %q", eng.Name(), stack.EngineSocnet)
	}
	if diff := cmp.Diff([]string{stack.MainCluster, stack.CounterCluster}, eng.Clusters()); diff != "" {
		t.Errorf("Clusters (-want +got):\n%s", diff)
	}
	for _, c := range eng.Clusters() {
		checkTopology(t, ctx, eng, c)
	}

	sts, err := eng.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		primary, _ := eng.Primary(ctx, s.Name)
		if s.Primary != primary {
			t.Errorf("%s: status primary %s, engine's %s", s.Name, s.Primary, primary)
		}
		for _, n := range s.Nodes {
			if n.AgentPid != nil {
				t.Errorf("%s: agent_pid %d under the socnet engine, want null", n.Name, *n.AgentPid)
			}
		}
	}

	// Supervision serves the control socket: the status document's
	// clusters and engine come through it.
	sctx, cancelSupervision := context.WithCancel(context.Background())
	supervised := make(chan error, 1)
	go func() { supervised <- eng.Supervise(sctx) }()
	var supervisionStopped bool
	stopSupervision := func() {
		if supervisionStopped {
			return
		}
		supervisionStopped = true
		cancelSupervision()
		if err := <-supervised; err != nil {
			t.Errorf("supervise: %v", err)
		}
	}
	t.Cleanup(stopSupervision)
	client := stack.NewClient(h.Control())
	waitFor(t, 30*time.Second, "the control socket", func() (bool, string) {
		err := client.Ping(ctx)
		return err == nil, errText(err)
	})
	if fi, err := os.Stat(h.Control()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, %v; want mode 0600", fi.Mode(), err)
	}
	engine, remote, err := client.Status(ctx)
	if err != nil || engine != stack.EngineSocnet || len(remote) != 2 {
		t.Fatalf("status over the socket: %q, %d clusters, %v; want socnet and 2", engine, len(remote), err)
	}
	doc, err := json.Marshal(stack.Status{Engine: engine, Clusters: remote})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), `"engine":"socnet"`) || strings.Count(string(doc), `"agent_pid":null`) != 5 {
		t.Errorf("status document: want engine socnet and five null agent_pid:\n%s", doc)
	}

	t.Run("switchover through the interface", func(t *testing.T) {
		old, _ := eng.Primary(ctx, stack.CounterCluster)
		target := otherNode(eng, stack.CounterCluster, old)
		out, err := eng.Switchover(testCtx(t, 2*time.Minute), stack.CounterCluster, target)
		if err != nil {
			t.Fatalf("switchover to %s: %v", target, err)
		}
		t.Log(out.Message)
		if now, _ := eng.Primary(ctx, stack.CounterCluster); now != target {
			t.Fatalf("primary after the switchover %s, want %s", now, target)
		}
		checkTopology(t, ctx, eng, stack.CounterCluster)
	})

	t.Run("switchover over the control socket, the engine's choice", func(t *testing.T) {
		old, _ := eng.Primary(ctx, stack.MainCluster)
		waitFor(t, time.Minute, "a synchronous replica of main", func() (bool, string) {
			return syncReplica(t, ctx, eng, stack.MainCluster) != "", "none"
		})
		want := syncReplica(t, ctx, eng, stack.MainCluster)
		out, err := client.Do(testCtx(t, 2*time.Minute), stack.Op{Kind: stack.OpSwitchover, Cluster: stack.MainCluster})
		if err != nil {
			t.Fatalf("switchover: %v", err)
		}
		if out.Record == nil || out.Record.OldPrimary != old || out.Record.NewPrimary != want {
			t.Fatalf("switchover record %+v, want %s -> %s (the synchronous replica)", out.Record, old, want)
		}
		checkTopology(t, ctx, eng, stack.MainCluster)
		_, err = client.Do(ctx, stack.Op{Kind: stack.OpSwitchover, Cluster: stack.MainCluster, Node: want})
		if !cluster.IsRefused(err) || !strings.Contains(err.Error(), want+" is already primary") {
			t.Errorf("switchover to the primary: %v, want a refusal", err)
		}
	})

	t.Run("operator commands", func(t *testing.T) {
		prim, _ := eng.Primary(ctx, stack.MainCluster)
		_, err := client.Do(ctx, stack.Op{Kind: stack.OpPromote, Cluster: stack.MainCluster, Node: otherNode(eng, stack.MainCluster, prim)})
		if !cluster.IsRefused(err) || !strings.Contains(err.Error(), "use switchover") {
			t.Errorf("promote with a live primary: %v, want a refusal", err)
		}
		_, err = client.Do(ctx, stack.Op{Kind: stack.OpRejoin, Cluster: "nosuch", Node: "x"})
		var unknown *stack.UnknownClusterError
		if !errors.As(err, &unknown) || unknown.Cluster != "nosuch" || !slices.Contains(unknown.Known, stack.MainCluster) {
			t.Errorf("rejoin in an unknown cluster: %v, want an *UnknownClusterError", err)
		}
	})

	t.Run("an engine without operator commands refuses them", func(t *testing.T) {
		only := switchoverOnly{eng}
		sock := filepath.Join(t.TempDir(), "other.sock")
		octx, stop := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- stack.ServeControl(octx, sock, only) }()
		defer func() {
			stop()
			if err := <-served; err != nil {
				t.Errorf("serve control: %v", err)
			}
		}()
		oc := stack.NewClient(sock)
		waitFor(t, 30*time.Second, "the second control socket", func() (bool, string) {
			err := oc.Ping(ctx)
			return err == nil, errText(err)
		})
		for _, kind := range []string{stack.OpPromote, stack.OpRejoin, stack.OpStop, stack.OpStart} {
			_, err := oc.Do(ctx, stack.Op{Kind: kind, Cluster: stack.MainCluster, Node: "main-1"})
			if !cluster.IsRefused(err) || !strings.Contains(err.Error(), "not supported by the switchover-only engine") {
				t.Errorf("%s: %v, want a refusal naming the engine", kind, err)
			}
		}
		if engine, sts, err := oc.Status(ctx); err != nil || engine != "switchover-only" || len(sts) != 2 {
			t.Errorf("status of the second engine: %q %d %v", engine, len(sts), err)
		}
	})

	t.Run("offline, through the engine recorded in the home", func(t *testing.T) {
		stopSupervision()
		if err := eng.Stop(ctx); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := stack.RecordEngine(h, stack.EngineSocnet); err != nil {
			t.Fatal(err)
		}
		open := func() (stack.Engine, error) {
			name, err := stack.RecordedEngine(h)
			if err != nil || name != stack.EngineSocnet {
				t.Fatalf("recorded engine %q, %v", name, err)
			}
			return stack.NewSocnetEngine(h, log, stack.SocnetOptions{Cluster: cluster.Options{Output: pgtest.LogWriter(t, "")}}), nil
		}
		doc, err := stack.ReadStatus(ctx, h, open)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if doc.Engine != stack.EngineSocnet || len(doc.Clusters) != 2 {
			t.Fatalf("offline status: engine %q, %d clusters", doc.Engine, len(doc.Clusters))
		}
		for _, c := range doc.Clusters {
			for _, n := range c.Nodes {
				if n.Role != cluster.RoleDown || n.AgentPid != nil || !strings.Contains(n.DSN, "passfile=") {
					t.Errorf("%s stopped: role %s, agent_pid %v, dsn %s; want down, null and a passfile", n.Name, n.Role, n.AgentPid, n.DSN)
				}
			}
		}

		off, _ := open()
		defer off.(*stack.SocnetEngine).Close()
		old, _ := off.Primary(ctx, stack.CounterCluster)
		target := otherNode(off, stack.CounterCluster, old)
		var notice strings.Builder
		out, err := stack.Offline(testCtx(t, 2*time.Minute), h, off, stack.Op{Kind: stack.OpSwitchover, Cluster: stack.CounterCluster, Node: target}, &notice)
		if err != nil || out.Record == nil || out.Record.NewPrimary != target {
			t.Fatalf("offline switchover to %s: %+v, %v", target, out, err)
		}
		if !strings.Contains(notice.String(), "starting cluster counter") {
			t.Errorf("offline notice %q: want it to say the cluster is started to act on it", notice.String())
		}
		again := stack.NewSocnetEngine(h, log, stack.SocnetOptions{})
		defer again.Close()
		if now, _ := again.Primary(ctx, stack.CounterCluster); now != target {
			t.Errorf("persisted primary after the offline switchover %s, want %s", now, target)
		}
		if _, err := stack.Offline(ctx, h, again, stack.Op{Kind: stack.OpRejoin, Cluster: "nosuch", Node: "x"}, io.Discard); !errors.As(err, new(*stack.UnknownClusterError)) {
			t.Errorf("offline rejoin in an unknown cluster: %v", err)
		}
	})
}

// switchoverOnly is an engine that is no stack.Operator: the socnet
// engine's Engine methods only, under another name.
type switchoverOnly struct{ stack.Engine }

func (switchoverOnly) Name() string { return "switchover-only" }

// checkTopology checks the engine's view of a cluster against PostgreSQL's:
// its Primary is the one node not in recovery, and every other node of
// Nodes streams from it (pg_stat_replication).
func checkTopology(t *testing.T, ctx context.Context, eng stack.Engine, clusterName string) {
	t.Helper()
	primary, err := eng.Primary(ctx, clusterName)
	if err != nil || primary == "" {
		t.Fatalf("%s: primary %q, %v", clusterName, primary, err)
	}
	var replicas []string
	for _, n := range eng.Nodes(clusterName) {
		if n.Host == "" || n.Port == 0 {
			t.Errorf("%s: node %+v without an address", clusterName, n)
		}
		var inRecovery bool
		var port int
		query(t, ctx, eng.AdminDSN(clusterName, n.Name, "postgres"), "SELECT pg_is_in_recovery(), current_setting('port')::int", &inRecovery, &port)
		if port != n.Port {
			t.Errorf("%s: AdminDSN reaches port %d, Nodes says %d", n.Name, port, n.Port)
		}
		if inRecovery == (n.Name == primary) {
			t.Errorf("%s: pg_is_in_recovery = %t, engine's primary is %s", n.Name, inRecovery, primary)
		}
		if n.Name != primary {
			replicas = append(replicas, cluster.AppName(n.Name))
		}
	}
	waitFor(t, time.Minute, clusterName+" replicas streaming from "+primary, func() (bool, string) {
		var streaming []string
		query(t, ctx, eng.AdminDSN(clusterName, primary, "postgres"),
			"SELECT coalesce(array_agg(application_name ORDER BY application_name), '{}') FROM pg_stat_replication WHERE state = 'streaming'", &streaming)
		slices.Sort(replicas)
		return slices.Equal(streaming, replicas), strings.Join(streaming, ",")
	})
}

// syncReplica is the node the primary's pg_stat_replication calls sync.
func syncReplica(t *testing.T, ctx context.Context, eng stack.Engine, clusterName string) string {
	t.Helper()
	primary, _ := eng.Primary(ctx, clusterName)
	var app string
	query(t, ctx, eng.AdminDSN(clusterName, primary, "postgres"),
		"SELECT coalesce(max(application_name), '') FROM pg_stat_replication WHERE sync_state = 'sync'", &app)
	for _, n := range eng.Nodes(clusterName) {
		if app != "" && cluster.AppName(n.Name) == app {
			return n.Name
		}
	}
	return ""
}

// otherNode is a node of the cluster other than node.
func otherNode(eng stack.Engine, clusterName, node string) string {
	for _, n := range eng.Nodes(clusterName) {
		if n.Name != node {
			return n.Name
		}
	}
	return ""
}

func query(t *testing.T, ctx context.Context, dsn, sql string, dest ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, timeout, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// TestHomeKeepsItsEngine checks that a home records the engine that made
// it, and refuses another one in one line.
func TestHomeKeepsItsEngine(t *testing.T) {
	tests := []struct {
		name    string
		plant   func(t *testing.T, h stack.Home)
		engine  string
		refused string // "" when accepted
		want    string // the engine recorded afterwards
	}{
		{name: "a new home takes the engine", plant: func(*testing.T, stack.Home) {}, engine: stack.EnginePatroni, want: stack.EnginePatroni},
		{name: "a home made by socnet", plant: func(t *testing.T, h stack.Home) {
			mustRecord(t, h, stack.EngineSocnet)
		}, engine: stack.EnginePatroni, refused: "made by the socnet engine", want: stack.EngineSocnet},
		{name: "a home made by patroni", plant: func(t *testing.T, h stack.Home) {
			mustRecord(t, h, stack.EnginePatroni)
		}, engine: stack.EngineSocnet, refused: "made by the patroni engine", want: stack.EnginePatroni},
		{name: "the same engine again", plant: func(t *testing.T, h stack.Home) {
			mustRecord(t, h, stack.EnginePatroni)
		}, engine: stack.EnginePatroni, want: stack.EnginePatroni},
		{name: "clusters from before engines were recorded are socnet's", plant: func(t *testing.T, h stack.Home) {
			if err := os.MkdirAll(h.Cluster(stack.MainCluster), 0o700); err != nil {
				t.Fatal(err)
			}
		}, engine: stack.EnginePatroni, refused: "made by the socnet engine", want: stack.EngineSocnet},
		{name: "a stack.json from before engines were recorded is socnet's", plant: func(t *testing.T, h stack.Home) {
			if err := stack.WriteInfo(h, stack.Info{API: "127.0.0.1:8080"}); err != nil {
				t.Fatal(err)
			}
		}, engine: stack.EngineSocnet, want: stack.EngineSocnet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := stack.Home{Dir: t.TempDir()}
			tt.plant(t, h)
			err := stack.RecordEngine(h, tt.engine)
			switch {
			case tt.refused == "" && err != nil:
				t.Fatalf("record %s: %v", tt.engine, err)
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused) || strings.Contains(err.Error(), "\n")):
				t.Fatalf("record %s: %v, want one line saying %q", tt.engine, err, tt.refused)
			}
			got, err := stack.RecordedEngine(h)
			if err != nil || got != tt.want {
				t.Errorf("recorded engine %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func mustRecord(t *testing.T, h stack.Home, engine string) {
	t.Helper()
	if err := stack.RecordEngine(h, engine); err != nil {
		t.Fatal(err)
	}
}
