package pgnode_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// liveProcess reports whether pid is a live (not zombie) process, and its
// parent pid.
func liveProcess(pid int) (alive bool, ppid int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false, 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, _ = strconv.Atoi(f[1])
	return f[0] != "Z" && f[0] != "X", ppid
}

// childPids lists the live children of pid.
func childPids(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if alive, ppid := liveProcess(p); alive && ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

func TestStopStartKeepsData(t *testing.T) {
	node := pgtest.MustNode(t, "stopstart", nil)
	ctx := testContext(t, 60*time.Second)
	mustExec(t, ctx, node.DSN(""), "CREATE TABLE kept (id int PRIMARY KEY)")
	mustExec(t, ctx, node.DSN(""), "INSERT INTO kept SELECT generate_series(1, 3)")

	pid := node.Pid()
	if err := node.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if node.Running() || node.Pid() != 0 {
		t.Errorf("after Stop: Running() = %v, Pid() = %d; want false, 0", node.Running(), node.Pid())
	}
	select {
	case <-node.Exited():
	default:
		t.Errorf("after Stop: Exited() is not closed")
	}
	if alive, _ := liveProcess(pid); alive {
		t.Errorf("postmaster %d still alive after Stop", pid)
	}
	if err := node.Stop(ctx); err != nil {
		t.Errorf("Stop on a stopped node: %v", err)
	}

	if err := node.Start(ctx); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	if diff := cmp.Diff([]int{1, 2, 3}, queryInts(t, ctx, node.DSN(""), "SELECT id FROM kept ORDER BY id")); diff != "" {
		t.Errorf("rows after restart (-want +got):\n%s", diff)
	}
}

func TestKillLeavesNoProcessAndRestartKeepsCommittedRows(t *testing.T) {
	node := pgtest.MustNode(t, "kill", nil)
	ctx := testContext(t, 60*time.Second)
	mustExec(t, ctx, node.DSN(""), "CREATE TABLE committed (id int PRIMARY KEY)")
	mustExec(t, ctx, node.DSN(""), "INSERT INTO committed SELECT generate_series(1, 100)")

	// A backend busy in a query when the postmaster dies: it would linger.
	busy, err := pgx.Connect(ctx, node.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close(context.Background())
	sleeping := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctx, "SELECT pg_sleep(60)")
		sleeping <- err
	}()
	waitFor(t, ctx, "the sleeping backend", func() bool {
		var n int
		conn, err := pgx.Connect(ctx, node.DSN(""))
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'").Scan(&n)
		return err == nil && n == 1
	})

	pid := node.Pid()
	kids := childPids(t, pid)
	if len(kids) < 4 {
		t.Fatalf("postmaster %d has %d children, want the auxiliary processes and a backend", pid, len(kids))
	}
	if err := node.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if node.Running() {
		t.Errorf("Running() = true after Kill")
	}
	for _, p := range append([]int{pid}, kids...) {
		if alive, _ := liveProcess(p); alive {
			t.Errorf("process %d of the killed node is still alive", p)
		}
	}
	if left := childPids(t, pid); len(left) > 0 {
		t.Errorf("processes %v still have the killed postmaster as parent", left)
	}
	select {
	case err := <-sleeping:
		if err == nil {
			t.Errorf("the query on the killed server succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the query on the killed server did not fail")
	}
	if _, err := os.Stat(node.Config().DataDir + "/postmaster.pid"); err != nil {
		t.Errorf("postmaster.pid after SIGKILL: %v; want the stale file left behind", err)
	}
	if err := node.Kill(); err != nil {
		t.Errorf("Kill on a killed node: %v", err)
	}

	if err := node.Start(ctx); err != nil {
		t.Fatalf("Start after Kill: %v", err)
	}
	got := queryInts(t, ctx, node.DSN(""), "SELECT count(*)::int FROM committed")
	if diff := cmp.Diff([]int{100}, got); diff != "" {
		t.Errorf("committed rows after crash restart (-want +got):\n%s", diff)
	}
}

// waitFor polls cond every 50 ms until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-ticker.C:
		}
	}
}

func TestStartFailureQuotesTheLog(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	node := pgtest.NewNode(t, "broken", map[string]string{"shared_buffers": "plenty"})
	if err := node.InitDB(ctx); err != nil {
		t.Fatalf("InitDB: %v", err)
	}
	err := node.Start(ctx)
	if err == nil {
		t.Fatal("Start with shared_buffers = 'plenty' succeeded")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error = %v, want it to quote the server's complaint", err)
	}
	if node.Running() {
		t.Errorf("Running() = true after a failed Start")
	}
}

func TestInitDBRejectsBadInput(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	for _, tc := range []struct {
		name      string
		settings  map[string]string
		password  string
		clientNet string
		netns     string
		want      string
	}{
		{"setting name", map[string]string{"shared_buffers = 1GB\nfsync": "off"}, "pw", "", "", "invalid setting name"},
		{"setting value", map[string]string{"work_mem": "4MB\nfsync = off"}, "pw", "", "", "line break"},
		{"password", nil, "pw\nsecond line", "", "", "line break"},
		{"client network", nil, "pw", "10.213.7.0/33", "", "client network"},
		{"client network with host bits", nil, "pw", "10.213.7.1/24", "", "host bits"},
		{"client network hba injection", nil, "pw", "10.0.0.0/8 trust\nhost all all 0.0.0.0/0", "", "client network"},
		{"namespace", nil, "pw", "", "a b", "network namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := pgtest.NewNode(t, "bad", tc.settings)
			cfg := node.Config()
			cfg.Password, cfg.ClientNet, cfg.Netns = tc.password, tc.clientNet, tc.netns
			node = pgnode.New(cfg)
			err := node.InitDB(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("InitDB: %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
				t.Errorf("rejected InitDB touched %s: %v", cfg.DataDir, err)
			}
		})
	}
}

func TestStopEscalatesWhenTheDeadlinePasses(t *testing.T) {
	node := pgtest.MustNode(t, "escalate", nil)
	ctx := testContext(t, 60*time.Second)
	mustExec(t, ctx, node.DSN(""), "CREATE TABLE kept (id int)")
	mustExec(t, ctx, node.DSN(""), "INSERT INTO kept VALUES (7)")
	pid := node.Pid()

	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := node.Stop(expired); err != nil {
		t.Fatalf("Stop with an expired context: %v", err)
	}
	if alive, _ := liveProcess(pid); alive || node.Running() {
		t.Fatalf("postmaster %d alive after Stop", pid)
	}
	if err := node.Start(ctx); err != nil {
		t.Fatalf("Start after immediate shutdown: %v", err)
	}
	if diff := cmp.Diff([]int{7}, queryInts(t, ctx, node.DSN(""), "SELECT id FROM kept")); diff != "" {
		t.Errorf("rows after immediate shutdown (-want +got):\n%s", diff)
	}
}

func TestFindBinDir(t *testing.T) {
	dir, err := pgnode.FindBinDir()
	if err != nil {
		t.Fatalf("FindBinDir: %v", err)
	}
	for _, prog := range []string{"postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"} {
		if _, err := os.Stat(dir + "/" + prog); err != nil {
			t.Errorf("%s in %s: %v", prog, dir, err)
		}
	}
}
