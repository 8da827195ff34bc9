package cluster_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/cluster"
)

func TestJudgePrimary(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	const deadAfter = time.Second
	// health is a running primary last seen answering at t0, observed at
	// now; the options change it.
	health := func(now time.Time, opts ...func(*cluster.PrimaryHealth)) cluster.PrimaryHealth {
		h := cluster.PrimaryHealth{Now: now, LastOK: t0, DeadAfter: deadAfter, Running: true, Answered: true}
		for _, o := range opts {
			o(&h)
		}
		return h
	}
	silent := func(err string) func(*cluster.PrimaryHealth) {
		return func(h *cluster.PrimaryHealth) { h.Answered, h.ProbeErr = false, err }
	}
	standby := func(h *cluster.PrimaryHealth) { h.InRecovery = true }
	exited := func(h *cluster.PrimaryHealth) { h.Running, h.Answered = false, false }
	pending := func(h *cluster.PrimaryHealth) { h.FailoverPending = true }

	type verdict struct {
		State cluster.PrimaryState
		Cause string
	}
	tests := []struct {
		name string
		h    cluster.PrimaryHealth
		want verdict
	}{
		{"answers as primary", health(t0.Add(5 * time.Second)), verdict{cluster.PrimaryAlive, ""}},
		{"answers as primary right after the last answer", health(t0), verdict{cluster.PrimaryAlive, ""}},
		{"process exited: dead at once", health(t0, exited), verdict{cluster.PrimaryDead, "its process exited"}},
		{"process exited while a probe still answered", health(t0, func(h *cluster.PrimaryHealth) { h.Running = false }),
			verdict{cluster.PrimaryDead, "its process exited"}},
		{"failover pending, even when it answers", health(t0, pending), verdict{cluster.PrimaryDead, "a failover is pending"}},
		{"failover pending and exited", health(t0, pending, exited), verdict{cluster.PrimaryDead, "a failover is pending"}},
		{"silent for less than DeadAfter", health(t0.Add(deadAfter-time.Nanosecond), silent("timeout")),
			verdict{cluster.PrimarySuspect, ""}},
		{"silent for exactly DeadAfter", health(t0.Add(deadAfter), silent("timeout")),
			verdict{cluster.PrimaryDead, "it did not answer as a primary for 1s (timeout)"}},
		{"silent for longer, cause rounded to the millisecond", health(t0.Add(2*deadAfter+1234567*time.Nanosecond), silent("connection refused")),
			verdict{cluster.PrimaryDead, "it did not answer as a primary for 2.001s (connection refused)"}},
		{"answers as a standby for less than DeadAfter", health(t0.Add(deadAfter/2), standby),
			verdict{cluster.PrimarySuspect, ""}},
		{"answers as a standby for DeadAfter", health(t0.Add(deadAfter), standby),
			verdict{cluster.PrimaryDead, "it did not answer as a primary for 1s (it runs as a standby)"}},
		{"silent without an error text", health(t0.Add(3*deadAfter), silent("")),
			verdict{cluster.PrimaryDead, "it did not answer as a primary for 3s"}},
		{"clock behind the last answer: not dead", health(t0.Add(-time.Minute), silent("timeout")),
			verdict{cluster.PrimarySuspect, ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state, cause := cluster.JudgePrimary(tc.h)
			if diff := cmp.Diff(tc.want, verdict{state, cause}); diff != "" {
				t.Errorf("JudgePrimary(%+v) (-want +got):\n%s", tc.h, diff)
			}
		})
	}
}

func TestSyncListed(t *testing.T) {
	tests := []struct {
		names, node string
		want        bool
	}{
		{cluster.SyncNames("FIRST", []string{"main-2", "main-3"}), "main-2", true},
		{cluster.SyncNames("FIRST", []string{"main-2", "main-3"}), "main-3", true},
		{cluster.SyncNames("ANY", []string{"main-1", "main-3"}), "main-2", false},
		{`FIRST 1 ("MAIN_2", main_3)`, "main-2", true},
		{"main_2", "main-2", true},
		{"main_2, main_3", "main-3", true},
		{"", "main-2", false},
		{"FIRST 1 (main_22)", "main-2", false},
	}
	for _, tc := range tests {
		if got := cluster.SyncListed(tc.names, tc.node); got != tc.want {
			t.Errorf("syncListed(%q, %q) = %t, want %t", tc.names, tc.node, got, tc.want)
		}
	}
}
