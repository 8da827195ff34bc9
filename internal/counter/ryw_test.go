package counter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/social"
)

// TestReadYourOwnReadOnALaggingReplica: counter reads go to a replica that
// replays WAL two seconds late, yet right after a read receipt is applied
// the reader's counters show it (its session reads the primary), while
// other users keep reading the replica.
func TestReadYourOwnReadOnALaggingReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary := pgtest.MustNode(t, "counter-p", nil)
	replica := mustReplica(t, ctx, "counter-r", primary)
	rconn := mustConn(t, replica.DSN(""))
	for _, q := range []string{`ALTER SYSTEM SET recovery_min_apply_delay = '2s'`, `SELECT pg_reload_conf()`} {
		if _, err := rconn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	log := testLogger(t, "counterd:")
	if err := counter.Migrate(ctx, []string{primary.DSN(""), replica.DSN("")}, log); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	db, err := dbroute.Open(ctx, dbroute.Config{Name: "counter", Nodes: []string{primary.DSN(""), replica.DSN("")},
		MaxReplicaLag: 20 * time.Second, Registry: reg}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := counter.NewStore(db, reg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := counter.NewServer(log, store, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := counter.NewClient(srv.URL)

	me, peer, other := newUUID(t), newUUID(t), newUUID(t)
	var sends []counter.Event
	for seq := range 3 {
		sends = append(sends, counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: me, PeerID: peer, Seq: int64(seq + 1), Unread: seq + 1})
	}
	sends = append(sends, counter.Event{ID: newUUID(t), Kind: counter.KindMessageSent, UserID: other, PeerID: peer, Seq: 1, Unread: 1})
	if _, err := client.Apply(ctx, counter.Batch{Events: sends}); err != nil {
		t.Fatal(err)
	}
	onReplica := func(user string) (int, error) {
		var n int
		err := rconn.QueryRow(ctx, `SELECT coalesce(sum(unread), 0) FROM counters WHERE user_id = $1`, user).Scan(&n)
		return n, err
	}
	waitFor(t, 20*time.Second, "the sends on the replica", func() error {
		n, err := onReplica(me)
		m, err2 := onReplica(other)
		if err == nil && err2 == nil && (n != 3 || m != 1) {
			err = context.DeadlineExceeded
		}
		return errors.Join(err, err2)
	})

	// The router reads a replica only once it has replayed a position it
	// saw on the primary within MaxReplicaLag: wait for that, not for time.
	waitFor(t, 30*time.Second, "the replica in the router's rotation", func() error {
		for _, n := range db.Snapshot() {
			if n.Role == dbroute.RoleReplica && n.Healthy {
				return nil
			}
		}
		return fmt.Errorf("no healthy replica in %+v", db.Snapshot())
	})
	decisions := func(d string) float64 {
		return gathered(t, reg, "socnet_db_routing_decisions_total", "decision", d)
	}
	replicaReads := decisions(dbroute.DecisionReplica)
	if u, err := client.Unread(ctx, other); err != nil || u.Total != 1 {
		t.Fatalf("unread of a user without recent writes: %+v, %v", u, err)
	}
	if decisions(dbroute.DecisionReplica) <= replicaReads {
		t.Error("a user without recent writes was not served by the replica")
	}

	r := social.ReadReceipt{EventID: newUUID(t), UserID: me, PeerID: peer, Seq: 4, Unread: 0, Count: 3, At: time.Now()}
	if err := client.ApplyRead(ctx, r); err != nil {
		t.Fatal(err)
	}
	u, err := client.Unread(ctx, me)
	if err != nil {
		t.Fatal(err)
	}
	if u.Total != 0 || len(u.Dialogs) != 1 || u.Dialogs[0].Unread != 0 {
		t.Errorf("right after the read: %+v, want the dialog at 0", u)
	}
	if n, err := onReplica(me); err != nil || n != 3 {
		t.Errorf("the replica already shows %d (%v): the test did not read ahead of it", n, err)
	}
	if decisions(dbroute.DecisionRYWPrimary) < 1 {
		t.Error("the reader's read was not sent to the primary for read-your-writes")
	}
}

// newReplica configures a node to be filled by a base backup of primary,
// mustReplica starts a streaming replica of primary, filled by a base backup
// (application name: name with "_" for "-"), stopped in t.Cleanup.
func mustReplica(t testing.TB, ctx context.Context, name string, primary *pgnode.Node) *pgnode.Node {
	t.Helper()
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pcfg := primary.Config()
	n := pgnode.New(pgnode.Config{
		Name: name, DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, name+".log"), Port: port,
		OSUser: pgnode.OSUser(), Superuser: pcfg.Superuser, Password: pcfg.Password, Settings: pcfg.Settings,
		Logger: slog.New(slog.NewTextHandler(pgtest.LogWriter(t, name+" | pgnode:"), nil)),
		Output: pgtest.LogWriter(t, ""),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", name, err)
		}
	})
	conninfo := pgnode.ReplicationConnInfo(pcfg.Host, pcfg.Port, pcfg.Superuser, pcfg.Password, strings.ReplaceAll(name, "-", "_"))
	if err := n.BaseBackup(ctx, conninfo, ""); err != nil {
		t.Fatalf("base backup of %s: %v", name, err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// gathered returns the value of the series name{label=value} on reg.
func gathered(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}
