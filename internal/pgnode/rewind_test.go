package pgnode_test

import (
	"strings"
	"testing"
	"time"

	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// TestRewindRefusesACrashedStandby kills a streaming standby and asks for a
// rewind against its primary. Finishing the standby's recovery as a crash
// recovery would write checkpoints of its own on the primary's timeline,
// which pg_rewind then calls "no rewind required" and after which the
// standby cannot stream: Rewind refuses, changes nothing, and the standby
// restarts and streams every row.
func TestRewindRefusesACrashedStandby(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	primary := pgtest.MustNode(t, "primary", nil)
	mustExec(t, ctx, primary.DSN(""), "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'rep ''secret'")
	mustExec(t, ctx, primary.DSN(""), "CREATE TABLE items (id int PRIMARY KEY)")
	mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(1, 10)")
	standby := pgtest.NewNode(t, "standby", nil)
	conninfo := pgnode.ReplicationConnInfo("127.0.0.1", primary.Config().Port, "replicator", replicatorPassword, "standby")
	if err := standby.BaseBackup(ctx, conninfo, ""); err != nil {
		t.Fatalf("BaseBackup: %v", err)
	}
	if err := standby.Start(ctx); err != nil {
		t.Fatalf("Start standby: %v", err)
	}
	waitStreaming(t, ctx, primary, "standby")
	mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(11, 20)")
	waitRows(t, ctx, standby, ids(1, 20))

	if err := standby.Kill(); err != nil {
		t.Fatalf("Kill standby: %v", err)
	}
	err := standby.Rewind(ctx, primary.DSN(""))
	if err == nil || !strings.Contains(err.Error(), "cannot be rewound") {
		t.Fatalf("Rewind of a crashed standby: %v, want a refusal", err)
	}
	t.Logf("refused: %v", err)

	mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(21, 30)")
	if err := standby.Start(ctx); err != nil {
		t.Fatalf("Start standby after the refusal: %v", err)
	}
	waitStreaming(t, ctx, primary, "standby")
	mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(31, 40)")
	waitRows(t, ctx, standby, ids(1, 40))
}
