package load_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"socnet/internal/load"
)

// countingServer answers /healthz, 503 to every 7th request and 404 to
// every 11th, and counts what it served.
func countingServer(tb testing.TB) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch i := n.Add(1); {
		case i%7 == 0:
			w.WriteHeader(http.StatusServiceUnavailable)
		case i%11 == 0:
			w.WriteHeader(http.StatusNotFound)
		}
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	tb.Cleanup(srv.Close)
	return srv, &n
}

func TestRunClosedLoopCountsAddUp(t *testing.T) {
	srv, served := countingServer(t)
	res := MustRun(t, load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 4, Duration: 1500 * time.Millisecond})

	var perSecond, byStatus, byKind int64
	for _, s := range res.Seconds {
		perSecond += s.Requests
	}
	for _, n := range res.StatusCodes {
		byStatus += n
	}
	for _, n := range res.ErrorKinds {
		byKind += n
	}
	switch {
	case res.Requests == 0:
		t.Fatal("no requests")
	case res.Requests != res.Successes+res.Errors:
		t.Errorf("requests %d != successes %d + errors %d", res.Requests, res.Successes, res.Errors)
	case res.Requests != served.Load():
		t.Errorf("requests %d, the server served %d", res.Requests, served.Load())
	case perSecond != res.Requests:
		t.Errorf("per-second requests add up to %d, want %d", perSecond, res.Requests)
	case byStatus != res.Requests:
		t.Errorf("status codes add up to %d, want %d", byStatus, res.Requests)
	case byKind != res.Errors:
		t.Errorf("error kinds add up to %d, want %d", byKind, res.Errors)
	case res.ErrorKinds["status"] != res.StatusCodes["503"]+res.StatusCodes["404"]:
		t.Errorf("status errors %d, want 503s %d + 404s %d", res.ErrorKinds["status"], res.StatusCodes["503"], res.StatusCodes["404"])
	case res.StatusCodes["503"] != served.Load()/7:
		t.Errorf("503s %d, want %d", res.StatusCodes["503"], served.Load()/7)
	case len(res.Seconds) != 2:
		t.Errorf("%d seconds for a 1.5 s run, want 2", len(res.Seconds))
	case res.Duration < 1.5 || res.Duration > 3:
		t.Errorf("duration %v s, want about 1.5", res.Duration)
	case len(res.Ops) != 1 || res.Ops[0].Name != "healthz" || res.Ops[0].Requests != res.Requests:
		t.Errorf("ops %+v, want healthz with every request", res.Ops)
	case res.Mode != "closed" || res.Aborted != 0 || res.Unsent != 0 || res.Interrupted:
		t.Errorf("mode %s, aborted %d, unsent %d, interrupted %v", res.Mode, res.Aborted, res.Unsent, res.Interrupted)
	case res.Throughput <= 0 || res.Latency.Max <= 0 || res.Generator.CPUSeconds <= 0 || res.Generator.GOMAXPROCS < 1:
		t.Errorf("throughput %v, max latency %v, generator %+v", res.Throughput, res.Latency.Max, res.Generator)
	}
}

func TestRunStopsAtRequestCount(t *testing.T) {
	tests := []struct {
		name string
		cfg  load.Config
	}{
		{"closed loop", load.Config{Connections: 8, Requests: 777}},
		{"open loop", load.Config{Rate: 2000, Requests: 300}},
		{"count before duration", load.Config{Connections: 2, Requests: 50, Duration: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, served := countingServer(t)
			cfg := tt.cfg
			cfg.Target, cfg.Mix = srv.URL, mix("healthz")
			res := MustRun(t, cfg)
			if res.Requests != cfg.Requests || served.Load() != cfg.Requests || res.Unsent != 0 {
				t.Errorf("requests %d, served %d, unsent %d; want %d", res.Requests, served.Load(), res.Unsent, cfg.Requests)
			}
		})
	}
}

// stallServer answers at once, except that once, half a second after its
// first request, it stalls for 500 ms, and every request waits for the
// stall to end: a pause of the whole server.
func stallServer(tb testing.TB) *httptest.Server {
	var (
		gate    sync.RWMutex
		first   atomic.Int64
		stalled atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		if now-first.Load() > int64(500*time.Millisecond) && stalled.CompareAndSwap(false, true) {
			gate.Lock()
			time.Sleep(500 * time.Millisecond)
			gate.Unlock()
		}
		gate.RLock() // wait out a stall
		_, _ = w.Write([]byte("ok"))
		gate.RUnlock()
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func TestRunOpenLoopShowsStallThatClosedLoopHides(t *testing.T) {
	open := MustRun(t, load.Config{Target: stallServer(t).URL, Mix: mix("healthz"), Rate: 400, Connections: 16,
		Duration: 2 * time.Second})
	closed := MustRun(t, load.Config{Target: stallServer(t).URL, Mix: mix("healthz"), Connections: 4,
		Duration: 2 * time.Second})
	t.Logf("open:   latency %+v service %+v requests %d", open.Latency, open.ServiceTime, open.Requests)
	t.Logf("closed: latency %+v requests %d", closed.Latency, closed.Requests)

	// About 200 of 800 requests were due during the stall; each waits from
	// its due time to the stall's end, 0 to 500 ms.
	if open.Latency.Max < 450 || open.Latency.P99 < 300 || open.Latency.P90 < 200 {
		t.Errorf("open loop latency %+v: the stall does not show", open.Latency)
	}
	if open.ServiceTime.P90 > 100 {
		t.Errorf("open loop service time p90 %v ms: only the few requests in flight at the stall took long", open.ServiceTime.P90)
	}
	if open.Requests < 790 || open.Requests > 800 || open.Unsent != 0 {
		t.Errorf("open loop sent %d, unsent %d; want 800 on schedule", open.Requests, open.Unsent)
	}
	// The closed loop waited with the server: four slow requests among many.
	if closed.Latency.Max < 450 {
		t.Errorf("closed loop max %v ms, want the stall", closed.Latency.Max)
	}
	if closed.Latency.P99 > 100 {
		t.Errorf("closed loop p99 %v ms: expected the stall to hide below p99", closed.Latency.P99)
	}
}

func TestRunClassifiesTransportErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	hangup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(hangup.Close)

	tests := []struct {
		name, target string
		kind         string
	}{
		{"nothing listens", "http://" + closedAddr, "refused"},
		{"no answer within the timeout", slow.URL, "timeout"},
		{"the server hangs up", hangup.URL, "reset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := MustRun(t, load.Config{Target: tt.target, Mix: mix("healthz"), Connections: 2, Requests: 6,
				Timeout: 200 * time.Millisecond})
			if res.Requests != 6 || res.Errors != 6 || res.ErrorKinds[tt.kind] != 6 || res.StatusCodes["none"] != 6 {
				t.Errorf("requests %d, errors %d, kinds %v, statuses %v; want 6 %s errors without a response",
					res.Requests, res.Errors, res.ErrorKinds, res.StatusCodes, tt.kind)
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	srv, served := countingServer(t)
	tests := []struct {
		name string
		cfg  load.Config
		want string
	}{
		{"no bound", load.Config{Target: srv.URL, Mix: mix("healthz")}, "duration or a request count"},
		{"negative rate", load.Config{Target: srv.URL, Mix: mix("healthz"), Rate: -1, Requests: 1}, "rate"},
		{"too many connections", load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 1e6, Requests: 1}, "connections"},
		{"not http", load.Config{Target: "ftp://127.0.0.1/", Mix: mix("healthz"), Requests: 1}, "want http"},
		{"remote target", load.Config{Target: "http://10.1.2.3:8080", Mix: mix("healthz"), Requests: 1}, "not a loopback"},
		{"empty workload", load.Config{Target: srv.URL, Requests: 1}, "empty workload"},
		{"users needed", load.Config{Target: srv.URL, Mix: mix("get"), Requests: 1}, "has none"},
		{"sessions needed", load.Config{Target: srv.URL, Mix: mix("dialog"), Requests: 1}, "logged-in users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load.Run(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	if served.Load() != 0 {
		t.Errorf("the server got %d requests from refused configurations", served.Load())
	}
}

func TestRunInterruptedByContext(t *testing.T) {
	srv, _ := countingServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := load.Run(ctx, load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 2, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || time.Since(start) > 5*time.Second || res.Requests == 0 {
		t.Errorf("interrupted %v after %v with %d requests; want a prompt, partial result", res.Interrupted, time.Since(start), res.Requests)
	}
}

func TestRunWritesProgress(t *testing.T) {
	srv, _ := countingServer(t)
	var plain, tty bytes.Buffer
	MustRun(t, load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 1, Duration: 2100 * time.Millisecond,
		Progress: &plain, ProgressEvery: time.Second})
	MustRun(t, load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 1, Duration: 1100 * time.Millisecond,
		Progress: &tty, ProgressTTY: true})
	if n := strings.Count(plain.String(), "load:"); n != 2 || !strings.Contains(plain.String(), "req/s") {
		t.Errorf("plain progress %q: want 2 lines", plain.String())
	}
	if !strings.HasPrefix(tty.String(), "\r") || !strings.HasSuffix(tty.String(), "\n") || strings.Count(tty.String(), "\n") != 1 {
		t.Errorf("terminal progress %q: want a line rewritten in place, ended once", tty.String())
	}
}
