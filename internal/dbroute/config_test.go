package dbroute_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/dbroute"
)

func TestSplitDSN(t *testing.T) {
	type node struct {
		Addr, User, Database string
		Validates            bool // a ValidateConnect survived the split
	}
	tests := []struct {
		name string
		dsn  string
		want []node
	}{{
		name: "single host",
		dsn:  "postgres://app:pw@db1:5432/social?sslmode=disable",
		want: []node{{Addr: "db1:5432", User: "app", Database: "social"}},
	}, {
		name: "multi-host url, target_session_attrs dropped",
		dsn:  "postgres://app:pw@h1:5432,h2:5433,h3:5434/social?sslmode=disable&target_session_attrs=read-write",
		want: []node{
			{Addr: "h1:5432", User: "app", Database: "social"},
			{Addr: "h2:5433", User: "app", Database: "social"},
			{Addr: "h3:5434", User: "app", Database: "social"},
		},
	}, {
		name: "keyword form with sslmode=prefer lists each host once",
		dsn:  "host=h1,h2 port=5432,6432 user=app password=pw dbname=social sslmode=prefer",
		want: []node{
			{Addr: "h1:5432", User: "app", Database: "social"},
			{Addr: "h2:6432", User: "app", Database: "social"},
		},
	}, {
		name: "one port for all hosts",
		dsn:  "postgres://app:pw@h1,h2/social?sslmode=disable",
		want: []node{
			{Addr: "h1:5432", User: "app", Database: "social"},
			{Addr: "h2:5432", User: "app", Database: "social"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pcs, err := dbroute.SplitDSN(tt.dsn)
			if err != nil {
				t.Fatalf("SplitDSN: %v", err)
			}
			var got []node
			for _, pc := range pcs {
				cc := pc.ConnConfig
				for _, fb := range cc.Fallbacks {
					if fb.Host != cc.Host || fb.Port != cc.Port {
						t.Errorf("node %s:%d has a fallback to another host %s:%d", cc.Host, cc.Port, fb.Host, fb.Port)
					}
				}
				got = append(got, node{
					Addr:      cc.Host + ":" + strconv.Itoa(int(cc.Port)),
					User:      cc.User,
					Database:  cc.Database,
					Validates: cc.ValidateConnect != nil,
				})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SplitDSN(%q) (-want +got):\n%s", tt.dsn, diff)
			}
		})
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  dbroute.Config
	}{
		{"no nodes", dbroute.Config{}},
		{"bad policy", dbroute.Config{Primary: "postgres://u:p@h/db", NoReplica: "sometimes"}},
		{"negative lag", dbroute.Config{Primary: "postgres://u:p@h/db", MaxReplicaLag: -1}},
		{"bad dsn", dbroute.Config{Nodes: []string{"postgres://u:p@h:notaport/db"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := dbroute.Open(context.Background(), tt.cfg, nil)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%+v) succeeded, want an error", tt.cfg)
			}
		})
	}
}

func TestSplitDSNList(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"postgres://a@h1:5432/db", []string{"postgres://a@h1:5432/db"}},
		{"postgres://a@h1/db,postgres://b@h2/db", []string{"postgres://a@h1/db", "postgres://b@h2/db"}},
		{"postgres://a@h1:5432,h2:5432/db", []string{"postgres://a@h1:5432,h2:5432/db"}},
		{"postgres://a@h1/db postgresql://b@h2/db", []string{"postgres://a@h1/db", "postgresql://b@h2/db"}},
		{"host=h1,h2 port=5432,5433 dbname=x", []string{"host=h1,h2 port=5432,5433 dbname=x"}},
		{"host=h1 port=1, host=h2 port=2", []string{"host=h1 port=1", "host=h2 port=2"}},
		{" postgres://a@h/db , ", []string{"postgres://a@h/db"}},
	}
	for _, tc := range cases {
		if diff := cmp.Diff(tc.want, dbroute.SplitDSNList(tc.in)); diff != "" {
			t.Errorf("SplitDSNs(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}
