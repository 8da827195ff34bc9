package patroni_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/patroni"
	"socnet/internal/pgtest"
	"socnet/internal/stack"
)

// TestHostLossUnavailability measures how long writes to main stay
// unavailable after a host loss of its leader (postmaster, its processes
// and the agent SIGKILLed together; the host returns only once writes are
// back), under the tuned timing and Patroni's defaults. It runs only when
// SOCNET_PATRONI_HOSTLOSS_RUNS sets the number of losses per timing:
//
//	SOCNET_PATRONI_HOSTLOSS_RUNS=3 go test ./internal/patroni/ -run TestHostLossUnavailability -count=1 -v
//
// It asserts no acknowledged row is lost; the times are printed, not
// asserted.
func TestHostLossUnavailability(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("SOCNET_PATRONI_HOSTLOSS_RUNS"))
	if runs <= 0 {
		t.Skip("set SOCNET_PATRONI_HOSTLOSS_RUNS=N to measure N host losses per timing")
	}
	requireBinaries(t)
	for _, tc := range []struct {
		name   string
		timing patroni.Timing
	}{{"fast", patroni.FastTiming}, {"default", patroni.DefaultTiming}} {
		t.Run(tc.name, func(t *testing.T) {
			base, err := os.MkdirTemp("", "patroni-hostloss-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			home, err := stack.NewHome(filepath.Join(base, "home"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(home.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			f := &engineFixture{timing: tc.timing, clusters: []cluster.Spec{cluster.MainSpec()}, home: home,
				logger: slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "engine"), &slog.HandlerOptions{Level: slog.LevelWarn}))}
			t.Cleanup(func() { f.stop(t) })
			f.start(t)
			conn, _, err := f.connectLeader(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(context.Background(), "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
				t.Fatal(err)
			}
			conn.Close(context.Background())
			var took []time.Duration
			for i := range runs {
				leader, syncStandby := f.settled(t)
				f.waitSyncKey(t, "main", syncStandby)
				w := f.startWriter(t)
				at := f.killHost(t, "main", leader)
				back := w.waitAfter(t, at, 5*time.Minute)
				n := w.checkNoneLost(t)
				f.eng.Hold(leader, false)
				took = append(took, back)
				t.Logf("%s run %d: leader %s lost, writes back after %v; %d rows acknowledged, none lost", tc.name, i+1, leader, back.Round(time.Millisecond), n)
			}
			slices.Sort(took)
			t.Logf("%s timing %+v: write unavailability over %d host losses: min %v, median %v, max %v",
				tc.name, tc.timing, runs, took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
		})
	}
}

// settled waits until main has its designed topology (main-1 or main-2
// leads, the other is the synchronous standby, main-3 the asynchronous
// one) and returns the leader and the synchronous standby.
func (f *engineFixture) settled(t *testing.T) (leader, syncStandby string) {
	t.Helper()
	poll(t, 5*time.Minute, "main settled", func() error {
		st := f.status(t, "main")
		leader, syncStandby = "", ""
		async := 0
		for _, n := range st.Nodes {
			switch {
			case n.Role == cluster.RolePrimary && n.Name == st.Primary:
				leader = n.Name
			case n.Role == cluster.RoleReplica && n.SyncState == "sync":
				syncStandby = n.Name
			case n.Role == cluster.RoleReplica && n.SyncState == "async" && n.Name == "main-3":
				async++
			}
		}
		if leader == "" || syncStandby == "" || async != 1 {
			return fmt.Errorf("topology %v", topology(st))
		}
		return nil
	})
	return leader, syncStandby
}
