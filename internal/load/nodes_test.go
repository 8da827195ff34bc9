package load_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/load"
)

// statusDoc is the example of `socnet status --json` in DESIGN.md.
const statusDoc = `{"clusters": [
   {"name": "main", "nodes": [
      {"name": "main-1", "role": "primary", "sync_state": "", "pid": 1234, "host": "127.0.0.1",
       "port": 25432, "dsn": "postgres://admin:pw@127.0.0.1:25432/postgres", "lsn": "0/3000148", "lag_bytes": 0},
      {"name": "main-2", "role": "replica", "sync_state": "sync", "pid": 1240, "host": "127.0.0.1",
       "port": 25433, "dsn": "postgres://admin:pw@127.0.0.1:25433/postgres", "lsn": "0/3000148", "lag_bytes": 0},
      {"name": "main-3", "role": "replica", "sync_state": "async", "pid": 0, "host": "127.0.0.1",
       "port": 25434, "dsn": "postgres://admin:pw@127.0.0.1:25434/postgres", "lsn": "0/3000000", "lag_bytes": 328}]},
   {"name": "counter", "nodes": [
      {"name": "counter-1", "role": "down", "sync_state": "", "pid": 0, "host": "127.0.0.1",
       "port": 25442, "dsn": "postgres://admin:pw@127.0.0.1:25442/postgres", "lsn": "", "lag_bytes": 0}]}],
 "services": [
   {"name": "api", "pid": 2345, "addr": "127.0.0.1:8080"},
   {"name": "counter", "pid": 2346, "addr": "127.0.0.1:8091"}]}`

func TestParseStatusJSON(t *testing.T) {
	st, err := load.ParseStatusJSON(strings.NewReader(statusDoc))
	if err != nil {
		t.Fatal(err)
	}
	want := []load.Node{
		{Name: "main-1", Cluster: "main", Role: "primary", PID: 1234, DSN: "postgres://admin:pw@127.0.0.1:25432/postgres"},
		{Name: "main-2", Cluster: "main", Role: "replica", SyncState: "sync", PID: 1240, DSN: "postgres://admin:pw@127.0.0.1:25433/postgres"},
		{Name: "main-3", Cluster: "main", Role: "replica", SyncState: "async", DSN: "postgres://admin:pw@127.0.0.1:25434/postgres"},
		{Name: "counter-1", Cluster: "counter", Role: "down", DSN: "postgres://admin:pw@127.0.0.1:25442/postgres"},
	}
	if diff := cmp.Diff(want, st.Nodes); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	if st.ServiceAddr("api") != "127.0.0.1:8080" || st.ServiceAddr("nope") != "" {
		t.Errorf("api at %q, nope at %q", st.ServiceAddr("api"), st.ServiceAddr("nope"))
	}
	nodes, err := load.NodesFromStatusJSON(strings.NewReader(statusDoc))
	if err != nil || len(nodes) != 4 {
		t.Errorf("NodesFromStatusJSON = %d nodes, %v", len(nodes), err)
	}
}

func TestParseStatusJSONRejectsBadDocuments(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"not json", `clusters: []`, "parse status"},
		{"no clusters", `{"services": []}`, "no \"clusters\""},
		{"nameless node", `{"clusters":[{"name":"main","nodes":[{"dsn":"postgres://x"}]}]}`, "has no name"},
		{"no dsn", `{"clusters":[{"name":"main","nodes":[{"name":"main-1"}]}]}`, "no dsn"},
		{"twice", `{"clusters":[{"name":"a","nodes":[{"name":"n","dsn":"x"}]},{"name":"b","nodes":[{"name":"n","dsn":"y"}]}]}`, "twice"},
		{"wrong type", `{"clusters":[{"name":"main","nodes":[{"name":"n","dsn":"x","pid":"12"}]}]}`, "parse status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load.NodesFromStatusJSON(strings.NewReader(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseNodes(t *testing.T) {
	tests := []struct {
		in      string
		want    []load.Node
		wantErr string
	}{
		{in: "a=postgres://u:p@127.0.0.1:5432/db", want: []load.Node{{Name: "a", DSN: "postgres://u:p@127.0.0.1:5432/db"}}},
		{in: "main-1=postgres://h:1/db, main-2=host=127.0.0.1 port=2 user=u",
			want: []load.Node{{Name: "main-1", DSN: "postgres://h:1/db"}, {Name: "main-2", DSN: "host=127.0.0.1 port=2 user=u"}}},
		{in: "m=postgres://u@h1:1,h2:2/db?target_session_attrs=any,r=postgres://u@h3:3/db",
			want: []load.Node{{Name: "m", DSN: "postgres://u@h1:1,h2:2/db?target_session_attrs=any"}, {Name: "r", DSN: "postgres://u@h3:3/db"}}},
		{in: "", wantErr: "want name=DSN"},
		{in: "postgres://h:1/db", wantErr: "want name=DSN"},
		{in: "a=", wantErr: "want name=DSN"},
		{in: "a=x,a=y", wantErr: "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := load.ParseNodes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseNodes(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseNodes(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
