package counter_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/auth"
	"socnet/internal/counter"
)

// clock is a settable time for Signers and Verifiers.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// echo answers 200 with the body it read, so that a test sees what passed.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Write(body)
})

// signed returns a request signed with key at the signer's clock.
func signed(t *testing.T, key []byte, at *clock, method, target, body string) *http.Request {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if err := counter.NewSigner(key, at.now).Sign(req, []byte(body)); err != nil {
		t.Fatal(err)
	}
	return req
}

// serve runs req through v and returns the status and body.
func serve(v *counter.Verifier, req *http.Request) (int, string) {
	rec := httptest.NewRecorder()
	v.Wrap(echo).ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestVerifier(t *testing.T) {
	key, other := serviceKey, bytes.Repeat([]byte{7}, auth.KeyLen)
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		skew   time.Duration // signer's clock minus the verifier's
		req    func(t *testing.T, at *clock) *http.Request
		status int
		want   string // a substring of the answer
	}{
		{"valid", 0, func(t *testing.T, at *clock) *http.Request {
			return signed(t, key, at, "POST", "/events?x=1", `{"events":[]}`)
		}, 200, `{"events":[]}`},
		{"valid at the window's edges", 30 * time.Second, func(t *testing.T, at *clock) *http.Request {
			return signed(t, key, at, "GET", "/counters/u", "")
		}, 200, ""},
		{"valid just inside the window behind", -30 * time.Second, func(t *testing.T, at *clock) *http.Request {
			return signed(t, key, at, "GET", "/counters/u", "")
		}, 200, ""},
		{"unsigned", 0, func(t *testing.T, at *clock) *http.Request {
			return httptest.NewRequest("POST", "/events", strings.NewReader(`{}`))
		}, 401, `"code":"unauthorized","message":"the request is not signed with the service key"`},
		{"another key", 0, func(t *testing.T, at *clock) *http.Request {
			return signed(t, other, at, "POST", "/events", `{}`)
		}, 401, `bad service signature`},
		{"body changed", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "POST", "/events", `{"events":[]}`)
			req.Body = io.NopCloser(strings.NewReader(`{"events":[{}]}`))
			return req
		}, 401, `bad service signature`},
		{"path changed", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "GET", "/counters/a", "")
			req.RequestURI, req.URL.Path = "/counters/b", "/counters/b"
			return req
		}, 401, `bad service signature`},
		{"query changed", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "GET", "/counters/a?x=1", "")
			req.RequestURI = "/counters/a?x=2"
			return req
		}, 401, `bad service signature`},
		{"method changed", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "GET", "/events", "")
			req.Method = "POST"
			return req
		}, 401, `bad service signature`},
		{"timestamp changed", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "GET", "/events", "")
			req.Header.Set(counter.HeaderTimestamp, strconv.FormatInt(at.t.UnixMilli()+1, 10))
			return req
		}, 401, `bad service signature`},
		{"too old", -31 * time.Second, func(t *testing.T, at *clock) *http.Request {
			return signed(t, key, at, "GET", "/counters/u", "")
		}, 401, `signed 31s ago by this server's clock; at most 30s is accepted`},
		{"from the future", 31 * time.Second, func(t *testing.T, at *clock) *http.Request {
			return signed(t, key, at, "GET", "/counters/u", "")
		}, 401, `signed 31s ahead of this server's clock`},
		{"malformed timestamp", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "GET", "/counters/u", "")
			req.Header.Set(counter.HeaderTimestamp, "soon")
			return req
		}, 401, `malformed`},
		{"malformed nonce", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "GET", "/counters/u", "")
			req.Header.Set(counter.HeaderNonce, strings.Repeat("Z", 32))
			return req
		}, 401, `malformed`},
		{"short nonce", 0, func(t *testing.T, at *clock) *http.Request {
			req := signed(t, key, at, "GET", "/counters/u", "")
			req.Header.Set(counter.HeaderNonce, "abc")
			return req
		}, 401, `malformed`},
		{"body too large", 0, func(t *testing.T, at *clock) *http.Request {
			return signed(t, key, at, "POST", "/events", strings.Repeat("x", 5<<20))
		}, 413, `"code":"too_large"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := counter.NewVerifier(key, 30*time.Second, 0, (&clock{t0}).now)
			status, body := serve(v, tc.req(t, &clock{t0.Add(tc.skew)}))
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("answer %d %s\nwant %d with %s", status, body, tc.status, tc.want)
			}
		})
	}
}

// TestVerifierRefusesReplays: a request accepted once is refused when sent
// again, inside the window (remembered nonce) and after it (timestamp),
// and a full replay cache never lets a forgotten nonce through.
func TestVerifierRefusesReplays(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	now := &clock{t0}
	v := counter.NewVerifier(serviceKey, 30*time.Second, 3, now.now)
	var log []int
	send := func(req *http.Request) {
		// A copy per send: the same headers and body on the wire.
		body := `{"events":[]}`
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(strings.NewReader(body))
		status, _ := serve(v, r)
		log = append(log, status)
	}
	first := signed(t, serviceKey, now, "POST", "/events", `{"events":[]}`)
	send(first)                      // accepted
	send(first)                      // replayed at once
	now.t = t0.Add(29 * time.Second) // still in the window
	send(first)
	now.t = t0.Add(31 * time.Second) // out of the window, forgotten
	send(first)
	if diff := cmp.Diff([]int{200, 401, 401, 401}, log); diff != "" {
		t.Errorf("statuses of one request sent four times (-want +got):\n%s", diff)
	}

	// Capacity 3: a fourth fresh request forgets the oldest, and from then
	// on nothing signed at or before the forgotten one is accepted, so its
	// replay cannot pass.
	log = nil
	now.t = t0.Add(time.Minute)
	var reqs []*http.Request
	for i := range 4 {
		at := &clock{now.t.Add(time.Duration(i) * time.Millisecond)}
		reqs = append(reqs, signed(t, serviceKey, at, "POST", "/events", `{"events":[]}`))
	}
	lateButFresh := signed(t, serviceKey, &clock{now.t}, "POST", "/events", `{"events":[]}`) // same ms as reqs[0]
	for _, r := range reqs {
		send(r)
	}
	send(reqs[0])      // forgotten, but at the floor: refused
	send(lateButFresh) // new nonce, but signed no later than the floor
	send(reqs[3])      // still remembered
	next := signed(t, serviceKey, &clock{now.t.Add(time.Second)}, "POST", "/events", `{"events":[]}`)
	send(next)
	if diff := cmp.Diff([]int{200, 200, 200, 200, 401, 401, 401, 200}, log); diff != "" {
		t.Errorf("statuses with a full replay cache (-want +got):\n%s", diff)
	}
}

func TestLoadServiceKey(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "service.key")
	if _, err := auth.LoadOrCreateKey(good); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	got, err := counter.LoadServiceKey(good)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("LoadServiceKey(0600 file) = %x, %v; want the file's key", got, err)
	}

	missing := filepath.Join(dir, "missing.key")
	if _, err := counter.LoadServiceKey(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadServiceKey(missing) = %v, want not exist", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadServiceKey created %s: a service must never make its own key", missing)
	}

	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, want, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := counter.LoadServiceKey(open); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("LoadServiceKey(0644 file) = %v, want a refusal naming the mode", err)
	}
}
