package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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

// BenchmarkUserGet is a profile read from PostgreSQL.
func BenchmarkUserGet(b *testing.B) {
	e := mustEnv(b)
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
