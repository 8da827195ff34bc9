package pgnode_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

const replicatorPassword = "rep 'secret"

// waitStreaming waits until primary's pg_stat_replication shows
// applicationName streaming.
func waitStreaming(t *testing.T, ctx context.Context, primary *pgnode.Node, applicationName string) {
	t.Helper()
	waitFor(t, ctx, applicationName+" streaming from "+primary.Name(), func() bool {
		conn, err := pgx.Connect(ctx, primary.DSN(""))
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", applicationName).Scan(&n)
		return err == nil && n == 1
	})
}

// waitRows waits until SELECT id FROM items ORDER BY id on node returns want.
func waitRows(t *testing.T, ctx context.Context, node *pgnode.Node, want []int) {
	t.Helper()
	var got []int
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		got = nil
		if conn, err := pgx.Connect(ctx, node.DSN("")); err == nil {
			if rows, err := conn.Query(ctx, "SELECT id FROM items ORDER BY id"); err == nil {
				got, _ = pgx.CollectRows(rows, pgx.RowTo[int])
			}
			conn.Close(context.Background())
		}
		if cmp.Equal(want, got) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("rows on %s (-want +got):\n%s", node.Name(), cmp.Diff(want, got))
		case <-ticker.C:
		}
	}
}

func ids(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestReplicaPromoteAndRewind builds a primary and a replica, promotes the
// replica, then rewinds the killed old primary (which wrote a row after the
// promotion) and makes it follow the new primary.
func TestReplicaPromoteAndRewind(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	primary := pgtest.MustNode(t, "primary", nil)
	mustExec(t, ctx, primary.DSN(""), "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'rep ''secret'")
	mustExec(t, ctx, primary.DSN(""), "SELECT pg_create_physical_replication_slot('replica')")
	mustExec(t, ctx, primary.DSN(""), "CREATE TABLE items (id int PRIMARY KEY)")
	mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(1, 10)")

	replica := pgtest.NewNode(t, "replica", map[string]string{"shared_buffers": "16MB"})
	t.Run("base backup with a slot streams", func(t *testing.T) {
		conninfo := pgnode.ReplicationConnInfo("127.0.0.1", primary.Config().Port, "replicator", replicatorPassword, "replica")
		if err := replica.BaseBackup(ctx, conninfo, "replica"); err != nil {
			t.Fatalf("BaseBackup: %v", err)
		}
		auto, err := os.ReadFile(filepath.Join(replica.Config().DataDir, "postgresql.auto.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(auto), "primary_slot_name = 'replica'") {
			t.Errorf("postgresql.auto.conf lacks primary_slot_name:\n%s", auto)
		}
		if err := replica.Start(ctx); err != nil {
			t.Fatalf("Start replica: %v", err)
		}
		waitStreaming(t, ctx, primary, "replica")
		var slotActive bool
		conn := mustConnect(t, ctx, primary.DSN(""))
		if err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 'replica'").Scan(&slotActive); err != nil {
			t.Fatal(err)
		}
		if !slotActive {
			t.Errorf("slot 'replica' is not active")
		}
		mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(11, 20)")
		waitRows(t, ctx, replica, ids(1, 20))

		// The replica keeps its own settings, not the primary's.
		var sb string
		if err := mustConnect(t, ctx, replica.DSN("")).QueryRow(ctx, "SHOW shared_buffers").Scan(&sb); err != nil {
			t.Fatal(err)
		}
		if sb != "16MB" {
			t.Errorf("replica shared_buffers = %s, want 16MB", sb)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("promote makes the replica writable", func(t *testing.T) {
		err := func() error {
			conn := mustConnect(t, ctx, replica.DSN(""))
			_, err := conn.Exec(ctx, "INSERT INTO items VALUES (21)")
			return err
		}()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
			t.Fatalf("write on the replica: err = %v, want SQLSTATE 25006 (read_only_sql_transaction)", err)
		}
		if err := replica.Promote(ctx); err != nil {
			t.Fatalf("Promote: %v", err)
		}
		mustExec(t, ctx, replica.DSN(""), "INSERT INTO items VALUES (21)")
		if err := replica.Promote(ctx); err != nil {
			t.Errorf("Promote on a primary: %v", err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("rewound old primary follows the new one", func(t *testing.T) {
		// The old primary still accepts a write the new primary never sees.
		mustExec(t, ctx, primary.DSN(""), "INSERT INTO items VALUES (1000)")
		if err := primary.Kill(); err != nil {
			t.Fatalf("Kill old primary: %v", err)
		}
		mustExec(t, ctx, replica.DSN(""), "SELECT pg_create_physical_replication_slot('old_primary')")
		mustExec(t, ctx, replica.DSN(""), "INSERT INTO items SELECT generate_series(22, 30)")

		if err := primary.Rewind(ctx, replica.DSN("")); err != nil {
			t.Fatalf("Rewind: %v", err)
		}
		conninfo := pgnode.ReplicationConnInfo("127.0.0.1", replica.Config().Port, "replicator", replicatorPassword, "old-primary")
		if err := primary.Follow(ctx, conninfo, "old_primary"); err != nil {
			t.Fatalf("Follow: %v", err)
		}
		if _, err := os.Stat(filepath.Join(primary.Config().DataDir, "standby.signal")); err != nil {
			t.Errorf("standby.signal after Follow: %v", err)
		}
		if err := primary.Start(ctx); err != nil {
			t.Fatalf("Start rewound node: %v", err)
		}
		waitStreaming(t, ctx, replica, "old-primary")
		mustExec(t, ctx, replica.DSN(""), "INSERT INTO items VALUES (31)")
		waitRows(t, ctx, primary, ids(1, 31))
	})
}

func TestRewindRefusesARunningNode(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	node := pgtest.MustNode(t, "running", nil)
	if err := node.Rewind(ctx, node.DSN("")); err == nil || !strings.Contains(err.Error(), "running") {
		t.Errorf("Rewind of a running node: %v, want a 'running' error", err)
	}
	if err := node.BaseBackup(ctx, "host=127.0.0.1", ""); err == nil {
		t.Errorf("BaseBackup into a running node succeeded")
	}
}

func TestFollowRepointsARunningStandby(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	primary := pgtest.MustNode(t, "primary", nil)
	mustExec(t, ctx, primary.DSN(""), "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'rep ''secret'")
	mustExec(t, ctx, primary.DSN(""), "SELECT pg_create_physical_replication_slot('standby')")

	standby := pgtest.NewNode(t, "standby", nil)
	port := primary.Config().Port
	if err := standby.BaseBackup(ctx, pgnode.ReplicationConnInfo("127.0.0.1", port, "replicator", replicatorPassword, "before"), ""); err != nil {
		t.Fatalf("BaseBackup: %v", err)
	}
	if err := standby.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitStreaming(t, ctx, primary, "before")

	if err := standby.Follow(ctx, pgnode.ReplicationConnInfo("127.0.0.1", port, "replicator", replicatorPassword, "after"), "standby"); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	waitStreaming(t, ctx, primary, "after")
	waitFor(t, ctx, "slot standby in use", func() bool {
		conn, err := pgx.Connect(ctx, primary.DSN(""))
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		var active bool
		err = conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 'standby'").Scan(&active)
		return err == nil && active
	})
}

func TestBaseBackupWithAWrongPasswordChangesNothing(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	primary := pgtest.MustNode(t, "primary", nil)
	mustExec(t, ctx, primary.DSN(""), "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'right'")

	replica := pgtest.NewNode(t, "replica", nil)
	const wrong = "wrong-Secret-42"
	err := replica.BaseBackup(ctx, pgnode.ReplicationConnInfo("127.0.0.1", primary.Config().Port, "replicator", wrong, "replica"), "")
	if err == nil {
		t.Fatal("BaseBackup with a wrong password succeeded")
	}
	if !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("error = %v, want it to quote pg_basebackup's reason", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("error reveals the password: %v", err)
	}
	if replica.Exists() {
		t.Errorf("a failed BaseBackup left a cluster in %s", replica.Config().DataDir)
	}
	if _, err := os.Stat(replica.Config().DataDir); !os.IsNotExist(err) {
		t.Errorf("a failed BaseBackup left its data directory: %v", err)
	}
}
