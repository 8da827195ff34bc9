package pgnode_test

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/netns"
	"socnet/internal/netns/netnstest"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
)

// hostNode configures a node on host of net n: listening on the host's
// address, its programs in the host's namespace, admitting the bridge's
// subnet only.
func hostNode(t *testing.T, n *netns.Net, host, password string, settings map[string]string) *pgnode.Node {
	t.Helper()
	addr, ok := n.Addr(host)
	if !ok {
		t.Fatalf("no host %s", host)
	}
	dir := t.TempDir()
	node := pgnode.New(pgnode.Config{
		Name:      host,
		DataDir:   filepath.Join(dir, "data"),
		LogPath:   filepath.Join(dir, host+".log"),
		Host:      addr.String(),
		Port:      5432, // every host has its own ports
		OSUser:    pgnode.OSUser(),
		Password:  password,
		Settings:  settings,
		Netns:     n.Netns(host),
		ClientNet: n.Subnet().String(),
		Logger:    slog.New(slog.NewTextHandler(pgtest.LogWriter(t, host+" | pgnode:"), nil)),
		Output:    pgtest.LogWriter(t, ""),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := node.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return node
}

// assertOnHost checks that pid is in the network namespace ns and runs as
// the nodes' OS user, not root.
func assertOnHost(t *testing.T, pid int, ns string) {
	t.Helper()
	var want, got syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &want); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Errorf("postmaster %d is not in namespace %s", pid, ns)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d", pid), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid == 0 {
		t.Errorf("postmaster %d runs as root", pid)
	}
}

// receiverStatus returns the status of node's WAL receiver and the host it
// receives from ("" when none runs).
func receiverStatus(ctx context.Context, node *pgnode.Node) (status, sender string) {
	conn, err := pgx.Connect(ctx, node.DSN(""))
	if err != nil {
		return "", ""
	}
	defer conn.Close(context.Background())
	_ = conn.QueryRow(ctx, "SELECT status, coalesce(sender_host, '') FROM pg_stat_wal_receiver").Scan(&status, &sender)
	return status, sender
}

// TestNodesOnTheirOwnHosts runs a primary and a streaming replica each in
// its own network namespace: replication crosses the bridge with scram,
// socnet reaches both from the machine's namespace at their addresses, a
// cut of the primary's host breaks the replica's stream and a heal restores
// it.
func TestNodesOnTheirOwnHosts(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	if err := netns.Check(ctx); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not found: install the Debian package util-linux")
	}
	// First, so that its clean-up runs after the nodes have stopped.
	n := netnstest.Up(t, t.TempDir(), "pg-1", "pg-2")
	settings := map[string]string{
		"shared_buffers":  "32MB",
		"max_connections": "30",
		// A cut host sends nothing, not even a reset: without these the
		// stream would stay "streaming" for a minute.
		"wal_receiver_timeout":        "3s",
		"wal_sender_timeout":          "3s",
		"wal_retrieve_retry_interval": "500ms",
	}
	password := "pw-" + t.Name()
	primary := hostNode(t, n, "pg-1", password, settings)
	if err := primary.InitDB(ctx); err != nil {
		t.Fatal(err)
	}
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	assertOnHost(t, primary.Pid(), n.Netns("pg-1"))
	// The DSN names the host's bridge address and works from here.
	if !strings.Contains(primary.DSN(""), "@"+primary.Config().Host+":5432/") {
		t.Errorf("DSN %s does not name the host's address", primary.DSN(""))
	}
	mustExec(t, ctx, primary.DSN(""), "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'rep-secret'")
	mustExec(t, ctx, primary.DSN(""), "SELECT pg_create_physical_replication_slot('pg_2')")
	mustExec(t, ctx, primary.DSN(""), "CREATE TABLE items (id int PRIMARY KEY)")
	mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(1, 10)")

	// Only scram, only from the bridge's subnet.
	type rule struct{ Type, Address, Netmask, Method string }
	conn := mustConnect(t, ctx, primary.DSN(""))
	rows, err := conn.Query(ctx, "SELECT type, coalesce(address, ''), coalesce(netmask, ''), auth_method FROM pg_hba_file_rules ORDER BY line_number")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rule])
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 {
		t.Errorf("pg_hba rules: %+v, want two", rules)
	}
	for _, r := range rules {
		if r.Type != "host" || r.Address != n.Subnet().Addr().String() || r.Netmask != "255.255.255.0" || r.Method != "scram-sha-256" {
			t.Errorf("pg_hba rule %+v: want host, %s/24, scram-sha-256", r, n.Subnet().Addr())
		}
	}

	// The base backup runs on the replica's host and crosses the bridge.
	replica := hostNode(t, n, "pg-2", password, settings)
	primaryAddr, _ := n.Addr("pg-1")
	conninfo := pgnode.ReplicationConnInfo(primaryAddr.String(), 5432, "replicator", "rep-secret", "pg_2")
	if err := replica.BaseBackup(ctx, conninfo, "pg_2"); err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	assertOnHost(t, replica.Pid(), n.Netns("pg-2"))
	waitStreaming(t, ctx, primary, "pg_2")
	replicaAddr, _ := n.Addr("pg-2")
	var clientAddr string
	c := mustConnect(t, ctx, primary.DSN(""))
	if err := c.QueryRow(ctx, "SELECT host(client_addr) FROM pg_stat_replication WHERE application_name = 'pg_2'").Scan(&clientAddr); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	if clientAddr != replicaAddr.String() {
		t.Errorf("replica streams from %s, want its host's address %s", clientAddr, replicaAddr)
	}
	if st, sender := receiverStatus(ctx, replica); st != "streaming" || sender != primaryAddr.String() {
		t.Errorf("replica's receiver: %q from %q, want streaming from %s", st, sender, primaryAddr)
	}
	waitRows(t, ctx, replica, ids(1, 10))

	if err := n.Cut(ctx, "pg-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the replica's stream to break after the cut", func() bool {
		st, _ := receiverStatus(ctx, replica)
		return st != "streaming"
	})
	if !primary.Running() {
		t.Error("the cut primary's postmaster exited")
	}

	if err := n.Heal(ctx, "pg-1"); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, ctx, primary, "pg_2")
	mustExec(t, ctx, primary.DSN(""), "INSERT INTO items SELECT generate_series(11, 20)")
	waitRows(t, ctx, replica, ids(1, 20))
}
