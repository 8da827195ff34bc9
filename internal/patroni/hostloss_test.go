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
	"socnet/internal/pgnode"
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
	measureUnavailability(t, "SOCNET_PATRONI_HOSTLOSS_RUNS", "host loss", []namedTiming{
		{"fast", patroni.FastTiming}, {"default", patroni.DefaultTiming},
	}, func(t *testing.T, f *engineFixture, leader string) (time.Time, func()) {
		return f.killHost(t, "main", leader), func() { f.eng.Hold(leader, false) }
	})
}

// TestCrashUnavailability measures the same after the leader's postmaster
// alone is SIGKILLed, its agent alive: restarted in place (Patroni's
// primary_start_timeout 300) against failed over at once (0, CrashFailover):
//
//	SOCNET_PATRONI_CRASH_RUNS=5 go test ./internal/patroni/ -run TestCrashUnavailability -count=1 -v
func TestCrashUnavailability(t *testing.T) {
	inPlace := patroni.FastTiming
	inPlace.CrashFailover = false
	failover := patroni.FastTiming
	failover.CrashFailover = true
	measureUnavailability(t, "SOCNET_PATRONI_CRASH_RUNS", "postmaster crash", []namedTiming{
		{"restart-in-place", inPlace}, {"crash-failover", failover},
	}, func(t *testing.T, f *engineFixture, leader string) (time.Time, func()) {
		n := nodeOf(f.status(t, "main"), leader)
		at, err := pgnode.KillServer(n.Pid, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return at, func() {}
	})
}

type namedTiming struct {
	name   string
	timing patroni.Timing
}

// measureUnavailability runs, for each timing on a fresh main cluster, as
// many faults as the environment variable env asks for (it skips the test
// when none), each under a writer, and logs how long writes stayed
// unavailable; it asserts that no acknowledged row is lost. fault makes
// the fault on the leader and returns its time and what undoes it once
// writes are back.
func measureUnavailability(t *testing.T, env, what string, timings []namedTiming,
	fault func(t *testing.T, f *engineFixture, leader string) (time.Time, func())) {
	runs, _ := strconv.Atoi(os.Getenv(env))
	if runs <= 0 {
		t.Skipf("set %s=N to measure N faults (%s) per timing", env, what)
	}
	requireBinaries(t)
	for _, tc := range timings {
		t.Run(tc.name, func(t *testing.T) {
			base, err := os.MkdirTemp("", "patroni-unavailability-")
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
				at, undo := fault(t, f, leader)
				back := w.waitAfter(t, at, 5*time.Minute)
				n := w.checkNoneLost(t)
				undo()
				took = append(took, back)
				now, _ := f.settled(t)
				t.Logf("%s run %d: %s of leader %s, writes back after %v, leader now %s; %d rows acknowledged, none lost",
					tc.name, i+1, what, leader, back.Round(time.Millisecond), now, n)
			}
			slices.Sort(took)
			t.Logf("%s timing %+v: write unavailability over %d faults (%s): min %v, median %v, max %v",
				tc.name, tc.timing, runs, what, took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
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
