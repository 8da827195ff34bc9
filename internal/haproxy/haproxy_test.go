package haproxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"socnet/internal/haproxy"
	"socnet/internal/netns"
	"socnet/internal/netns/netnstest"
	"socnet/internal/pgnode"
)

const backendPort = 8080

// TestMain lets the test binary be an HTTP backend inside a host: it answers
// /healthz with 200 and every other path with its own name.
func TestMain(m *testing.M) {
	switch os.Getenv("HAPROXY_TEST_ROLE") {
	case "backend":
		serveBackend(os.Getenv("HAPROXY_TEST_NAME"), os.Getenv("HAPROXY_TEST_ADDR"))
		return
	case "parent":
		// Start HAProxy, say its pid, and wait to be killed.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p, err := haproxy.Start(ctx, haproxy.Options{Dir: os.Getenv("HAPROXY_TEST_DIR"), Config: haproxy.Config{
			Bind:     os.Getenv("HAPROXY_TEST_ADDR"),
			Backends: []haproxy.Backend{{Name: "api-1", Addr: "127.0.0.1:9"}},
		}})
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(p.Pid())
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func serveBackend(name, addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ready")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })
	fmt.Println(http.Serve(l, mux))
	os.Exit(1)
}

// requireBinaries skips without haproxy, except under CI, where a missing
// binary fails the test.
func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		msg := "haproxy not found: install the Debian package haproxy"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

func TestRender(t *testing.T) {
	cfg := haproxy.Config{
		Bind:        "127.0.0.1:8080",
		Backends:    []haproxy.Backend{{Name: "api-1", Addr: "10.213.7.2:8080"}, {Name: "api-2", Addr: "10.213.7.3:8080"}},
		StatsSocket: "/tmp/x/haproxy.sock",
	}
	text, err := haproxy.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"    bind 127.0.0.1:8080\n",
		"    option httpchk GET /healthz\n",
		"    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n",
		"    server api-1 10.213.7.2:8080 check\n",
		"    server api-2 10.213.7.3:8080 check\n",
		"    stats socket /tmp/x/haproxy.sock mode 600 level user\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("configuration lacks %q:\n%s", want, text)
		}
	}
	// The only listener on the network is the frontend: no stats page.
	if strings.Count(text, "bind ") != 1 || strings.Contains(text, "stats uri") || strings.Contains(text, "stats enable") {
		t.Errorf("configuration listens on more than the frontend:\n%s", text)
	}
}

func TestRenderRefuses(t *testing.T) {
	ok := []haproxy.Backend{{Name: "api-1", Addr: "10.0.0.2:80"}}
	for name, c := range map[string]haproxy.Config{
		"no bind":             {Backends: ok},
		"bind by name":        {Bind: "localhost:80", Backends: ok},
		"bind port 0":         {Bind: "127.0.0.1:0", Backends: ok},
		"no backends":         {Bind: "127.0.0.1:80"},
		"backend name blank":  {Bind: "127.0.0.1:80", Backends: []haproxy.Backend{{Name: "api 1", Addr: "10.0.0.2:80"}}},
		"backend name line":   {Bind: "127.0.0.1:80", Backends: []haproxy.Backend{{Name: "a\nlisten x", Addr: "10.0.0.2:80"}}},
		"backend twice":       {Bind: "127.0.0.1:80", Backends: append(ok, ok...)},
		"backend addr":        {Bind: "127.0.0.1:80", Backends: []haproxy.Backend{{Name: "a", Addr: "10.0.0.2"}}},
		"socket with a blank": {Bind: "127.0.0.1:80", Backends: ok, StatsSocket: "/tmp/a b"},
		"user":                {Bind: "127.0.0.1:80", Backends: ok, User: "root\nstats"},
		"health path":         {Bind: "127.0.0.1:80", Backends: ok, HealthPath: "healthz"},
	} {
		if _, err := haproxy.Render(c); err == nil {
			t.Errorf("%s: rendered, want an error", name)
		}
	}
}

// TestStopsWithItsParent SIGKILLs a process that started HAProxy: the
// kernel's parent-death signal must stop HAProxy too.
func TestStopsWithItsParent(t *testing.T) {
	requireBinaries(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(self)
	parent.Env = append(os.Environ(), "HAPROXY_TEST_ROLE=parent", "HAPROXY_TEST_DIR="+t.TempDir(),
		fmt.Sprintf("HAPROXY_TEST_ADDR=127.0.0.1:%d", port))
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	parent.Stderr = os.Stderr
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		parent.Process.Kill()
		parent.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	var pid int
	if _, serr := fmt.Sscan(line, &pid); serr != nil || pid <= 0 {
		t.Fatalf("parent: %q, %v", line, err)
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("haproxy %d still runs 30 s after its parent was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i >= 0 && i+2 < len(data) && data[i+2] != 'Z'
}

// startBackend runs the test binary as an HTTP backend inside host.
func startBackend(t *testing.T, n *netns.Net, host string) string {
	t.Helper()
	a, _ := n.Addr(host)
	addr := netip.AddrPortFrom(a, backendPort).String()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.Command(context.Background(), host, self)
	cmd.Env = append(os.Environ(), "HAPROXY_TEST_ROLE=backend", "HAPROXY_TEST_NAME="+host, "HAPROXY_TEST_ADDR="+addr)
	netnstest.StartReady(t, cmd)
	return addr
}

// result is one request through the proxy.
type result struct {
	start, end time.Time
	backend    string // the body: the backend's name
	err        error
}

// loader sends requests through the proxy from two clients until stopped.
type loader struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []result
	once    sync.Once
}

func startLoad(t *testing.T, url string) *loader {
	l := &loader{stop: make(chan struct{})}
	for range 2 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				r := result{start: time.Now()}
				resp, err := client.Get(url)
				if err == nil {
					body, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case rerr != nil:
						err = rerr
					case resp.StatusCode != http.StatusOK:
						err = fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
					}
					r.backend = string(body)
				}
				r.end, r.err = time.Now(), err
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond) // bounded load on a shared machine
			}
		}()
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// Stop stops the clients and returns every result.
func (l *loader) Stop() []result {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.snapshot()
}

func (l *loader) snapshot() []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]result(nil), l.results...)
}

// waitServed waits until every named backend has served a request started
// at or after since; it fails after a generous 30 s.
func (l *loader) waitServed(t *testing.T, since time.Time, names ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		served := map[string]int{}
		for _, r := range l.snapshot() {
			if r.err == nil && !r.start.Before(since) {
				served[r.backend]++
			}
		}
		missing := 0
		for _, n := range names {
			if served[n] == 0 {
				missing++
			}
		}
		if missing == 0 {
			t.Logf("served: %v", served)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every one of %v served within 30 s: %v", names, served)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBalanceAndCut puts two backends on two hosts behind a real HAProxy in
// the machine's own namespace, checks that both serve, cuts one off and
// checks that once HAProxy has marked it down no request fails, then heals
// it and checks that it serves again.
func TestBalanceAndCut(t *testing.T) {
	requireBinaries(t)
	ctx := context.Background()
	if err := netns.Check(ctx); err != nil {
		t.Skip(err)
	}
	n := netnstest.Up(t, t.TempDir(), "api-1", "api-2")
	var backends []haproxy.Backend
	for _, h := range n.Hosts() {
		backends = append(backends, haproxy.Backend{Name: h, Addr: startBackend(t, n, h)})
	}
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	bind := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := haproxy.Config{Bind: bind, Backends: backends}
	if u, err := user.Lookup("haproxy"); err == nil && os.Geteuid() == 0 {
		cfg.User = u.Username
	}
	dir := t.TempDir()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := haproxy.Start(startCtx, haproxy.Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(5 * time.Second); err != nil {
			t.Error(err)
		}
		if data, err := os.ReadFile(p.LogPath()); err == nil && t.Failed() {
			t.Logf("haproxy log:\n%s", data)
		}
	})
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitStates(waitCtx, "UP", "api-1", "api-2"); err != nil {
		t.Fatal(err)
	}

	l := startLoad(t, "http://"+bind+"/")
	l.waitServed(t, time.Now(), "api-1", "api-2")

	cutAt := time.Now()
	if err := n.Cut(ctx, "api-2"); err != nil {
		t.Fatal(err)
	}
	downCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitStates(downCtx, "DOWN", "api-2"); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	time.Sleep(3 * time.Second) // load on the remaining server only
	results := l.Stop()

	var between, after, afterOK int
	var firstErrs []string
	for _, r := range results {
		switch {
		case r.start.Before(cutAt):
		case r.start.Before(downAt):
			if r.err != nil {
				between++
			}
		default:
			after++
			if r.err != nil {
				if len(firstErrs) < 5 {
					firstErrs = append(firstErrs, r.err.Error())
				}
				continue
			}
			afterOK++
			if r.backend != "api-1" {
				t.Errorf("request at %v served by %q after api-2 was marked down", r.start.Sub(cutAt), r.backend)
			}
		}
	}
	t.Logf("cut to marked down: %v, %d requests failed in between; %d requests after, %d ok",
		downAt.Sub(cutAt).Round(time.Millisecond), between, after, afterOK)
	if after == 0 {
		t.Fatal("no request after api-2 was marked down")
	}
	if afterOK != after {
		t.Errorf("%d of %d requests failed after api-2 was marked down: %v", after-afterOK, after, firstErrs)
	}

	if err := n.Heal(ctx, "api-2"); err != nil {
		t.Fatal(err)
	}
	upCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitStates(upCtx, "UP", "api-2"); err != nil {
		t.Fatal(err)
	}
	l2 := startLoad(t, "http://"+bind+"/")
	l2.waitServed(t, time.Now(), "api-1", "api-2")
	if res := l2.Stop(); len(res) == 0 {
		t.Error("no request after the heal")
	}
}
