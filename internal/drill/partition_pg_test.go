package drill_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/drill"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// waitUntil polls cond every 50 ms until it holds; it fails after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func execSQL(t *testing.T, ctx context.Context, dsn, sql string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// countAnswers counts the samples of node that were answered with the role.
func countAnswers(samples []drill.Sample, node string, primary bool, after time.Time) int {
	n := 0
	for _, s := range samples {
		if s.Node == node && s.Reached && s.Primary == primary && !s.Start.Before(after) {
			n++
		}
	}
	return n
}

// TestWatchSeesTwoPrimaries watches a real primary and its streaming
// replica, promotes the replica while the old primary still runs and
// writes on the old primary afterwards: the judge must report both the two
// primaries and the late acknowledgement.
func TestWatchSeesTwoPrimaries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary := pgtest.MustNode(t, "primary", nil)
	execSQL(t, ctx, primary.DSN(""), "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'rep'")
	execSQL(t, ctx, primary.DSN(""), "CREATE TABLE items (id int)")
	replica := pgtest.NewNode(t, "replica", nil)
	pc := primary.Config()
	if err := replica.BaseBackup(ctx, pgnode.ReplicationConnInfo(pc.Host, pc.Port, "replicator", "rep", "replica"), ""); err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}

	w := drill.StartWatch(ctx, []drill.Node{{Name: "primary", DSN: primary.DSN("")}, {Name: "replica", DSN: replica.DSN("")}}, 0, 0)
	defer w.Stop()
	waitUntil(t, 30*time.Second, "three answers of each node in its role", func() bool {
		s := w.Samples()
		return countAnswers(s, "primary", true, time.Time{}) >= 3 && countAnswers(s, "replica", false, time.Time{}) >= 3
	})

	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	waitUntil(t, 30*time.Second, "three primary answers of each node after the promotion", func() bool {
		s := w.Samples()
		return countAnswers(s, "replica", true, promoted) >= 3 && countAnswers(s, "primary", true, promoted) >= 3
	})
	// A write the old primary acknowledges now, beside the new primary.
	start := time.Now()
	execSQL(t, ctx, primary.DSN(""), "INSERT INTO items VALUES (1)")
	acks := []drill.NodeAck{{Node: "primary", Tag: "late", Start: start, End: time.Now()}}

	v := drill.JudgePartition(w.Stop(), acks)
	t.Logf("samples %d, tenures %+v, overlaps %+v, late acks %d, problems %v", v.Samples, v.Tenures, v.Overlaps, len(v.LateAcks), v.Problems)
	if v.OK() {
		t.Fatal("the verdict passed two primaries")
	}
	if len(v.Overlaps) != 1 {
		t.Fatalf("overlaps %+v, want one", v.Overlaps)
	}
	o := v.Overlaps[0]
	if got := slices.Sorted(slices.Values(o.Nodes)); !slices.Equal(got, []string{"primary", "replica"}) {
		t.Errorf("overlap of %v, want primary and replica", o.Nodes)
	}
	if o.From.Before(promoted.Add(-5*time.Second)) || o.MS <= 0 {
		t.Errorf("overlap from %v for %v ms; the promotion returned at %v", o.From, o.MS, promoted)
	}
	if len(v.LateAcks) != 1 || v.LateAcks[0].Node != "primary" || v.LateAcks[0].Promoted != "replica" {
		t.Errorf("late acks %+v, want the old primary's write after the replica's promotion", v.LateAcks)
	}
	promotedTenure := false
	for _, tn := range v.Tenures {
		if tn.Node == "replica" && tn.Promoted {
			promotedTenure = true
		}
	}
	if !promotedTenure {
		t.Errorf("no tenure of the replica that began with a promotion: %+v", v.Tenures)
	}
}
