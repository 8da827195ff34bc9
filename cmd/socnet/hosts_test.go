package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/drill"
	"socnet/internal/haproxy"
	"socnet/internal/netns"
	"socnet/internal/patroni"
	"socnet/internal/stack"
)

// requireHosts skips a test that needs network namespaces and HAProxy
// when the machine has neither, with the reason; under CI=true, which
// runs as root with both installed, it fails instead.
func requireHosts(t *testing.T) {
	t.Helper()
	fail := t.Skip
	if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
		fail = t.Fatal
	}
	if err := netns.Check(context.Background()); err != nil {
		fail(err)
	}
	for _, bin := range []string{"haproxy", "setpriv"} {
		if _, err := exec.LookPath(bin); err != nil {
			fail(bin + " not found: install the Debian packages haproxy and util-linux")
		}
	}
}

// startHostsUp runs `socnet up --hosts netns` as a process of its own
// (this test binary acting as socnet), so that it can be SIGKILLed, and
// waits until the API answers through HAProxy on apiAddr.
func startHostsUp(t *testing.T, home, apiAddr string, extra ...string) *upProcess {
	t.Helper()
	return runUp(t, apiAddr, 4*time.Minute, append([]string{"up", "--hosts", "netns", "--home", home, "--http", apiAddr,
		"--main-shared-buffers", "32MB"}, extra...)...)
}

// hostsLeft lists the namespaces and links of the machine named after home.
func hostsLeft(t *testing.T, home string) []string {
	t.Helper()
	n, err := netns.Plan(home, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nss, err := netns.Namespaces(ctx, n.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	links, err := netns.Links(ctx, n.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	return append(nss, links...)
}

// TestUpOnHosts runs the stack with every node and service on its own
// network host (one stack shared by the subtests): the API answers
// through HAProxy, status names every host, a post reaches every main
// node, HAProxy takes a cut API host out of rotation, a cut primary is
// failed over and rejoins as a replica once healed. Then `up` is
// SIGKILLed: the next one removes what it left and starts; stopped, it
// leaves no namespace or link behind.
func TestUpOnHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five PostgreSQL nodes on eleven network namespaces")
	}
	requireHosts(t)
	t.Setenv(beMainEnv, "1")
	getenv := warnLogs
	home := filepath.Join(t.TempDir(), "home")
	t.Cleanup(func() { _ = netns.Cleanup(context.Background(), home) })
	apiAddr := freeAddr(t)
	base := "http://" + apiAddr
	up := startHostsUp(t, home, apiAddr)
	ctx := context.Background()

	t.Run("status", func(t *testing.T) {
		doc := mustStatus(t, home, getenv)
		for _, c := range doc.Clusters {
			for _, n := range c.Nodes {
				if n.Netns == "" || n.Host == "" || n.Host == "127.0.0.1" || !strings.Contains(n.DSN, "@"+n.Host+":") {
					t.Errorf("node %s: netns %q, host %q, dsn %s: want its own host", n.Name, n.Netns, n.Host, n.DSN)
				}
			}
		}
		hosts := map[string]bool{}
		for _, name := range []string{"api-1", "api-2", "counter", "relay", "redis", "feed-worker"} {
			s, ok := doc.Service(name)
			if !ok || s.Netns == "" || s.Host == "" || !strings.HasPrefix(s.Addr, s.Host+":") || hosts[s.Host] {
				t.Errorf("service %s: %+v (found %v): want its own netns and host, listening there", name, s, ok)
			}
			hosts[s.Host] = true
		}
		if s, ok := doc.Service(stack.ProxyService); !ok || s.Addr != apiAddr || s.Netns != "" {
			t.Errorf("service haproxy: %+v (found %v): want it on %s in the machine's namespace", s, ok, apiAddr)
		}
		checkStatusDSNs(t, home, doc)
		checkNoWildcardListeners(t, home, doc, getenv)
	})

	t.Run("post on every main node", func(t *testing.T) {
		c := &client{t: t, base: base}
		id := c.register("Анна", "Ахматова", "pw-anna")
		tok := c.login(id, "pw-anna")
		var post string
		c.do("POST", "/post/create", tok, map[string]any{"text": "через HAProxy"}, 200, &post)
		doc := mustStatus(t, home, getenv)
		for _, n := range findCluster(t, doc, mainCluster).Nodes {
			dsn := strings.Replace(n.DSN, "/postgres?", "/"+mainDBName+"?", 1)
			waitFor(t, 30*time.Second, "the post on "+n.Name, func() bool {
				conn, err := pgx.Connect(ctx, dsn)
				if err != nil {
					return false
				}
				defer conn.Close(ctx)
				var found bool
				return conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM posts WHERE id = $1)", post).Scan(&found) == nil && found
			})
		}
	})

	t.Run("API host cut", func(t *testing.T) {
		n, err := netns.Attach(ctx, home)
		if err != nil {
			t.Fatal(err)
		}
		sock := stack.ProxySocket(stack.Home{Dir: home})
		states := func() map[string]string {
			s, _ := haproxy.ServerStates(ctx, sock)
			return s
		}
		waitFor(t, 30*time.Second, "api-1 and api-2 UP", func() bool {
			s := states()
			return s["api-1"] == "UP" && s["api-2"] == "UP"
		})
		client := &http.Client{Timeout: 10 * time.Second}
		get := func() bool {
			resp, err := client.Get(base + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}
		if err := n.Cut(ctx, "api-1"); err != nil {
			t.Fatal(err)
		}
		healed := false
		defer func() {
			if !healed {
				_ = n.Heal(ctx, "api-1")
			}
		}()
		cut := time.Now()
		errorsBefore, requests := 0, 0
		for states()["api-1"] != "DOWN" {
			if time.Since(cut) > time.Minute {
				t.Fatalf("HAProxy did not mark the cut api-1 down within a minute: %v", states())
			}
			requests++
			if !get() {
				errorsBefore++
			}
		}
		down := time.Since(cut)
		errorsAfter := 0
		for range 200 {
			if !get() {
				errorsAfter++
			}
		}
		t.Logf("api-1 cut: marked down after %v; %d of %d requests failed before, %d of 200 after",
			down.Round(time.Millisecond), errorsBefore, requests, errorsAfter)
		if errorsAfter != 0 {
			t.Errorf("%d of 200 requests through %s failed once HAProxy had marked the cut api-1 down", errorsAfter, apiAddr)
		}
		if err := n.Heal(ctx, "api-1"); err != nil {
			t.Fatal(err)
		}
		healed = true
		waitFor(t, 30*time.Second, "api-1 UP again after the heal", func() bool { return states()["api-1"] == "UP" })
	})

	t.Run("HAProxy killed", func(t *testing.T) {
		before, ok := mustStatus(t, home, getenv).Service(stack.ProxyService)
		if !ok {
			t.Fatal("no haproxy in status")
		}
		if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "haproxy started again and the API answering through it", func() bool {
			now, ok := mustStatus(t, home, getenv).Service(stack.ProxyService)
			if !ok || now.Pid == before.Pid || now.Restarts != before.Restarts+1 {
				return false
			}
			ok, _ = healthy(base)
			return ok
		})
	})

	t.Run("limits per client through HAProxy", func(t *testing.T) {
		// Behind HAProxy the API's peer is HAProxy; the limit on
		// registrations per client address must still count clients. One
		// client (127.0.0.2) exhausts its own; another (127.0.0.3) is not
		// affected.
		from := func(ip string) *http.Client {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
			return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
		}
		// Logins with made-up ids spend the address's tokens (each API
		// instance keeps its own bucket: 50 at once, then 5 a second).
		greedy := from("127.0.0.2")
		login := func(c *http.Client) int {
			body := fmt.Sprintf(`{"id":"00000000-0000-4000-8000-%012d","password":"wrong-password"}`, time.Now().UnixNano()%1_000_000_000_000)
			resp, err := c.Post(base+"/login", "application/json", strings.NewReader(body))
			if err != nil {
				return 0
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		limited := 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 40 { // 640 at most
					if login(greedy) == http.StatusTooManyRequests {
						mu.Lock()
						limited++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if limited == 0 {
			t.Fatal("640 logins from 127.0.0.2 through HAProxy: none limited (429)")
		}
		t.Logf("%d of 640 logins from 127.0.0.2 limited", limited)
		if _, why := registerFrom(from("127.0.0.3"), base, "Другой", "Клиент"); why != "" {
			t.Errorf("a registration from 127.0.0.3 right after 127.0.0.2 was limited: %s; want 200 (limits per client, not per HAProxy)", why)
		}
	})

	t.Run("primary host cut", func(t *testing.T) {
		n, err := netns.Attach(ctx, home)
		if err != nil {
			t.Fatal(err)
		}
		old := findCluster(t, mustStatus(t, home, getenv), mainCluster).Primary
		w := startTimedWriters(base, 4)
		defer w.stop()
		waitFor(t, 30*time.Second, "acknowledged writes", func() bool { return len(w.acked()) >= 10 })
		if err := n.Cut(ctx, old); err != nil {
			t.Fatal(err)
		}
		healed := false
		defer func() {
			if !healed {
				_ = n.Heal(ctx, old)
			}
		}()
		cut := time.Now()
		var primary string
		waitFor(t, 2*time.Minute, "a new primary of main", func() bool {
			primary = findCluster(t, mustStatus(t, home, getenv), mainCluster).Primary
			return primary != "" && primary != old
		})
		var back time.Duration
		waitFor(t, 2*time.Minute, "a write through the API started after the cut and acknowledged", func() bool {
			at, ok := w.firstAckedAfter(cut)
			back = at.Sub(cut)
			return ok
		})
		t.Logf("primary %s cut: %s primary; through the API the first write started after the cut was acknowledged %v after it; %d writes failed:%s",
			old, primary, back.Round(time.Millisecond), w.failed(), w.failuresAround(cut))
		if err := n.Heal(ctx, old); err != nil {
			t.Fatal(err)
		}
		healed = true
		waitFor(t, 3*time.Minute, old+" streaming as a replica", func() bool {
			for _, nd := range findCluster(t, mustStatus(t, home, getenv), mainCluster).Nodes {
				if nd.Name == old {
					return nd.Role == "replica" && !nd.NeedsRejoin && nd.ReplicationState == "streaming"
				}
			}
			return false
		})
		ids := w.stop()
		if len(ids) == 0 {
			t.Fatal("no write acknowledged")
		}
		doc := mustStatus(t, home, getenv)
		mc := findCluster(t, doc, mainCluster)
		if mc.Primary != primary {
			t.Errorf("primary after the heal is %s, want %s: two primaries, or a second failover", mc.Primary, primary)
		}
		for _, nd := range mc.Nodes {
			if nd.Name == mc.Primary {
				if missing := missingUsers(t, nd.DSN, ids); len(missing) > 0 {
					t.Errorf("%d of %d acknowledged users missing on the primary %s: %v", len(missing), len(ids), nd.Name, missing)
				}
			}
		}
	})

	t.Run("drill partition", func(t *testing.T) {
		dir := t.TempDir()
		for _, target := range []string{"primary", "api"} {
			var out, errOut syncBuffer
			report := filepath.Join(dir, target+".json")
			err := run(ctx, []string{"socnet", "drill", "partition", "--home", home, "--target", target,
				"--cut-after", "1500ms", "--cut-for", "3s", "--duration", "5s", "--writers", "2",
				"--json", report, "--html", filepath.Join(dir, target+".html")}, getenv, &out, &errOut)
			if err != nil {
				t.Fatalf("drill partition --target %s: %v\n%s\n%s", target, err, out.String(), errOut.String())
			}
			var rep struct {
				OK        bool  `json:"ok"`
				TotalLost int64 `json:"total_lost"`
				Runs      []struct {
					CutHost       string   `json:"cut_host"`
					UnavailableMS *float64 `json:"unavailable_ms"`
					Problems      []string `json:"problems"`
					Partition     *struct {
						Problems []string `json:"problems"`
					} `json:"partition"`
				} `json:"runs"`
			}
			mustReadJSON(t, report, &rep)
			if !rep.OK || rep.TotalLost != 0 || len(rep.Runs) != 1 || rep.Runs[0].UnavailableMS == nil {
				t.Fatalf("drill partition --target %s: ok=%v lost=%d runs=%+v\n%s", target, rep.OK, rep.TotalLost, rep.Runs, out.String())
			}
			r := rep.Runs[0]
			if target == "primary" && (r.Partition == nil || !strings.HasPrefix(r.CutHost, "main-")) {
				t.Errorf("drill partition --target primary: cut %q, partition verdict %v: want a main node judged", r.CutHost, r.Partition)
			}
			if target == "api" && r.CutHost != "api-1" {
				t.Errorf("drill partition --target api: cut %q, want api-1", r.CutHost)
			}
			t.Logf("drill partition --target %s: cut %s, write unavailability %.0f ms", target, r.CutHost, *r.UnavailableMS)
		}
		for _, target := range []string{"etcd", "primary+etcd-leader"} {
			var out, errOut syncBuffer
			err := run(ctx, []string{"socnet", "drill", "partition", "--home", home, "--target", target}, getenv, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), "etcd") || strings.Contains(err.Error(), "\n") {
				t.Errorf("drill partition --target %s under the socnet engine: %v, want a one-line refusal", target, err)
			}
		}
	})

	// SIGKILL: the namespaces stay; the next `up` removes them and starts.
	procs := homeProcesses(home)
	up.kill(t)
	if left := hostsLeft(t, home); len(left) == 0 {
		t.Fatal("no namespace left after the SIGKILL of up: nothing for the next up to remove")
	}
	waitFor(t, time.Minute, "the processes of the killed up gone", func() bool {
		for pid := range procs {
			if running(pid) {
				return false
			}
		}
		return true
	})
	t.Log("up SIGKILLed; starting it again")
	up2 := startHostsUp(t, home, apiAddr)
	c := &client{t: t, base: base}
	id := c.register("Марина", "Цветаева", "pw-marina")
	if id == "" {
		t.Fatal("no user id after the restart")
	}
	up2.stop(t)
	t.Log("up restarted after the SIGKILL, served, and stopped")
	// The stopped home's status names the nodes' hosts, not loopback.
	for _, cl := range mustStatus(t, home, getenv).Clusters {
		for _, n := range cl.Nodes {
			if n.Netns == "" || !strings.HasPrefix(n.Host, "10.213.") {
				t.Errorf("stopped home: node %s at host %q, netns %q; want its host's", n.Name, n.Host, n.Netns)
			}
		}
	}
	// An operator command on the stopped home cannot start its nodes on
	// loopback (they admit the hosts' network only): it says what to do.
	var out, errOut syncBuffer
	err := run(context.Background(), []string{"socnet", "cluster", "start", "--home", home, "counter"}, getenv, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--hosts netns") || strings.Contains(err.Error(), "\n") {
		t.Errorf("cluster start on a stopped hosts home: %v, want a one-line refusal naming --hosts netns", err)
	}
	if left := hostsLeft(t, home); len(left) > 0 {
		t.Errorf("after up stopped, these remain: %v", left)
	}
	if procs := homeProcesses(home); len(procs) > 0 {
		t.Errorf("after up stopped, these processes remain: %v", procs)
	}
}

// timedWriters register users through the API and keep, for each
// acknowledged one, when its request started.
type timedWriters struct {
	mu     sync.Mutex
	ids    []string
	starts []time.Time
	acks   []time.Time
	fails  int
	// failures are the failed writes: when, and the status or error.
	failures []failure
	done     chan struct{}
	wg       sync.WaitGroup
}

func startTimedWriters(base string, n int) *timedWriters {
	w := &timedWriters{done: make(chan struct{})}
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for j := 0; j < 5000; j++ { // bounded in count as well as by stop
				select {
				case <-w.done:
					return
				default:
				}
				start := time.Now()
				id, why := register(base, "Писатель", fmt.Sprintf("Хост%d-%d", i, j))
				ok := why == ""
				w.mu.Lock()
				if ok {
					w.ids = append(w.ids, id)
					w.starts = append(w.starts, start)
					w.acks = append(w.acks, time.Now())
				} else {
					w.fails++
					w.failures = append(w.failures, failure{start, time.Now(), why})
				}
				w.mu.Unlock()
				switch {
				case strings.HasPrefix(why, "HTTP 429"):
					time.Sleep(time.Second) // the limit per client address
				case !ok:
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	return w
}

func (w *timedWriters) acked() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ids)
}

func (w *timedWriters) failed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fails
}

// firstAckedAfter is when the first write that started after t was
// acknowledged.
func (w *timedWriters) firstAckedAfter(t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	for i, s := range w.starts {
		if s.After(t) && (first.IsZero() || w.acks[i].Before(first)) {
			first = w.acks[i]
		}
	}
	return first, !first.IsZero()
}

// stop stops the writers and returns every acknowledged id.
func (w *timedWriters) stop() []string {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
	return w.acked()
}

// TestUpOnHostsNeedsRoot checks that `up --hosts netns` without root fails
// in one line that says so, before it creates the home. As root, this test
// binary is copied where user nobody can run it and run as nobody.
func TestUpOnHostsNeedsRoot(t *testing.T) {
	dir, err := os.MkdirTemp("", "socnet-notroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	home := filepath.Join(dir, "home")
	args := []string{"up", "--hosts", "netns", "--home", home, "--http", "127.0.0.1:0"}
	var msg string
	if os.Geteuid() != 0 {
		var out syncBuffer
		err := run(context.Background(), append([]string{"socnet"}, args...), func(string) string { return "" }, &out, &out)
		if err == nil {
			t.Fatalf("up --hosts netns as uid %d started:\n%s", os.Geteuid(), out.String())
		}
		msg = err.Error()
	} else {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "socnet.test")
		data, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = []string{beMainEnv + "=1", "PATH=" + os.Getenv("PATH")}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("up --hosts netns as nobody succeeded: %s", out)
		}
		msg = strings.TrimSpace(string(out))
	}
	t.Logf("refused: %s", msg)
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "need root") {
		t.Errorf("up --hosts netns without root: %q, want one line saying root is needed", msg)
	}
	if _, err := os.Stat(home); err == nil {
		t.Errorf("up --hosts netns without root created %s", home)
	}
}

// TestUpOnHostsPatroni runs the stack under the Patroni engine with every
// node (and its agent) and each of three etcd members on its own host:
// status names every node's host and namespace, writes work, a cut
// primary is failed over to a replica on the majority side without losing
// an acknowledged write and rejoins once healed, and a cut etcd member
// changes nothing for the writers. Stopped, `up` leaves no namespace, link
// or process behind.
func TestUpOnHostsPatroni(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five PostgreSQL nodes, five Patroni agents and three etcd members on fourteen network namespaces")
	}
	requireHosts(t)
	for _, bin := range []string{"patroni", "etcd"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found: install the Debian packages patroni and etcd-server", bin)
			}
			t.Skipf("%s not found: install the Debian packages patroni and etcd-server", bin)
		}
	}
	t.Setenv(beMainEnv, "1")
	getenv := warnLogs
	home := filepath.Join(t.TempDir(), "home")
	t.Cleanup(func() { _ = netns.Cleanup(context.Background(), home) })
	apiAddr := freeAddr(t)
	up := startHostsUp(t, home, apiAddr, "--engine", "patroni")
	ctx := context.Background()

	doc := mustStatus(t, home, getenv)
	if doc.Engine != stack.EnginePatroni {
		t.Fatalf("status: engine %q, want %s", doc.Engine, stack.EnginePatroni)
	}
	for _, c := range doc.Clusters {
		for _, n := range c.Nodes {
			if n.Netns == "" || n.Host == "" || n.Host == "127.0.0.1" || !strings.Contains(n.DSN, "@"+n.Host+":") || n.AgentPid == nil {
				t.Errorf("node %s: netns %q, host %q, dsn %s, agent %v: want its own host and its agent", n.Name, n.Netns, n.Host, n.DSN, n.AgentPid)
			}
		}
	}
	checkStatusDSNs(t, home, doc)
	checkNoWildcardListeners(t, home, doc, getenv)
	c := &client{t: t, base: "http://" + apiAddr}
	if id := c.register("Осип", "Мандельштам", "pw-osip"); id == "" {
		t.Fatal("no user id from /user/register")
	}
	t.Run("etcd admits only the home's certificates", func(t *testing.T) {
		n, err := netns.Attach(ctx, home)
		if err != nil {
			t.Fatal(err)
		}
		etcdLeaderHost(t, home, n) // over https with the home's client certificate
		port, hc, _ := etcdClient(t, home)
		noCert := hc.Transport.(*http.Transport).Clone()
		noCert.TLSClientConfig.Certificates = nil
		defer noCert.CloseIdleConnections()
		for _, host := range []string{"etcd-1", "etcd-2", "etcd-3"} {
			addr, _ := n.Addr(host)
			base := net.JoinHostPort(addr.String(), strconv.Itoa(port))
			if resp, err := (&http.Client{Transport: noCert, Timeout: 5 * time.Second}).Get("https://" + base + "/health"); err == nil {
				resp.Body.Close()
				t.Errorf("%s answered a client without a certificate: status %d", host, resp.StatusCode)
			}
			if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + base + "/health"); err == nil && resp.StatusCode == http.StatusOK {
				resp.Body.Close()
				t.Errorf("%s answered plain http", host)
			}
		}
	})

	type partitionReport struct {
		OK        bool  `json:"ok"`
		TotalLost int64 `json:"total_lost"`
		Runs      []struct {
			CutHost       string   `json:"cut_host"`
			UnavailableMS *float64 `json:"unavailable_ms"`
			RejoinMS      *float64 `json:"rejoin_ms"`
			Problems      []string `json:"problems"`
			Events        []struct {
				Kind   string `json:"kind"`
				Detail string `json:"detail"`
			} `json:"events"`
		} `json:"runs"`
	}
	drillRun := func(t *testing.T, target, cutFor string) partitionReport {
		t.Helper()
		var out, errOut syncBuffer
		report := filepath.Join(t.TempDir(), target+".json")
		err := run(ctx, []string{"socnet", "drill", "partition", "--home", home, "--target", target,
			"--cut-after", "2s", "--cut-for", cutFor, "--writers", "4", "--json", report}, getenv, &out, &errOut)
		if err != nil {
			t.Fatalf("drill partition --target %s: %v\n%s\n%s", target, err, out.String(), errOut.String())
		}
		var rep partitionReport
		mustReadJSON(t, report, &rep)
		if !rep.OK || rep.TotalLost != 0 || len(rep.Runs) != 1 || rep.Runs[0].UnavailableMS == nil {
			t.Fatalf("drill partition --target %s: ok=%v lost=%d runs=%+v\n%s", target, rep.OK, rep.TotalLost, rep.Runs, out.String())
		}
		return rep
	}

	t.Run("primary cut", func(t *testing.T) {
		before := findCluster(t, mustStatus(t, home, getenv), mainCluster).Primary
		rep := drillRun(t, "primary", "15s")
		r := rep.Runs[0]
		if r.CutHost != before || r.RejoinMS == nil {
			t.Errorf("cut %q (primary before: %s), rejoin %v: want the primary cut and back as a replica", r.CutHost, before, r.RejoinMS)
		}
		after := findCluster(t, mustStatus(t, home, getenv), mainCluster).Primary
		if after == before || after == "" {
			t.Errorf("primary after the cut of %s: %q, want a replica of the majority side promoted", before, after)
		}
		t.Logf("primary %s cut for 15s: %s promoted, write unavailability %.0f ms, rejoined %.0f ms after the cut",
			before, after, *r.UnavailableMS, *r.RejoinMS)
	})

	t.Run("etcd member cut", func(t *testing.T) {
		before := findCluster(t, mustStatus(t, home, getenv), mainCluster)
		rep := drillRun(t, "etcd", "10s")
		r := rep.Runs[0]
		after := findCluster(t, mustStatus(t, home, getenv), mainCluster)
		if r.CutHost != "etcd-1" || after.Primary != before.Primary || len(after.Failovers) != len(before.Failovers) {
			t.Errorf("cut %q: primary %s -> %s, failovers %d -> %d: want etcd-1 cut and no failover",
				r.CutHost, before.Primary, after.Primary, len(before.Failovers), len(after.Failovers))
		}
		t.Logf("etcd-1 cut for 10s: write unavailability %.0f ms", *r.UnavailableMS)
	})

	t.Run("primary and etcd leader cut", func(t *testing.T) {
		n, err := netns.Attach(ctx, home)
		if err != nil {
			t.Fatal(err)
		}
		leader := etcdLeaderHost(t, home, n)
		before := findCluster(t, mustStatus(t, home, getenv), mainCluster).Primary
		rep := drillRun(t, "primary+etcd-leader", "15s")
		r := rep.Runs[0]
		after := findCluster(t, mustStatus(t, home, getenv), mainCluster).Primary
		if r.CutHost != before || after == before || after == "" {
			t.Fatalf("%s and the etcd leader %s cut: cut %q, primary %s -> %s: want a replica of the majority side promoted",
				before, leader, r.CutHost, before, after)
		}
		cutWith := false
		for _, ev := range r.Events {
			if ev.Kind == drill.EventCut && strings.HasSuffix(ev.Detail, "those of "+leader+", the etcd leader") {
				cutWith = true
			}
		}
		if !cutWith {
			t.Errorf("no cut event names the etcd leader %s: %+v", leader, r.Events)
		}
		t.Logf("primary %s and etcd leader %s cut for 15s: %s promoted, write unavailability %.0f ms", before, leader, after, *r.UnavailableMS)
	})

	procs := homeProcesses(home)
	up.stop(t)
	if left := hostsLeft(t, home); len(left) > 0 {
		t.Errorf("after up stopped, these remain: %v", left)
	}
	waitFor(t, time.Minute, "the stack's processes gone", func() bool {
		for pid := range procs {
			if running(pid) {
				return false
			}
		}
		return true
	})
}

// checkNoWildcardListeners checks that nothing on the stack's hosts listens
// on every address (0.0.0.0, ::), and that HAProxy listens on --http only.
func checkNoWildcardListeners(t *testing.T, home string, doc stack.Status, getenv func(string) string) {
	t.Helper()
	n, err := netns.Attach(context.Background(), home)
	if err != nil {
		t.Fatal(err)
	}
	wildcard := func(local string) bool {
		return strings.HasPrefix(local, "0.0.0.0:") || strings.HasPrefix(local, "*:") || strings.HasPrefix(local, "[::]:")
	}
	for _, h := range n.Hosts() {
		out, err := netns.Exec(context.Background(), n.Netns(h), "ss", "-Hltn").CombinedOutput()
		if err != nil {
			t.Fatalf("ss in %s: %v: %s", h, err, out)
		}
		listening := 0
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			listening++
			if wildcard(f[3]) {
				t.Errorf("host %s: a socket listens on %s", h, f[3])
			}
		}
		if listening == 0 {
			t.Errorf("host %s: nothing listens", h)
		}
	}
	// `up` restarts an HAProxy that exits; its record is back once the
	// new one answers.
	proxy, ok := doc.Service(stack.ProxyService)
	waitFor(t, 30*time.Second, "haproxy in status", func() bool {
		if !ok {
			proxy, ok = mustStatus(t, home, getenv).Service(stack.ProxyService)
		}
		return ok
	})
	out, err := exec.Command("ss", "-Hltnp").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	mark := fmt.Sprintf("pid=%d,", proxy.Pid)
	found := false
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.Contains(line, mark) {
			continue
		}
		found = true
		if f[3] != proxy.Addr {
			t.Errorf("haproxy listens on %s, want %s only", f[3], proxy.Addr)
		}
	}
	if !found {
		t.Errorf("haproxy (pid %d) listens nowhere:\n%s", proxy.Pid, out)
	}
}

// etcdLeaderHost is the host (etcd-N) of the Patroni engine's etcd leader;
// it waits out an election.
func etcdLeaderHost(t *testing.T, home string, n *netns.Net) string {
	t.Helper()
	leader, err := waitEtcdLeader(context.Background(), home, n, time.Minute)
	if err != nil {
		t.Fatalf("an etcd leader: %v", err)
	}
	return leader
}

// failure is a write the API did not acknowledge.
type failure struct {
	start, end time.Time
	why        string
}

// register registers a user through the API: its id, or why it failed
// (the status and body, or the error).
func register(base, first, second string) (string, string) {
	return registerFrom(&http.Client{Timeout: 30 * time.Second}, base, first, second)
}

// registerFrom is register with client.
func registerFrom(client *http.Client, base, first, second string) (string, string) {
	body := fmt.Sprintf(`{"first_name":%q,"second_name":%q,"birthdate":"1990-01-02","biography":"","city":"Москва","password":"secret-pw"}`, first, second)
	resp, err := client.Post(base+"/user/register", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err.Error()
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var r struct {
		UserID string `json:"user_id"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &r) != nil || r.UserID == "" {
		var e struct {
			Kind string `json:"kind"`
		}
		_ = json.Unmarshal(data, &e)
		return "", fmt.Sprintf("HTTP %d %s", resp.StatusCode, e.Kind)
	}
	return r.UserID, ""
}

// failuresAround summarises the failed writes relative to t: how many
// ended before and after it, and the distinct reasons with their first
// and last end, in seconds from t.
func (w *timedWriters) failuresAround(t time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	type span struct {
		n           int
		first, last float64
	}
	spans := map[string]*span{}
	var order []string
	for _, f := range w.failures {
		why := f.why
		if len(why) > 80 {
			why = why[:80]
		}
		at := f.end.Sub(t).Seconds()
		sp, ok := spans[why]
		if !ok {
			sp = &span{first: at}
			spans[why] = sp
			order = append(order, why)
		}
		sp.n++
		sp.last = at
	}
	var b strings.Builder
	for _, why := range order {
		sp := spans[why]
		fmt.Fprintf(&b, "\n  %d× %+.2fs..%+.2fs: %s", sp.n, sp.first, sp.last, why)
	}
	return b.String()
}

// etcdClient returns the client port of the Patroni engine's etcd members
// in home, and an HTTP client that presents the home's client certificate
// with the scheme to use (https; http for a home made before TLS).
func etcdClient(t *testing.T, home string) (port int, hc *http.Client, scheme string) {
	t.Helper()
	h, err := stack.NewHome(home)
	if err != nil {
		t.Fatal(err)
	}
	if port, err = patroni.EtcdClientPort(h); err != nil {
		t.Fatal(err)
	}
	if hc, scheme, err = patroni.EtcdHTTPClient(h); err != nil {
		t.Fatal(err)
	}
	return port, hc, scheme
}
