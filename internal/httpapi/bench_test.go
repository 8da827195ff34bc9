package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"socnet/internal/httpapi"
)

// benchServe runs req against the handler directly (no network) b.N times
// and fails unless every answer has the status.
func benchServe(b *testing.B, e *env, status int, newReq func() *http.Request) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		e.handler.ServeHTTP(w, newReq())
		if w.Code != status {
			b.Fatalf("status %d; want %d: %s", w.Code, status, w.Body)
		}
	}
}

// BenchmarkHealthz measures the middleware alone: request id, metrics,
// recovery and JSON encoding.
func BenchmarkHealthz(b *testing.B) {
	e := mustEnv(b)
	benchServe(b, e, 200, func() *http.Request { return httptest.NewRequest("GET", "/healthz", nil) })
}

// BenchmarkRegisterRefused measures decoding and validating a body that is
// refused before any database work.
func BenchmarkRegisterRefused(b *testing.B) {
	e := mustEnv(b)
	body := `{"first_name":"Ivan","second_name":"Petrov","birthdate":"1990-02-30","biography":"` +
		strings.Repeat("b", 500) + `","city":"Moscow","password":"secret-pass"}`
	benchServe(b, e, 400, func() *http.Request {
		return httptest.NewRequest("POST", "/user/register", strings.NewReader(body))
	})
}

// servedAsServe configures the server as socnet serve does: a request
// deadline, and login limits that never refuse (so that every request pays
// for their bookkeeping and none is refused).
func servedAsServe(d *httpapi.Deps) {
	d.RequestTimeout = 10 * time.Second
	never := httpapi.RateLimit{Rate: 1e9, Burst: 1e9}
	d.Limits = httpapi.Limits{PerAddr: never, PerUser: never}
}

// BenchmarkUserGet is a profile read from PostgreSQL.
func BenchmarkUserGet(b *testing.B) {
	e := mustEnvWith(b, envOptions{wrap: servedAsServe})
	id := e.mustRegister(b, validUser("Ivan", "Petrov"))
	benchServe(b, e, 200, func() *http.Request { return httptest.NewRequest("GET", "/user/get/"+id, nil) })
}

// BenchmarkFeed is a bearer route: token verification and a feed query.
func BenchmarkFeed(b *testing.B) {
	e := mustEnv(b)
	_, token := e.mustUser(b, "Ivan", "Petrov")
	benchServe(b, e, 200, func() *http.Request {
		r := httptest.NewRequest("GET", "/post/feed", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		return r
	})
}

// BenchmarkLogin is a login at bcrypt's minimum cost: the password hash read
// from PostgreSQL, the limits, the hash comparison and a token.
func BenchmarkLogin(b *testing.B) {
	e := mustEnvWith(b, envOptions{wrap: servedAsServe})
	id := e.mustRegister(b, validUser("Ivan", "Petrov"))
	body := `{"id":"` + id + `","password":"` + password + `"}`
	benchServe(b, e, 200, func() *http.Request {
		return httptest.NewRequest("POST", "/login", strings.NewReader(body))
	})
}

// benchHTTP sends req to the test server over a keep-alive connection b.N
// times and fails unless every answer has the status: the whole request
// path of a real server, the network stack of one machine included.
func benchHTTP(b *testing.B, e *env, status int, method, path, body string) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, e.base+path, rd)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status {
			b.Fatalf("status %d; want %d", resp.StatusCode, status)
		}
	}
}

// BenchmarkHTTPUserGet is GET /user/get/{id} over HTTP.
func BenchmarkHTTPUserGet(b *testing.B) {
	e := mustEnvWith(b, envOptions{wrap: servedAsServe})
	id := e.mustRegister(b, validUser("Ivan", "Petrov"))
	benchHTTP(b, e, 200, "GET", "/user/get/"+id, "")
}

// BenchmarkHTTPLogin is POST /login over HTTP, at bcrypt's minimum cost.
func BenchmarkHTTPLogin(b *testing.B) {
	e := mustEnvWith(b, envOptions{wrap: servedAsServe})
	id := e.mustRegister(b, validUser("Ivan", "Petrov"))
	benchHTTP(b, e, 200, "POST", "/login", `{"id":"`+id+`","password":"`+password+`"}`)
}
