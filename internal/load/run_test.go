package load_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
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
	cfg := load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 4, Duration: 1500 * time.Millisecond,
		Timeout: 2 * time.Second}
	res := MustRun(t, cfg)

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
	// The run sends until its duration is over and cuts what is still in
	// flight a timeout and a second later; the workers then return at once.
	// Its length has that bound, whatever the machine's speed, and its
	// seconds are those of the schedule: requests that finish after the last
	// one count in it.
	longest := (cfg.Duration + cfg.Timeout + 2*time.Second).Seconds()
	wantSeconds := int(math.Ceil(cfg.Duration.Seconds()))
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
	case len(res.Seconds) == 0 || len(res.Seconds) > wantSeconds:
		t.Errorf("%d seconds for a %v run, want 1 to %d", len(res.Seconds), cfg.Duration, wantSeconds)
	case res.Duration < cfg.Duration.Seconds() || res.Duration > longest:
		t.Errorf("duration %v s, want %v s to %v s", res.Duration, cfg.Duration.Seconds(), longest)
	case len(res.Ops) != 1 || res.Ops[0].Name != "healthz" || res.Ops[0].Requests != res.Requests:
		t.Errorf("ops %+v, want healthz with every request", res.Ops)
	case res.Mode != "closed" || res.Aborted != 0 || res.Unsent != 0 || res.Interrupted:
		t.Errorf("mode %s, aborted %d, unsent %d, interrupted %v", res.Mode, res.Aborted, res.Unsent, res.Interrupted)
	case res.Throughput <= 0 || res.Latency.Max <= 0 || res.Generator.CPUSeconds <= 0 || res.Generator.GOMAXPROCS < 1:
		t.Errorf("throughput %v, max latency %v, generator %+v", res.Throughput, res.Latency.Max, res.Generator)
	}
	for i, s := range res.Seconds {
		if s.T != i {
			t.Errorf("second %d is labelled %d", i, s.T)
		}
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

// stallServer answers at once, except that when its request number at
// arrives it stops answering for stall: that request and every request
// that reaches it before the stall ends wait for the end. The stall is set
// off by a count, not a time, so that it falls at the same point of a run
// however fast the machine is.
func stallServer(tb testing.TB, at int64, stall time.Duration) *httptest.Server {
	var (
		gate sync.RWMutex
		n    atomic.Int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == at {
			gate.Lock()
			time.Sleep(stall)
			gate.Unlock()
		}
		gate.RLock() // wait out a stall
		_, _ = w.Write([]byte("ok"))
		gate.RUnlock()
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// TestRunOpenLoopShowsStallThatClosedLoopHides: a server pause shows in the
// open loop's latency, which counts from each request's place in the
// schedule, and hides in the closed loop's, whose few connections wait with
// the server. The bounds follow from the schedule and the request counts, so
// a slow machine only makes the open loop's latencies larger:
//   - open loop, 400 req/s: every request due during the stall ends after
//     it, so a request due x into it waits at least stall - x. Half the
//     stall holds 200 of the 800 requests (25%): p90 is at least half the
//     stall; a fifth holds 80 (10%): p99 is at least 4/5 of it. At most the
//     16 requests in flight (2%) have a long service time.
//   - closed loop, 4 connections, 2000 requests: at most the 4 in flight
//     (0.2%) meet the stall, so p99 is an ordinary request.
func TestRunOpenLoopShowsStallThatClosedLoopHides(t *testing.T) {
	const stall = time.Second
	stallMs := float64(stall.Milliseconds())
	open := MustRun(t, load.Config{Target: stallServer(t, 200, stall).URL, Mix: mix("healthz"), Rate: 400, Connections: 16,
		Requests: 800})
	closed := MustRun(t, load.Config{Target: stallServer(t, 500, stall).URL, Mix: mix("healthz"), Connections: 4,
		Requests: 2000})
	t.Logf("open:   latency %+v service %+v requests %d", open.Latency, open.ServiceTime, open.Requests)
	t.Logf("closed: latency %+v requests %d", closed.Latency, closed.Requests)

	if open.Requests != 800 || open.Unsent != 0 || open.Errors != 0 || open.Aborted != 0 {
		t.Errorf("open loop: %d requests, %d errors, %d unsent, %d aborted; want all 800 of the schedule answered",
			open.Requests, open.Errors, open.Unsent, open.Aborted)
	}
	if open.Latency.Max < 0.95*stallMs || open.Latency.P99 < 0.8*stallMs || open.Latency.P90 < 0.5*stallMs {
		t.Errorf("open loop latency %+v: the %v stall does not show", open.Latency, stall)
	}
	if open.ServiceTime.P90 >= stallMs/2 {
		t.Errorf("open loop service time p90 %v ms: only the few requests in flight at the stall took long", open.ServiceTime.P90)
	}
	if closed.Requests != 2000 || closed.Errors != 0 {
		t.Errorf("closed loop: %d requests, %d errors; want 2000 answered", closed.Requests, closed.Errors)
	}
	// The closed loop waited with the server: four slow requests among many.
	if closed.Latency.Max < 0.95*stallMs {
		t.Errorf("closed loop max %v ms, want the %v stall", closed.Latency.Max, stall)
	}
	if closed.Latency.P99 >= stallMs/2 {
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
	const duration = time.Minute
	start := time.Now()
	res, err := load.Run(ctx, load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 2, Duration: duration})
	if err != nil {
		t.Fatal(err)
	}
	// Ended by the context, not by its minute: far sooner, whatever the
	// machine's load.
	if took := time.Since(start); !res.Interrupted || took > duration/2 || res.Requests == 0 {
		t.Errorf("interrupted %v after %v with %d requests; want a partial result well before the %v duration",
			res.Interrupted, took, res.Requests, duration)
	}
}

// TestRunWritesProgress: a plain progress line every ProgressEvery, each
// naming the second it reports, a multiple of the interval; on a terminal one
// line rewritten in place and ended once. How many intervals a run reaches
// depends on the machine only at the edges: a 2.1 s run reaches the first
// second by far, the second one maybe, a third only if it ran long.
func TestRunWritesProgress(t *testing.T) {
	srv, _ := countingServer(t)
	const every = time.Second
	cfg := load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 1, Duration: 2100 * time.Millisecond}
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		c := cfg
		c.Progress, c.ProgressEvery = &out, every
		res := MustRun(t, c)
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if out.Len() == 0 {
			lines = nil
		}
		if len(lines) == 0 || len(lines) > int(res.Duration/every.Seconds())+1 {
			t.Fatalf("%d progress lines in a %v s run every %v: %q", len(lines), res.Duration, every, out.String())
		}
		for i, line := range lines {
			f := strings.Fields(line)
			want := fmt.Sprintf("%ds", (i+1)*int(every/time.Second))
			if len(f) < 4 || f[0] != "load:" || f[1] != want || f[3] != "req/s" {
				t.Errorf("progress line %d %q: want \"load: %s <n> req/s ...\"", i, line, want)
			}
		}
	})
	t.Run("terminal", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		c := cfg
		c.Progress, c.ProgressTTY = &out, true
		res := MustRun(t, c)
		tty := out.String()
		if !strings.HasPrefix(tty, "\r") || !strings.HasSuffix(tty, "\n") || strings.Count(tty, "\n") != 1 ||
			strings.Count(tty, "\r") > int(res.Duration)+1 {
			t.Errorf("terminal progress %q in a %v s run: want a line rewritten in place each second, ended once", tty, res.Duration)
		}
	})
}
