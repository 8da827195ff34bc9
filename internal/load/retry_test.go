package load_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"socnet/internal/load"
)

// TestPrepareWaitsOutRateLimits: the API answers logins and registrations
// beyond its per-address limit with 429 and Retry-After; setup waits as asked
// and goes on instead of failing.
func TestPrepareWaitsOutRateLimits(t *testing.T) {
	api := MustFakeAPI(t)
	var limited atomic.Int64
	inner := api.Config.Handler
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.URL.Path == "/login" || r.URL.Path == "/user/register") && limited.Add(1) <= 3 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"message":"too many attempts","code":4290}`))
			return
		}
		inner.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ds, err := load.Prepare(ctx, load.PrepareConfig{Target: api.URL, Sessions: 2, NeedUsers: true, NeedSessions: true})
	if err != nil {
		t.Fatalf("prepare behind a rate limit: %v", err)
	}
	if len(ds.Sessions) != 2 {
		t.Fatalf("sessions: %d, want 2", len(ds.Sessions))
	}
	if got := limited.Load(); got < 4 {
		t.Fatalf("the limit answered %d requests; want the 3 refused ones retried", got)
	}
	if p := api.Problems(); len(p) > 0 {
		t.Fatalf("requests the API would refuse: %q", p)
	}
}
