package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/pgtest"
)

// runCluster runs `socnet cluster ARGS` and returns its stdout.
func runCluster(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{getenv: func(string) string { return "" }, stdout: &stdout, stderr: &stderr,
		log: slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "cli"), nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cmdCluster(ctx, e, args)
	t.Logf("socnet cluster %s -> %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	return stdout.String(), err
}

// TestClusterCommandDirect works on a home where no supervisor runs: each
// operation starts the cluster, acts and stops it, and the roles persist.
func TestClusterCommandDirect(t *testing.T) {
	home := t.TempDir()
	spec := cluster.CounterSpec()
	spec.Settings = map[string]string{"shared_buffers": "32MB", "max_connections": "50"}
	c, err := cluster.Open(cluster.Dir(home, "counter"), spec, slog.New(slog.NewTextHandler(pgtest.LogWriter(t, "up"), nil)),
		cluster.Options{Output: pgtest.LogWriter(t, "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	out, err := runCluster(t, "status", "--home", home, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Clusters []cluster.Status `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if len(doc.Clusters) != 1 || doc.Clusters[0].Primary != "counter-1" || doc.Clusters[0].Nodes[0].Role != cluster.RoleDown {
		t.Fatalf("status of a stopped cluster: %+v", doc.Clusters)
	}
	for _, n := range doc.Clusters[0].Nodes {
		u, err := url.Parse(n.DSN)
		if err != nil {
			t.Fatalf("%s: dsn %q: %v", n.Name, n.DSN, err)
		}
		if _, has := u.User.Password(); has || u.Query().Get("passfile") == "" {
			t.Errorf("%s: status --json dsn %q: want no password and a passfile", n.Name, n.DSN)
		}
	}

	out, err = runCluster(t, "switchover", "--home", home, "counter", "counter-2")
	if err != nil || !strings.Contains(out, "counter-1 -> counter-2") {
		t.Fatalf("switchover: %v, %q", err, out)
	}

	_, err = runCluster(t, "switchover", "--home", home, "counter", "counter-2")
	var r refusalError
	if !errors.As(err, &r) || exitCode(err) != 3 || !strings.Contains(err.Error(), "counter-2 is already primary") {
		t.Fatalf("second switchover: %v (exit %d), want a refusal", err, exitCode(err))
	}
	_, err = runCluster(t, "promote", "--home", home, "counter", "counter-1")
	if exitCode(err) != 3 || !strings.Contains(err.Error(), "counter-2 is the running primary; use switchover") {
		t.Fatalf("promote with a live primary: %v", err)
	}

	out, err = runCluster(t, "status", "--home", home)
	if err != nil || !strings.Contains(out, "primary counter-2") || !strings.Contains(out, "switchover") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	for _, bad := range [][]string{
		{"switchover", "--home", home, "counter"},
		{"promote", "--home", home, "--nope", "counter", "counter-1"},
		{"explode", "--home", home},
		{},
	} {
		if _, err := runCluster(t, bad...); exitCode(err) != 2 {
			t.Errorf("cluster %q: %v (exit %d), want a usage error", bad, err, exitCode(err))
		}
	}
	if _, err := runCluster(t, "rejoin", "--home", home, "nosuch", "x"); err == nil || !strings.Contains(err.Error(), `no cluster "nosuch"`) {
		t.Errorf("rejoin of an unknown cluster: %v", err)
	}
}
