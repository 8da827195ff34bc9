package load_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/load"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		in      string
		want    []load.MixPart
		wantErr string
	}{
		{in: "get", want: []load.MixPart{{"get", 1}}},
		{in: "get=70,search=20,register=5,post=5", want: []load.MixPart{{"get", 70}, {"search", 20}, {"register", 5}, {"post", 5}}},
		{in: " dialog = 3 , healthz ", want: []load.MixPart{{"dialog", 3}, {"healthz", 1}}},
		{in: "get=1,search=0", want: []load.MixPart{{"get", 1}}},
		{in: "", wantErr: "no scenario"},
		{in: "search=0", wantErr: "no scenario"},
		{in: "gets=1", wantErr: "unknown scenario"},
		{in: "get=x", wantErr: "integer"},
		{in: "get=-1", wantErr: "integer"},
		{in: "get=1,get=2", wantErr: "twice"},
		{in: "mix=1", wantErr: "unknown scenario"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := load.ParseMix(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseMix(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseMix(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestNeedsData(t *testing.T) {
	tests := []struct {
		mix             string
		users, sessions bool
	}{
		{"healthz", false, false},
		{"register", false, false},
		{"get", true, false},
		{"search=1,healthz=1", true, false},
		{"post", false, true},
		{"get=70,dialog=30", true, true},
	}
	for _, tt := range tests {
		m, err := load.ParseMix(tt.mix)
		if err != nil {
			t.Fatal(err)
		}
		users, sessions, err := load.NeedsData(m)
		if err != nil || users != tt.users || sessions != tt.sessions {
			t.Errorf("NeedsData(%s) = %v, %v, %v; want %v, %v", tt.mix, users, sessions, err, tt.users, tt.sessions)
		}
	}
}

func TestPrepareFromAPIAndRunEveryScenario(t *testing.T) {
	api := MustFakeAPI(t)
	ctx := context.Background()
	ds, err := load.Prepare(ctx, load.PrepareConfig{Target: api.URL, Sessions: 5, NeedUsers: true, NeedSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Source != "api" || len(ds.Users) != 5 || len(ds.Sessions) != 5 {
		t.Fatalf("dataset from %s with %d users, %d sessions; want 5 of each from the api", ds.Source, len(ds.Users), len(ds.Sessions))
	}
	setup := map[string]int64{"POST /user/register": 5, "POST /login": 5, "PUT /friend/set/{id}": 15, "POST /post/create": 5}
	for route, n := range setup {
		if got := api.Hits(route); got != n {
			t.Errorf("setup made %d calls to %s, want %d", got, route, n)
		}
	}

	m, err := load.ParseMix("healthz,get,search,register,post,dialog,unread")
	if err != nil {
		t.Fatal(err)
	}
	const total = 3000
	res := MustRun(t, load.Config{Target: api.URL, Mix: m, Connections: 4, Requests: total, Data: ds})
	if res.Errors != 0 || res.Requests != total {
		t.Errorf("%d requests, %d errors (%v); want %d without errors", res.Requests, res.Errors, res.StatusCodes, total)
	}
	if p := api.Problems(); len(p) > 0 {
		t.Errorf("the API would refuse requests of the generator:\n%s", strings.Join(p, "\n"))
	}
	routes := map[string]string{
		"healthz": "GET /healthz", "user_get": "GET /user/get/{id}", "user_search": "GET /user/search",
		"user_register": "POST /user/register", "post_create": "POST /post/create", "post_feed": "GET /post/feed",
		"dialog_send": "POST /dialog/{id}/send", "dialog_list": "GET /dialog/{id}/list",
		"dialog_unread": "GET /dialog/unread",
	}
	if len(res.Ops) != len(routes) {
		t.Errorf("ops %+v: want all %d", res.Ops, len(routes))
	}
	for _, op := range res.Ops {
		if got := api.Hits(routes[op.Name]) - setup[routes[op.Name]]; got != op.Requests {
			t.Errorf("%s: generator counted %d requests, the API served %d", op.Name, op.Requests, got)
		}
		// Seven scenarios of equal weight; post and dialog split theirs in two.
		want := 1.0 / 7
		if strings.HasPrefix(op.Name, "post") || op.Name == "dialog_send" || op.Name == "dialog_list" {
			want = 1.0 / 14
		}
		if share := float64(op.Requests) / total; share < want*0.7 || share > want*1.3 {
			t.Errorf("%s got %.3f of the requests, want about %.3f", op.Name, share, want)
		}
	}
}

func TestPrepareSkipsWhatTheWorkloadDoesNotNeed(t *testing.T) {
	api := MustFakeAPI(t)
	ds, err := load.Prepare(context.Background(), load.PrepareConfig{Target: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Users)+len(ds.Sessions) != 0 || api.Hits("POST /user/register") != 0 {
		t.Errorf("prepared %d users, %d sessions with %d registrations for a workload that needs none",
			len(ds.Users), len(ds.Sessions), api.Hits("POST /user/register"))
	}
}

func TestPrepareRefusesRemoteTarget(t *testing.T) {
	_, err := load.Prepare(context.Background(), load.PrepareConfig{Target: "http://192.0.2.1:8080", NeedUsers: true})
	if err == nil || !strings.Contains(err.Error(), "not a loopback") {
		t.Errorf("Prepare error = %v, want a refusal of the remote target", err)
	}
}

func TestPrepareReportsRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"message":"database unavailable"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	_, err := load.Prepare(context.Background(), load.PrepareConfig{Target: srv.URL, NeedUsers: true})
	if err == nil || !strings.Contains(err.Error(), "register") || !strings.Contains(err.Error(), "503") ||
		!strings.Contains(err.Error(), "database unavailable") {
		t.Errorf("Prepare error = %v, want the refused registration with its status and message", err)
	}
}

// The feed scenario only reads feeds, as logged-in users.
func TestFeedScenarioReadsFeeds(t *testing.T) {
	api := MustFakeAPI(t)
	ds, err := load.Prepare(context.Background(), load.PrepareConfig{Target: api.URL, Sessions: 3, NeedSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := load.ParseMix("feed")
	if err != nil {
		t.Fatal(err)
	}
	before := api.Hits("GET /post/feed")
	res := MustRun(t, load.Config{Target: api.URL, Mix: m, Connections: 2, Requests: 200, Data: ds})
	if res.Errors != 0 || len(res.Ops) != 1 || res.Ops[0].Name != "post_feed" || res.Ops[0].Requests != 200 {
		t.Fatalf("ops %+v, %d errors; want 200 post_feed", res.Ops, res.Errors)
	}
	if got := api.Hits("GET /post/feed") - before; got != 200 {
		t.Errorf("the API served %d feeds, want 200", got)
	}
}
