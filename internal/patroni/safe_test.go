package patroni_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/patroni"
)

func testSpec(dir string) patroni.Spec {
	return patroni.Spec{
		Cluster:     "main",
		BinDir:      "/usr/lib/postgresql/15/bin",
		Etcd:        []string{"127.0.0.1:2379"},
		Superuser:   patroni.Credential{Username: "postgres", Password: "su-secret"},
		Replication: patroni.Credential{Username: "replicator", Password: "repl-secret"},
		Rewind:      patroni.Credential{Username: "rewinder", Password: "rw-secret"},
		Nodes: []patroni.NodeSpec{
			{Name: "n1", Port: 15432, RESTPort: 18008, Dir: filepath.Join(dir, "n1")},
			{Name: "n2", Port: 15433, RESTPort: 18009, Dir: filepath.Join(dir, "n2")},
			{Name: "n3", Port: 15434, RESTPort: 18010, Dir: filepath.Join(dir, "n3"), NoSync: true},
		},
	}
}

func mustConfigs(tb testing.TB, spec patroni.Spec) []patroni.Config {
	tb.Helper()
	cfgs, err := patroni.Configs(spec)
	if err != nil {
		tb.Fatal(err)
	}
	return cfgs
}

func TestCheckSafe(t *testing.T) {
	lag := int64(1 << 20)
	tests := []struct {
		name   string
		change func(*patroni.Config)
		want   string // a word of the one-line reason; "" means safe
	}{
		{"generated", func(*patroni.Config) {}, ""},
		{"default timing", func(c *patroni.Config) {
			c.Bootstrap.DCS.TTL, c.Bootstrap.DCS.LoopWait, c.Bootstrap.DCS.RetryTimeout = 30, 10, 10
		}, ""},
		{"lag limit under sync mode", func(c *patroni.Config) { c.Bootstrap.DCS.MaximumLagOnFailover = &lag }, ""},
		{"remote_apply", func(c *patroni.Config) { c.Bootstrap.DCS.PostgreSQL.Parameters["synchronous_commit"] = "remote_apply" }, ""},
		{"local trust", func(c *patroni.Config) { c.PostgreSQL.PgHBA = append(c.PostgreSQL.PgHBA, "local all all trust") }, ""},
		{"sync mode off", func(c *patroni.Config) { c.Bootstrap.DCS.SynchronousMode = false }, "synchronous_mode is off"},
		{"strict off", func(c *patroni.Config) { c.Bootstrap.DCS.SynchronousModeStrict = false }, "synchronous_mode_strict is off"},
		{"commit off", func(c *patroni.Config) { c.Bootstrap.DCS.PostgreSQL.Parameters["synchronous_commit"] = "off" }, "synchronous_commit = off"},
		{"commit local", func(c *patroni.Config) { c.Bootstrap.DCS.PostgreSQL.Parameters["synchronous_commit"] = "local" }, "synchronous_commit = local"},
		{"commit remote_write", func(c *patroni.Config) { c.PostgreSQL.Parameters["synchronous_commit"] = "remote_write" }, "synchronous_commit = remote_write"},
		{"host trust", func(c *patroni.Config) {
			c.PostgreSQL.PgHBA = append(c.PostgreSQL.PgHBA, "host all all 0.0.0.0/0 trust")
		}, "trusts network clients"},
		{"hostssl trust with mask", func(c *patroni.Config) {
			c.PostgreSQL.PgHBA = append(c.PostgreSQL.PgHBA, "hostssl all all 10.0.0.0 255.0.0.0 trust")
		}, "trusts network clients"},
		{"replication trust", func(c *patroni.Config) {
			c.PostgreSQL.PgHBA = append(c.PostgreSQL.PgHBA, "host replication replicator 127.0.0.1/32 trust")
		}, "trusts network clients"},
		{"ttl too short", func(c *patroni.Config) { c.Bootstrap.DCS.TTL = 8 }, "ttl 8 is below"},
		{"zero loop_wait", func(c *patroni.Config) { c.Bootstrap.DCS.LoopWait = 0 }, "must all be positive"},
		{"no checksums", func(c *patroni.Config) {
			c.Bootstrap.InitDB = []any{map[string]string{"auth-host": "scram-sha-256"}}
		}, "data-checksums"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustConfigs(t, testSpec(t.TempDir()))[0]
			tt.change(&cfg)
			err := patroni.CheckSafe(cfg)
			got := ""
			if err != nil {
				got = err.Error()
				if strings.Contains(got, "\n") {
					t.Errorf("reason spans lines: %q", got)
				}
			}
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("CheckSafe = %q, want a reason containing %q", got, tt.want)
			}
		})
	}
}

func TestConfigs(t *testing.T) {
	dir := t.TempDir()
	cfgs := mustConfigs(t, testSpec(dir))
	type row struct {
		Name, REST, PG, Data string
		NoSync               bool
		TTL, Loop, Retry     int
	}
	var got []row
	for _, c := range cfgs {
		got = append(got, row{c.Name, c.RESTAPI.Listen, c.PostgreSQL.Listen, c.PostgreSQL.DataDir, c.Tags.NoSync,
			c.Bootstrap.DCS.TTL, c.Bootstrap.DCS.LoopWait, c.Bootstrap.DCS.RetryTimeout})
	}
	want := []row{
		{"n1", "127.0.0.1:18008", "127.0.0.1:15432", filepath.Join(dir, "n1", "data"), false, 10, 1, 4},
		{"n2", "127.0.0.1:18009", "127.0.0.1:15433", filepath.Join(dir, "n2", "data"), false, 10, 1, 4},
		{"n3", "127.0.0.1:18010", "127.0.0.1:15434", filepath.Join(dir, "n3", "data"), true, 10, 1, 4},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("configs (-want +got):\n%s", d)
	}

	path := filepath.Join(dir, "patroni.yml")
	if err := patroni.WriteConfig(path, cfgs[0]); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("config is not JSON (hence not YAML): %v", err)
	}
	if !strings.Contains(string(b), "su-secret") {
		t.Error("superuser password missing from the config file")
	}
}

func TestConfigsRejectIncompleteSpec(t *testing.T) {
	spec := testSpec(t.TempDir())
	spec.Nodes[1].RESTPort = 0
	if _, err := patroni.Configs(spec); err == nil {
		t.Error("Configs accepted a node without a REST port")
	}
}

// TestConfigsOnHost checks a node placed on a host of its own: PostgreSQL
// and the REST API listen on the host's address, and pg_hba admits scram
// logins and replication from the hosts' network only, trusting nothing.
func TestConfigsOnHost(t *testing.T) {
	spec := testSpec(t.TempDir())
	spec.ClientNet = "10.213.7.0/24"
	for i := range spec.Nodes {
		spec.Nodes[i].Host = fmt.Sprintf("10.213.7.%d", i+2)
	}
	cfgs := mustConfigs(t, spec)
	c := cfgs[1]
	if c.PostgreSQL.Listen != "10.213.7.3:15433" || c.PostgreSQL.ConnectAddress != c.PostgreSQL.Listen ||
		c.RESTAPI.Listen != "10.213.7.3:18009" || c.RESTAPI.ConnectAddress != c.RESTAPI.Listen {
		t.Errorf("n2 listens on postgresql %s (connect %s), restapi %s (connect %s): want 10.213.7.3",
			c.PostgreSQL.Listen, c.PostgreSQL.ConnectAddress, c.RESTAPI.Listen, c.RESTAPI.ConnectAddress)
	}
	want := []string{
		"local all all peer",
		"host replication " + spec.Replication.Username + " 10.213.7.0/24 scram-sha-256",
		"host all all 10.213.7.0/24 scram-sha-256",
	}
	if d := cmp.Diff(want, c.PostgreSQL.PgHBA); d != "" {
		t.Errorf("pg_hba (-want +got):\n%s", d)
	}
	if err := patroni.CheckSafe(c); err != nil {
		t.Errorf("CheckSafe: %v", err)
	}
}
