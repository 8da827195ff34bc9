package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config describes one load run.
type Config struct {
	// Target is the base URL of the socnet API, e.g. http://127.0.0.1:8080.
	Target string
	// AllowRemote permits a target that is not a loopback address.
	AllowRemote bool
	// Mix is the workload: scenarios and their weights.
	Mix []MixPart
	// Connections is the number of concurrent requests in closed loop
	// (default 16) and the most requests in flight in open loop (default
	// rate/10, at least 32).
	Connections int
	// Rate, when positive, runs an open loop at this many requests per
	// second; latency then counts from each request's intended send time.
	Rate float64
	// Duration bounds the sending; in open loop it is the schedule's length.
	Duration time.Duration
	// Requests bounds the number of requests sent.
	Requests int64
	// Timeout bounds connecting and waiting for response headers (default 5 s).
	Timeout time.Duration
	// Label names the run in reports.
	Label string
	// Data holds the users and sessions the workload needs (see Prepare).
	Data *Dataset
	// Nodes are the PostgreSQL nodes to sample while the load runs.
	Nodes []Node
	// Database restricts node statistics to one database; empty: all.
	Database string
	// SampleEvery is the node sampling interval (default 1 s).
	SampleEvery time.Duration
	// Progress receives a live progress line; nil for none. ProgressTTY
	// rewrites one line in place every second; otherwise a line is written
	// every ProgressEvery (default 5 s).
	Progress      io.Writer
	ProgressTTY   bool
	ProgressEvery time.Duration
	// Log receives notes about the run; nil discards them.
	Log *slog.Logger
}

// Limits on a run's configuration.
const (
	MaxConnections = 10000
	MaxRate        = 1_000_000
	MaxDuration    = 24 * time.Hour
	MaxTimeout     = 60 * time.Second
)

func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.Rate < 0 || cfg.Rate > MaxRate || math.IsNaN(cfg.Rate):
		return cfg, fmt.Errorf("rate %v: want 0 (closed loop) to %d req/s", cfg.Rate, MaxRate)
	case cfg.Duration < 0 || cfg.Duration > MaxDuration:
		return cfg, fmt.Errorf("duration %v: want up to %v", cfg.Duration, MaxDuration)
	case cfg.Requests < 0:
		return cfg, fmt.Errorf("requests %d: want a positive count", cfg.Requests)
	case cfg.Duration == 0 && cfg.Requests == 0:
		return cfg, fmt.Errorf("give a duration or a request count to bound the run")
	case cfg.Connections < 0 || cfg.Connections > MaxConnections:
		return cfg, fmt.Errorf("connections %d: want 1 to %d", cfg.Connections, MaxConnections)
	case cfg.Timeout < 0 || cfg.Timeout > MaxTimeout:
		return cfg, fmt.Errorf("timeout %v: want up to %v", cfg.Timeout, MaxTimeout)
	}
	if cfg.Connections == 0 {
		cfg.Connections = 16
		if cfg.Rate > 0 {
			cfg.Connections = min(MaxConnections, max(32, int(cfg.Rate/10)))
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = time.Second
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 5 * time.Second
		if cfg.ProgressTTY {
			cfg.ProgressEvery = time.Second
		}
	}
	if cfg.Data == nil {
		cfg.Data = &Dataset{Source: "api"}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// checkLoopback refuses a target outside this machine unless allowed, so
// that a typo cannot aim load at a production host.
func checkLoopback(u *url.URL, allow bool) error {
	if allow {
		return nil
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("target %s is not a loopback address (allow it explicitly to load a remote host)", u.Host)
}

// Run sends the workload to cfg.Target until the duration or the request
// count is reached or ctx is done, sampling cfg.Nodes meanwhile, and returns
// the result. When ctx ends early the partial result is returned with
// Interrupted set.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	base, err := parseTarget(cfg.Target)
	if err != nil {
		return nil, err
	}
	if err := checkLoopback(base, cfg.AllowRemote); err != nil {
		return nil, err
	}
	wl, err := newWorkload(base, cfg.Mix, cfg.Data)
	if err != nil {
		return nil, err
	}
	tr := newTransport(cfg.Connections, cfg.Timeout)
	defer tr.CloseIdleConnections()

	lastSec := -1
	if cfg.Duration > 0 {
		lastSec = int(math.Ceil(cfg.Duration.Seconds())) - 1
	}
	rec := NewRecorder(OpNames(), min(cfg.Connections, 4*runtime.GOMAXPROCS(0)), lastSec)

	var smp *sampler
	if len(cfg.Nodes) > 0 {
		smp = newSampler(cfg.Nodes, cfg.Database, cfg.Log)
		smp.begin(ctx)
	}

	r := &runner{cfg: cfg, wl: wl, rec: rec, tr: tr}
	cpu0 := cpuTime()
	r.start = time.Now()
	if smp != nil {
		smp.run(ctx, r.start, cfg.SampleEvery)
	}
	genCPU := r.collect(ctx)
	r.load(ctx)
	elapsed := time.Since(r.start)
	cpuUsed := cpuTime() - cpu0
	perSecCPU := genCPU()
	var nodes []NodeResult
	if smp != nil {
		nodes = smp.finish(ctx)
	}
	return r.result(ctx, elapsed, cpuUsed, perSecCPU, nodes), nil
}

// runner is the state of one Run.
type runner struct {
	cfg   Config
	wl    *workload
	rec   *Recorder
	tr    *http.Transport
	start time.Time

	stop    atomic.Bool  // no more sends
	tickets atomic.Int64 // sends claimed
	sent    atomic.Int64 // sends made
	aborted atomic.Int64 // sends cut off by the stop
}

// interval is the time between two sends of the open-loop schedule.
func (r *runner) interval() float64 { return float64(time.Second) / r.cfg.Rate }

// load runs the workers until the run is over.
func (r *runner) load(ctx context.Context) {
	reqCtx, abort := context.WithCancel(ctx)
	defer abort()
	// Stop sending at the end of the schedule (plus, in open loop, time to
	// catch up on a backlog) and cut requests still running a timeout later.
	var stopAfter time.Duration
	if r.cfg.Duration > 0 {
		stopAfter = r.cfg.Duration
		if r.cfg.Rate > 0 {
			stopAfter += min(r.cfg.Timeout, 10*time.Second)
		}
	}
	guardDone := make(chan struct{})
	go func() {
		var stopC, abortC <-chan time.Time
		if stopAfter > 0 {
			t := time.NewTimer(time.Until(r.start.Add(stopAfter)))
			defer t.Stop()
			stopC = t.C
		}
		for {
			select {
			case <-guardDone:
				return
			case <-ctx.Done():
				r.stop.Store(true)
				return
			case <-stopC:
				r.stop.Store(true)
				stopC = nil
				t := time.NewTimer(r.cfg.Timeout + time.Second)
				defer t.Stop()
				abortC = t.C
			case <-abortC:
				abort()
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range r.cfg.Connections {
		w := newWorker(reqCtx, i, r)
		wg.Go(func() {
			if r.cfg.Rate > 0 {
				w.openLoop(reqCtx)
			} else {
				w.closedLoop(reqCtx)
			}
		})
	}
	wg.Wait()
	close(guardDone)
}

// collect flushes the recorder every second, notes the generator's CPU use
// and writes progress lines. The returned function stops it and returns the
// CPU use per second in percent of one core.
func (r *runner) collect(ctx context.Context) func() []float64 {
	done := make(chan struct{})
	finished := make(chan []float64)
	go func() {
		var perSec []float64
		var errs int64
		lastCPU := cpuTime()
		printed := false
		every := max(1, int(r.cfg.ProgressEvery/time.Second))
		t := time.NewTimer(time.Until(r.start.Add(time.Second + 10*time.Millisecond)))
		defer t.Stop()
		for next := 1; ; next++ {
			select {
			case <-done:
				if printed && r.cfg.ProgressTTY {
					fmt.Fprintln(r.cfg.Progress)
				}
				finished <- perSec
				return
			case <-t.C:
			}
			now := cpuTime()
			perSec = append(perSec, 100*(now-lastCPU).Seconds())
			lastCPU = now
			r.rec.Flush(next)
			s := r.rec.Second(next - 1)
			errs += s.Errors
			if r.cfg.Progress != nil && next%every == 0 {
				line := fmt.Sprintf("%4ds  %8.0f req/s  p99 %8.2f ms  errors %d", next, s.RPS, s.Latency.P99, errs)
				if r.cfg.ProgressTTY {
					fmt.Fprintf(r.cfg.Progress, "\r%s\x1b[K", line)
				} else {
					fmt.Fprintln(r.cfg.Progress, "load:", line)
				}
				printed = true
			}
			t.Reset(time.Until(r.start.Add(time.Duration(next+1)*time.Second + 10*time.Millisecond)))
		}
	}()
	return func() []float64 {
		close(done)
		return <-finished
	}
}

// result assembles the Result of the run.
func (r *runner) result(ctx context.Context, elapsed, cpuUsed time.Duration, perSecCPU []float64, nodes []NodeResult) *Result {
	tot := r.rec.Totals()
	secs := r.rec.Seconds()
	el := elapsed.Seconds()
	for i := range secs {
		if i < len(perSecCPU) {
			secs[i].GeneratorCPU = perSecCPU[i]
		}
	}
	if n := len(secs); n > 0 {
		// The last second lasts until the last response: it may be short or,
		// with stragglers folded into it, long.
		if w := el - float64(n-1); w > 0 && w != 1 {
			secs[n-1].RPS = float64(secs[n-1].Requests) / w
			if n-1 >= len(perSecCPU) {
				var before float64
				for _, c := range perSecCPU {
					before += c / 100
				}
				secs[n-1].GeneratorCPU = 100 * max(0, cpuUsed.Seconds()-before) / w
			}
		}
	}
	mode := "closed"
	if r.cfg.Rate > 0 {
		mode = "open"
	}
	res := &Result{
		Schema: SchemaVersion, Label: r.cfg.Label, Target: r.cfg.Target, Mix: r.cfg.Mix,
		Mode: mode, Connections: r.cfg.Connections, Rate: r.cfg.Rate, Data: r.cfg.Data.Source,
		StartedAt: r.start.UTC().Truncate(time.Millisecond), Duration: round3(el),
		Interrupted: ctx.Err() != nil,
		Requests:    tot.Requests, Successes: tot.Successes, Errors: tot.Errors,
		Aborted: r.aborted.Load(), Latency: tot.Latency, ServiceTime: tot.Service,
		StatusCodes: tot.StatusCodes, ErrorKinds: tot.ErrorKinds, Ops: tot.Ops, Seconds: secs,
		Generator: GeneratorResult{GOMAXPROCS: runtime.GOMAXPROCS(0), CPUSeconds: round3(cpuUsed.Seconds())},
		Nodes:     nodes,
	}
	if el > 0 {
		res.Throughput = round3(float64(tot.Requests) / el)
		res.Generator.CPUPercent = round3(100 * cpuUsed.Seconds() / el)
	}
	if r.cfg.Rate > 0 && !res.Interrupted {
		due := r.cfg.Requests
		if r.cfg.Duration > 0 {
			d := int64(math.Ceil(float64(r.cfg.Duration) / r.interval()))
			if due == 0 || d < due {
				due = d
			}
		}
		res.Unsent = max(0, due-r.sent.Load())
	}
	return res
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// cpuTime returns the user and system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// newTransport returns a transport for HTTP/1.1 keep-alive connections to
// one host: an idle connection per worker, no proxy, no compression.
func newTransport(conns int, timeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
		TLSHandshakeTimeout:   timeout,
		DisableCompression:    true,
	}
}

// workload is the data of every request, built once before the run so that
// the hot path only picks among prepared strings and bodies.
type workload struct {
	base           *url.URL
	table          opTable
	getPaths       []string
	searchQueries  []string
	registerBodies [][]byte
	postBodies     [][]byte
	sessions       []sessionData
}

type sessionData struct {
	auth      []string // Authorization header value
	sendPaths []string // dialog send paths to partners
	listPaths []string
}

func newWorkload(base *url.URL, mix []MixPart, ds *Dataset) (*workload, error) {
	t, err := newOpTable(mix)
	if err != nil {
		return nil, err
	}
	users, sessions := t.needs()
	if users && len(ds.Users) == 0 {
		return nil, fmt.Errorf("the workload reads users but the dataset has none")
	}
	if sessions && len(ds.Sessions) < 2 {
		return nil, fmt.Errorf("the workload needs at least 2 logged-in users, the dataset has %d", len(ds.Sessions))
	}
	wl := &workload{base: base, table: t}
	rng := rand.New(rand.NewPCG(1, 2)) // the same prefixes run after run
	for _, u := range ds.Users {
		wl.getPaths = append(wl.getPaths, base.Path+"/user/get/"+u.ID)
	}
	for i := 0; i < 4*len(ds.Users) && i < 10000; i++ {
		u := ds.Users[i%len(ds.Users)]
		wl.searchQueries = append(wl.searchQueries, "first_name="+url.QueryEscape(prefix(u.FirstName, 2+rng.IntN(3)))+
			"&last_name="+url.QueryEscape(prefix(u.SecondName, 2+rng.IntN(3))))
	}
	for i := range 256 {
		b := mustJSON(registerBody(firstNames[rng.IntN(len(firstNames))], secondNames[rng.IntN(len(secondNames))], i*37, SeedPassword))
		wl.registerBodies = append(wl.registerBodies, b)
	}
	for i := range 64 {
		wl.postBodies = append(wl.postBodies, mustJSON(map[string]string{"text": fmt.Sprintf("%s #%d", postTexts[i%len(postTexts)], i)}))
	}
	for i, s := range ds.Sessions {
		sd := sessionData{auth: []string{"Bearer " + s.Token}}
		for j := 1; j <= 3 && j < len(ds.Sessions); j++ {
			peer := ds.Sessions[(i+j)%len(ds.Sessions)].UserID
			sd.sendPaths = append(sd.sendPaths, base.Path+"/dialog/"+peer+"/send")
			sd.listPaths = append(sd.listPaths, base.Path+"/dialog/"+peer+"/list")
		}
		wl.sessions = append(wl.sessions, sd)
	}
	return wl, nil
}

// prefix returns the first n runes of s (all of s when shorter).
func prefix(s string, n int) string {
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// worker sends requests one at a time over its own keep-alive connection,
// reusing one prepared request per operation.
type worker struct {
	id    int
	r     *runner
	rng   *rand.Rand
	reqs  [numOps]*http.Request
	jsonH []string
}

func newWorker(ctx context.Context, id int, r *runner) *worker {
	w := &worker{id: id, r: r, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id))),
		jsonH: []string{"application/json"}}
	paths := [numOps]string{"/healthz", "/user/get/", "/user/search", "/user/register",
		"/post/create", "/post/feed", "/dialog/", "/dialog/", "/dialog/unread"}
	for op := range numOps {
		u := *r.wl.base
		u.Path = r.wl.base.Path + paths[op]
		method := http.MethodGet
		switch op {
		case OpUserRegister, OpPostCreate, OpDialogSend:
			method = http.MethodPost
		case OpPostFeed:
			u.RawQuery = "offset=0&limit=10"
		}
		w.reqs[op] = (&http.Request{Method: method, URL: &u, Header: http.Header{}, Host: u.Host,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	}
	return w
}

// closedLoop sends the next request as soon as the previous one is answered.
func (w *worker) closedLoop(ctx context.Context) {
	r := w.r
	for !r.stop.Load() {
		if r.cfg.Requests > 0 && r.tickets.Add(1) > r.cfg.Requests {
			return
		}
		if r.cfg.Duration > 0 && time.Since(r.start) >= r.cfg.Duration {
			return
		}
		t0 := time.Now()
		if !w.send(ctx, t0, t0) {
			return
		}
	}
}

// openLoop sends requests on the schedule start + i/rate, taking the next i
// in turn with the other workers. A request whose time has passed (the
// workers were all busy) goes at once, and its latency counts from its
// scheduled time: a stall shows in the latency of every request it delayed.
func (w *worker) openLoop(ctx context.Context) {
	r := w.r
	iv := r.interval()
	for !r.stop.Load() {
		i := r.tickets.Add(1) - 1
		if r.cfg.Requests > 0 && i >= r.cfg.Requests {
			return
		}
		off := time.Duration(float64(i) * iv)
		if r.cfg.Duration > 0 && off >= r.cfg.Duration {
			return
		}
		intended := r.start.Add(off)
		if d := time.Until(intended); d > 0 {
			time.Sleep(d)
		}
		if r.stop.Load() {
			return
		}
		if !w.send(ctx, intended, time.Now()) {
			return
		}
	}
}

// send makes one request and records it; false when the run was cut off.
func (w *worker) send(ctx context.Context, intended, t0 time.Time) bool {
	r := w.r
	op := r.wl.table.pick(w.rng.Uint64N(r.wl.table.total))
	r.sent.Add(1)
	status, err := w.do(op)
	t1 := time.Now()
	if err != nil && ctx.Err() != nil {
		r.aborted.Add(1)
		return false
	}
	r.rec.Record(w.id, Outcome{Op: int(op), At: t1.Sub(r.start), Latency: t1.Sub(intended),
		Service: t1.Sub(t0), Status: status, Kind: Classify(status, err)})
	return true
}

// do sends one request of op and reads the whole response.
func (w *worker) do(op Op) (int, error) {
	wl := w.r.wl
	req := w.reqs[op]
	switch op {
	case OpUserGet:
		req.URL.Path = wl.getPaths[w.rng.IntN(len(wl.getPaths))]
	case OpUserSearch:
		req.URL.RawQuery = wl.searchQueries[w.rng.IntN(len(wl.searchQueries))]
	case OpUserRegister:
		w.setBody(req, wl.registerBodies[w.rng.IntN(len(wl.registerBodies))])
	case OpPostCreate:
		req.Header["Authorization"] = wl.sessions[w.rng.IntN(len(wl.sessions))].auth
		w.setBody(req, wl.postBodies[w.rng.IntN(len(wl.postBodies))])
	case OpPostFeed, OpDialogUnread:
		req.Header["Authorization"] = wl.sessions[w.rng.IntN(len(wl.sessions))].auth
	case OpDialogSend:
		s := &wl.sessions[w.rng.IntN(len(wl.sessions))]
		req.Header["Authorization"] = s.auth
		req.URL.Path = s.sendPaths[w.rng.IntN(len(s.sendPaths))]
		w.setBody(req, wl.postBodies[w.rng.IntN(len(wl.postBodies))])
	case OpDialogList:
		s := &wl.sessions[w.rng.IntN(len(wl.sessions))]
		req.Header["Authorization"] = s.auth
		req.URL.Path = s.listPaths[w.rng.IntN(len(s.listPaths))]
	}
	resp, err := w.r.tr.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// setBody gives req a fresh reader of b: the transport may still hold the
// previous one after the response arrived.
func (w *worker) setBody(req *http.Request, b []byte) {
	req.Header["Content-Type"] = w.jsonH
	req.Body = io.NopCloser(bytes.NewReader(b))
	req.ContentLength = int64(len(b))
}
