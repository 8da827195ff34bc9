package counter_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/counter"
	"socnet/internal/pgnode"
	"socnet/internal/social"
)

func mustServer(t *testing.T) (*httptest.Server, *counter.Store) {
	t.Helper()
	store, _, reg := mustStore(t)
	h, err := counter.NewServer(testLogger(t, "counterd:"), store, reg,
		counter.WithVerifier(counter.NewVerifier(serviceKey, 0, 0, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, store
}

func TestCounterdAPI(t *testing.T) {
	srv, _ := mustServer(t)
	user, peer := newUUID(t), newUUID(t)
	event := func(id string) string {
		return `{"id":"` + id + `","outbox_id":1,"kind":"message_sent","user_id":"` + user + `","peer_id":"` + peer + `","seq":1,"unread":1}`
	}
	many := `{"events":[` + strings.Repeat(event(newUUID(t))+",", counter.MaxBatch) + event(newUUID(t)) + `]}`
	cases := []struct {
		name, method, path, body string
		status                   int
		want                     string // a substring of the answer
	}{
		{"empty batch", "POST", "/events", `{"events":[]}`, 200, `"results":[]`},
		{"one event", "POST", "/events", `{"events":[` + event(newUUID(t)) + `]}`, 200, `"outcome":"applied"`},
		{"invalid event", "POST", "/events", `{"events":[` + event(newUUID(t)) + `,{"id":"x"}]}`, 400, `"fields":{"events[1]":"id must be a UUID"}`},
		{"not JSON", "POST", "/events", `events`, 400, `"code":"invalid"`},
		{"unknown field", "POST", "/events", `{"events":[],"mode":"fast"}`, 400, `unknown field`},
		{"two objects", "POST", "/events", `{"events":[]} {}`, 400, `single JSON object`},
		{"too many events", "POST", "/events", many, 400, `at most 1000 events`},
		{"bad session", "POST", "/events", `{"events":[],"session":"me"}`, 400, `session`},
		{"too large", "POST", "/events", `{"events":[],"session":"` + strings.Repeat("x", 5<<20) + `"}`, 413, `"code":"too_large"`},
		{"forged seq", "POST", "/events", `{"events":[{"id":"` + newUUID(t) + `","kind":"message_sent","user_id":"` + user +
			`","peer_id":"` + peer + `","seq":4611686018427387904,"unread":31337}]}`, 400, `"events[0]":"seq must be at most 9007199254740992"`},
		{"counters", "GET", "/counters/" + user, "", 200, `"dialogs":[{"user_id":"` + peer + `","unread":1}]`},
		{"counters of nobody", "GET", "/counters/" + peer, "", 200, `{"user_id":"` + peer + `","total":0,"dialogs":[]}`},
		{"counters of a bad id", "GET", "/counters/nope", "", 400, `"fields":{"user_id":"must be a UUID"}`},
		{"no such route", "GET", "/nope", "", 404, `"code":"not_found"`},
		{"healthz", "GET", "/healthz", "", 200, `"status":"ok"`},
		{"metrics", "GET", "/metrics", "", 200, `socnet_counter_events_total{outcome="duplicate"} 0`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if err := counter.NewSigner(serviceKey, nil).Sign(req, []byte(tc.body)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s %s: %d %s\nwant %d with %s", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.want)
			}
		})
	}
}

func TestClient(t *testing.T) {
	srv, _ := mustServer(t)
	ctx := context.Background()
	c := newClient(srv.URL)
	defer c.Close()
	r := social.ReadReceipt{EventID: newUUID(t), OutboxID: 9, UserID: newUUID(t), PeerID: newUUID(t), Seq: 4, Unread: 0, At: time.Now()}
	for range 2 { // the second time it is a duplicate, still fine
		if err := c.ApplyRead(ctx, r); err != nil {
			t.Fatalf("ApplyRead: %v", err)
		}
	}
	got, err := c.Unread(ctx, r.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(social.Unread{Total: 0, Dialogs: []social.DialogUnread{{PeerID: r.PeerID}}}, got); diff != "" {
		t.Errorf("unread after a read (-want +got):\n%s", diff)
	}
	if _, err := c.Unread(ctx, "nope"); social.ErrorCode(err) != social.EINVALID {
		t.Errorf("Unread(nope): %v, want EINVALID", err)
	}
	bad := r
	bad.PeerID = bad.UserID
	if err := c.ApplyRead(ctx, bad); err == nil || social.ErrorCode(err) == social.EUNAVAILABLE {
		t.Errorf("ApplyRead of an invalid receipt: %v, want a non-retryable error", err)
	}

	// A client with another key: counterd refuses it, which is no fault of
	// the caller's and may pass once the keys agree.
	wrongKey := counter.NewClient(srv.URL, counter.WithServiceKey([]byte(strings.Repeat("k", 32))))
	if _, err := wrongKey.Unread(ctx, r.UserID); social.ErrorCode(err) != social.EUNAVAILABLE || !strings.Contains(err.Error(), "signature") {
		t.Errorf("Unread with another service key: %v, want EUNAVAILABLE naming the signature", err)
	}

	// Nobody listens: unavailable, quickly.
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	down := counter.NewClient("http://127.0.0.1:"+strconv.Itoa(port), counter.WithTimeout(500*time.Millisecond))
	start := time.Now()
	_, err = down.Unread(ctx, r.UserID)
	if social.ErrorCode(err) != social.EUNAVAILABLE || !counter.IsUnavailable(err) {
		t.Errorf("Unread from a dead counterd: %v, want EUNAVAILABLE", err)
	}
	if err := down.ApplyRead(ctx, r); social.ErrorCode(err) != social.EUNAVAILABLE {
		t.Errorf("ApplyRead to a dead counterd: %v, want EUNAVAILABLE", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("failing took %v", d)
	}

	// A counterd that answers 503 is unavailable too.
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(map[string]string{"code": "unavailable", "message": "counter database unavailable"})
	}))
	defer unavailable.Close()
	if _, err := counter.NewClient(unavailable.URL).Unread(ctx, r.UserID); social.ErrorCode(err) != social.EUNAVAILABLE {
		t.Errorf("Unread from a counterd answering 503: %v, want EUNAVAILABLE", err)
	}
}
