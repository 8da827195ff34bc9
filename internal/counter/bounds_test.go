package counter_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/counter"
	"socnet/internal/pgmigrate"
	"socnet/internal/pgtest"
)

// TestMigrationRemovesCountersBeyondTheBound: a counter database written
// before seq was bounded loses the forged states (reconciliation rewrites
// them from the truth) and keeps the others; no state beyond the bound can
// be written again.
func TestMigrationRemovesCountersBeyondTheBound(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.MustDatabase(t)
	first, err := fs.ReadFile(counter.MigrationFiles, "migrations/0001_counters.sql")
	if err != nil {
		t.Fatal(err)
	}
	v1 := pgmigrate.Set{Files: fstest.MapFS{"migrations/0001_counters.sql": {Data: first}}, Dir: "migrations",
		Table: "counter_schema_migrations", LockKey: 0x636f756e746572}
	conn := mustConn(t, dsn)
	if _, err := v1.Apply(ctx, conn, nil); err != nil {
		t.Fatal(err)
	}
	forged, kept, edge := newUUID(t), newUUID(t), newUUID(t)
	peer := newUUID(t)
	_, err = conn.Exec(ctx, `INSERT INTO counters (user_id, peer_id, unread, seq) VALUES
		($1, $4, 31337, 4611686018427387904), ($2, $4, 3, 7), ($3, $4, 1, 9007199254740992)`, forged, kept, edge, peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := counter.Migrate(ctx, []string{dsn}, testLogger(t, "migrate:")); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT user_id::text FROM counters ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{kept, edge}, users); diff != "" {
		t.Errorf("counters after the migration (-want +got):\n%s", diff)
	}
	_, err = conn.Exec(ctx, `UPDATE counters SET seq = 9007199254740993 WHERE user_id = $1`, edge)
	if err == nil || !strings.Contains(err.Error(), "counters_seq_bound") {
		t.Errorf("a seq beyond the bound written: %v", err)
	}
}

// TestResetFloorSaturates: an unread_reset whose seq_floor is at or beyond
// bigint's end, or not even an integer, stamps the bound instead of failing
// with "bigint out of range", and the dialog goes on counting from there.
func TestResetFloorSaturates(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	ctx := context.Background()
	ids := s.mustUsers(t, 2)
	reader, sender := ids[0], ids[1]
	var got []int64
	for _, floor := range []string{"9223372036854775807", "1e30", "-5", "7"} {
		var seq int64
		err := s.admin.QueryRow(ctx, `INSERT INTO outbox (aggregate, kind, payload)
			VALUES ('t', 'unread_reset', jsonb_build_object('event_id', gen_random_uuid(), 'user_id', $1::uuid,
				'peer_id', $2::uuid, 'unread', 0, 'seq_floor', $3::numeric))
			RETURNING (payload->>'seq')::bigint`, reader, sender, floor).Scan(&seq)
		if err != nil {
			t.Fatalf("reset with seq_floor %s: %v", floor, err)
		}
		got = append(got, seq)
		if _, err := s.admin.Exec(ctx, `UPDATE dialog_unread SET seq = 0 WHERE user_id = $1`, reader); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]int64{counter.MaxSeq, counter.MaxSeq, 1, 8}, got); diff != "" {
		t.Errorf("stamped seqs (-want +got):\n%s", diff)
	}
}
