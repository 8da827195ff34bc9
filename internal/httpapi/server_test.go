package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"socnet/internal/httpapi"
	"socnet/internal/pgtest"
	"socnet/internal/social"
)

func TestHealthz(t *testing.T) {
	e := mustEnv(t)
	r := e.do(t, request{method: "GET", path: "/healthz"}).wantStatus(t, 200)
	if got := strings.TrimSpace(string(r.Body)); got != `{"status":"ok"}` {
		t.Errorf("body %s; want {\"status\":\"ok\"}", got)
	}
}

func TestRequestID(t *testing.T) {
	e := mustEnv(t)
	long := strings.Repeat("a", 64)
	for _, id := range []string{"abc", "A.b_c-9", long} {
		r := e.do(t, request{method: "GET", path: "/user/get/x", header: map[string]string{"X-Request-Id": id}})
		if got := r.Header.Get("X-Request-Id"); got != id {
			t.Errorf("sent X-Request-Id %q, got back %q", id, got)
		}
		if got := r.error(t).RequestID; got != id {
			t.Errorf("sent X-Request-Id %q, error names %q", id, got)
		}
	}
	seen := map[string]bool{}
	for _, id := range []string{"", long + "a", "a b", "a/b", "é", "a\tb", "<script>", "a,b"} {
		r := e.do(t, request{method: "GET", path: "/healthz", header: map[string]string{"X-Request-Id": id}})
		got := r.Header.Get("X-Request-Id")
		if got == id || seen[got] {
			t.Errorf("sent X-Request-Id %q, got back %q; want a new id", id, got)
		}
		seen[got] = true
	}
}

func TestUnknownRoutes(t *testing.T) {
	e := mustEnv(t)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/", 404, ""},
		{"GET", "/nope", 404, ""},
		{"GET", "/user/get/", 404, ""},
		{"GET", "/user/get/a/b", 404, ""},
		{"POST", "/user/search", 405, "GET, HEAD"},
		{"GET", "/user/register", 405, "POST"},
		{"DELETE", "/post/get/" + missingID, 405, "GET, HEAD"},
		{"POST", "/healthz", 405, "GET, HEAD"},
		{"PATCH", "/post/update", 405, "PUT"},
		{"BREW", "/login", 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := e.do(t, request{method: tt.method, path: tt.path}).wantStatus(t, tt.status)
			if got := r.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q; want %q", got, tt.allow)
			}
			if strings.Contains(string(r.Body), "\n404 page") || r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("body %q; want only the JSON error", r.Body)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	e := mustEnv(t)
	id := e.mustRegister(t, validUser("Ivan", "Petrov"))
	for range 3 {
		e.do(t, request{method: "GET", path: "/user/get/" + id}).wantStatus(t, 200)
	}
	e.do(t, request{method: "GET", path: "/user/get/" + missingID}).wantStatus(t, 404)
	e.do(t, request{method: "GET", path: "/no/such/route/" + missingID}).wantStatus(t, 404)
	e.do(t, request{method: "GET", path: "/post/feed"}).wantStatus(t, 401)

	// The API port does not serve the metrics; operators scrape the
	// registry on a listener of their own.
	e.do(t, request{method: "GET", path: "/metrics"}).wantStatus(t, 404)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`socnet_http_requests_total{code="200",route="POST /user/register"} 1`,
		`socnet_http_requests_total{code="200",route="GET /user/get/{id}"} 3`,
		`socnet_http_requests_total{code="404",route="GET /user/get/{id}"} 1`,
		`socnet_http_requests_total{code="404",route="unmatched"} 2`,
		`socnet_http_requests_total{code="401",route="GET /post/feed"} 1`,
		`socnet_http_request_duration_seconds_count{code="200",route="GET /user/get/{id}"} 3`,
		`socnet_http_request_duration_seconds_bucket{code="200",route="GET /user/get/{id}",le="+Inf"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// No path of a request becomes a label value.
	if strings.Contains(body, missingID) {
		t.Errorf("metrics hold a request path:\n%s", body)
	}
	// The metrics live in the registry passed in.
	mfs, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if !names["socnet_http_requests_total"] || !names["socnet_http_request_duration_seconds"] {
		t.Errorf("registry holds %v; want the http metrics", names)
	}
}

func TestSecondServerSharesRegistry(t *testing.T) {
	e := mustEnv(t)
	// A second server on the same registry must not panic on registration.
	h := httpapi.NewServer(discardLog(), httpapi.Deps{Users: e.users, Friends: e.friends, Posts: e.posts,
		Dialogs: e.dialogs, Tokens: e.tokens, Registry: e.registry})
	if h == nil {
		t.Fatal("NewServer returned nil")
	}
}

// panickyUsers is a UserStore whose User panics, to prove the server
// survives a handler bug.
type panickyUsers struct{ social.UserStore }

func (panickyUsers) User(context.Context, string) (social.User, error) {
	panic("secret internal detail")
}

func TestPanicAnswers500(t *testing.T) {
	e := mustEnvWith(t, envOptions{wrap: func(d *httpapi.Deps) { d.Users = panickyUsers{d.Users} }})
	r := e.do(t, request{method: "GET", path: "/user/get/" + missingID, header: map[string]string{"X-Request-Id": "boom-1"}}).
		wantStatus(t, 500)
	if got := r.error(t); got.Kind != social.EINTERNAL || got.Message != "internal error" {
		t.Errorf("error %+v; want internal, a generic message", got)
	}
	if strings.Contains(string(r.Body), "secret") {
		t.Errorf("500 body leaks the panic: %s", r.Body)
	}
	logs := e.logs.String()
	if !regexp.MustCompile(`level=ERROR .*request_id=boom-1 .*status=500 .*secret internal detail`).MatchString(logs) {
		t.Errorf("log lacks the panic with its request id:\n%s", logs)
	}
	// The server goes on serving.
	e.do(t, request{method: "GET", path: "/healthz"}).wantStatus(t, 200)
	e.mustRegister(t, validUser("Still", "Working"))
}

// failingUsers is a UserStore whose reads fail with an error that is not a
// social.Error, as a bug in a store would.
type failingUsers struct{ social.UserStore }

func (failingUsers) User(context.Context, string) (social.User, error) {
	return social.User{}, errors.New("relation users: password=hunter2")
}

func TestUnclassifiedErrorIs500(t *testing.T) {
	e := mustEnvWith(t, envOptions{wrap: func(d *httpapi.Deps) { d.Users = failingUsers{d.Users} }})
	r := e.do(t, request{method: "GET", path: "/user/get/" + missingID}).wantStatus(t, 500)
	if strings.Contains(string(r.Body), "hunter2") || r.error(t).Message != "internal error" {
		t.Errorf("500 body leaks the error: %s", r.Body)
	}
	if !strings.Contains(e.logs.String(), "hunter2") {
		t.Error("the log lacks the error behind the 500")
	}
}

func TestDatabaseDownIs503(t *testing.T) {
	node := pgtest.MustNode(t, "down", nil)
	e := mustEnvWith(t, envOptions{dsn: node.DSN("postgres")})
	id, token := e.mustUser(t, "Ivan", "Petrov")

	if err := node.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-node.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("postgres did not exit after SIGKILL")
	}
	requests := []request{
		{method: "GET", path: "/user/get/" + id},
		{method: "POST", path: "/user/register", body: validUser("A", "B")},
		{method: "POST", path: "/login", body: map[string]string{"id": id, "password": password}},
		{method: "GET", path: "/user/search?first_name=I&last_name=P"},
		{method: "POST", path: "/post/create", token: token, body: map[string]string{"text": "x"}},
		{method: "GET", path: "/post/feed", token: token},
		{method: "GET", path: "/dialog/" + missingID + "/list", token: token},
	}
	for _, req := range requests {
		t.Run(req.method+" "+req.path, func(t *testing.T) {
			r := e.do(t, req).wantStatus(t, 503)
			if got := r.error(t); got.Kind != social.EUNAVAILABLE {
				t.Errorf("error %+v; want code %s", got, social.EUNAVAILABLE)
			}
		})
	}
	// Liveness does not depend on the database.
	e.do(t, request{method: "GET", path: "/healthz"}).wantStatus(t, 200)

	// Once the database is back, so is the API.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := e.do(t, request{method: "GET", path: "/user/get/" + id})
		if r.Status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("API still answers %d 30 s after the database came back: %s", r.Status, r.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClientCatchesSpecDrift(t *testing.T) {
	e := mustEnv(t)
	hdr := func(kv ...string) http.Header {
		h := http.Header{"X-Request-Id": {"r1"}, "Content-Type": {"application/json"}}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	user := `{"id":"` + missingID + `","first_name":"A","second_name":"B","birthdate":"1990-01-01","biography":"","city":""}`
	tests := []struct {
		name, method, path string
		reply              reply
	}{
		{"extra field", "GET", "/user/get/" + missingID, reply{200, hdr(), []byte(user[:len(user)-1] + `,"age":3}`)}},
		{"missing field", "GET", "/user/get/" + missingID, reply{200, hdr(), []byte(`{"id":"` + missingID + `"}`)}},
		{"bad date", "GET", "/user/get/" + missingID, reply{200, hdr(), []byte(strings.Replace(user, "1990-01-01", "1990-1-1", 1))}},
		{"upper-case id", "GET", "/user/get/" + missingID, reply{200, hdr(), []byte(strings.Replace(user, "0195b1d2", "0195B1D2", 1))}},
		{"no request id", "GET", "/user/get/" + missingID, reply{200, http.Header{"Content-Type": {"application/json"}}, []byte(user)}},
		{"undocumented status", "GET", "/user/get/" + missingID, reply{418, hdr(), []byte(`{"message":"m","request_id":"r1","code":"internal"}`)}},
		{"invalid without fields", "GET", "/user/get/x", reply{400, hdr(), []byte(`{"message":"m","request_id":"r1","code":"invalid"}`)}},
		{"code of another status", "GET", "/user/get/x", reply{400, hdr(), []byte(`{"message":"m","request_id":"r1","code":"not_found","fields":{}}`)}},
		{"request id mismatch", "GET", "/user/get/x", reply{400, hdr(), []byte(`{"message":"m","request_id":"r2","code":"invalid","fields":{}}`)}},
		{"body on an empty answer", "PUT", "/friend/set/" + missingID, reply{200, hdr(), []byte(`{}`)}},
		{"503 without Retry-After", "GET", "/user/get/" + missingID, reply{503, hdr(), []byte(`{"message":"m","request_id":"r1","code":"unavailable"}`)}},
		{"text error", "GET", "/nope", reply{404, hdr("Content-Type", "text/plain"), []byte("404 page not found")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			hr, _ := http.NewRequest(tt.method, e.base+tt.path, nil)
			e.check(rec, hr, tt.reply)
			if len(rec.errs) == 0 {
				t.Errorf("check accepted a wrong %s", tt.name)
			}
		})
	}
	// And accepts a right one.
	rec := &recorder{TB: t}
	hr, _ := http.NewRequest("GET", e.base+"/user/get/"+missingID, nil)
	e.check(rec, hr, reply{200, hdr(), []byte(user)})
	if len(rec.errs) != 0 {
		t.Errorf("check refused a right response: %v", rec.errs)
	}
}

// recorder is a testing.TB that keeps errors instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
