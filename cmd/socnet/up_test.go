package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/cluster"
	"socnet/internal/pgnode"
	"socnet/internal/stack"
)

// warnLogs is the environment of an in-process `up` in tests: only its
// warnings and errors reach the test's log.
func warnLogs(k string) string {
	if k == "SOCNET_LOG_LEVEL" {
		return "warn"
	}
	return ""
}

// TestUpFailoverAndResume runs the whole local stack as `make run` does,
// walks the API, SIGKILLs the main primary, checks that the stack fails over
// by itself with the acknowledged user still there, then stops it and starts
// it again on the same home: the new roles are resumed.
func TestUpFailoverAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five PostgreSQL nodes")
	}
	t.Setenv(beMainEnv, "1")
	home := filepath.Join(t.TempDir(), "home")
	apiAddr := freeAddr(t)
	getenv := warnLogs

	stop := startUp(t, home, apiAddr, getenv)
	base := "http://" + apiAddr
	c := &client{t: t, base: base}
	alice := c.register("Осип", "Мандельштам", "pw-alice")

	doc := mustStatus(t, home, getenv)
	if doc.Engine != stack.EngineSocnet {
		t.Errorf("status engine %q, want %q", doc.Engine, stack.EngineSocnet)
	}
	for _, c := range doc.Clusters {
		for _, n := range c.Nodes {
			if n.AgentPid != nil {
				t.Errorf("%s: agent_pid %d under the socnet engine, want null", n.Name, *n.AgentPid)
			}
		}
	}
	if info, err := readStack(home); err != nil || info.Engine != stack.EngineSocnet {
		t.Errorf("stack.json engine %q, %v; want %q", info.Engine, err, stack.EngineSocnet)
	}
	main := findCluster(t, doc, mainCluster)
	if got := syncStates(main); got["sync"] != 1 || got["potential"] != 1 {
		t.Fatalf("main replicas' sync states = %v, want one sync and one potential", got)
	}
	running := map[string]bool{}
	for _, s := range doc.Services {
		running[s.Name] = stack.ProcessAlive(s.Pid)
	}
	if !running["api"] || !running["counter"] || !running["relay"] {
		t.Fatalf("services = %+v, want a live api, counter and relay", doc.Services)
	}
	oldPrimary := main.Primary
	var pid int
	for _, n := range main.Nodes {
		if n.Name == oldPrimary {
			pid = n.Pid
		}
	}
	// Writers register users through the API until the failover is over, so
	// that the last writes acknowledged before the SIGKILL are the
	// primary's newest commits, not rows long replicated.
	w := startWriters(base, 2)
	defer w.stop()
	waitFor(t, 60*time.Second, "writes acknowledged before the kill", func() bool { return len(w.acked()) >= 10 })
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill primary %s (pid %d): %v", oldPrimary, pid, err)
	}
	killed := time.Now()
	beforeKill := w.acked()
	// Writes come back on the new primary by themselves.
	var bob string
	waitFor(t, 20*time.Second, "a write after the failover", func() bool {
		id, ok := tryRegister(base, "Борис", "Пастернак")
		bob = id
		return ok
	})
	t.Logf("first acknowledged write %v after SIGKILL of %s", time.Since(killed).Round(time.Millisecond), oldPrimary)
	acked := w.stop()
	// Every acknowledged write, those of the last moments before the kill
	// included, is on the node that replaced the killed primary.
	replaced := findCluster(t, mustStatus(t, home, getenv), mainCluster)
	if replaced.Primary == oldPrimary {
		t.Fatalf("%s is still the primary after its SIGKILL and a write", oldPrimary)
	}
	var dsn string
	for _, n := range replaced.Nodes {
		if n.Name == replaced.Primary {
			dsn = n.DSN
		}
	}
	ids := append([]string{alice, bob}, acked...)
	// The check can see a loss: an id never written is reported.
	if never := "00000000-0000-4000-8000-000000000000"; !slices.Equal(missingUsers(t, dsn, append(ids, never)), []string{never}) {
		t.Fatalf("the survival check does not report a user that was never written")
	}
	if missing := missingUsers(t, dsn, ids); len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged users (%d acknowledged before the kill) are not on %s, which replaced %s: %v",
			len(missing), len(ids), len(beforeKill), replaced.Primary, oldPrimary, missing)
	}
	t.Logf("%d acknowledged users on %s, %d of them acknowledged before the SIGKILL of %s",
		len(ids), replaced.Primary, len(beforeKill), oldPrimary)
	c.do("GET", "/user/get/"+alice, "", nil, 200, nil)
	var newPrimary string
	waitFor(t, 60*time.Second, "the old primary back as a replica", func() bool {
		m := findCluster(t, mustStatus(t, home, getenv), mainCluster)
		newPrimary = m.Primary
		for _, n := range m.Nodes {
			if n.Name == oldPrimary && n.Role == "replica" && n.SyncState != "" {
				return newPrimary != oldPrimary
			}
		}
		return false
	})
	stop()

	// A second `up` on the same home resumes the roles after the failover.
	stop = startUp(t, home, apiAddr, getenv)
	defer stop()
	m := findCluster(t, mustStatus(t, home, getenv), mainCluster)
	if m.Primary != newPrimary {
		t.Fatalf("after restart the primary is %s, want %s (the one after the failover)", m.Primary, newPrimary)
	}
	c.do("GET", "/user/get/"+alice, "", nil, 200, nil)
	c.do("GET", "/user/get/"+bob, "", nil, 200, nil)

	// The unread counter follows the dialogs through the outbox.
	aliceToken, bobToken := c.login(alice, "pw-alice"), c.login(bob, "secret-pw")
	for range 3 {
		c.do("POST", "/dialog/"+alice+"/send", bobToken, map[string]any{"text": "привет"}, 200, nil)
	}
	waitFor(t, 10*time.Second, "3 unread messages for alice", func() bool {
		var u struct {
			Total int `json:"total"`
		}
		c.do("GET", "/dialog/unread", aliceToken, nil, 200, &u)
		return u.Total == 3
	})
	c.do("PUT", "/dialog/"+bob+"/read", aliceToken, nil, 200, nil)
	var u struct {
		Total int `json:"total"`
	}
	c.do("GET", "/dialog/unread", aliceToken, nil, 200, &u)
	if u.Total != 0 {
		t.Fatalf("unread after reading = %d, want 0", u.Total)
	}
}

// writers register users through an API in a loop and keep the ids of the
// acknowledged registrations.
type writers struct {
	mu   sync.Mutex
	ids  []string
	done chan struct{}
	wg   sync.WaitGroup
}

func startWriters(base string, n int) *writers {
	w := &writers{done: make(chan struct{})}
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			// Bounded in count as well as by stop.
			for j := 0; j < 5000; j++ {
				select {
				case <-w.done:
					return
				default:
				}
				if id, ok := tryRegister(base, "Писатель", fmt.Sprintf("Номер%d-%d", i, j)); ok {
					w.mu.Lock()
					w.ids = append(w.ids, id)
					w.mu.Unlock()
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	return w
}

// acked returns the ids acknowledged so far.
func (w *writers) acked() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.ids...)
}

// stop stops the writers and returns every acknowledged id. It may be
// called again.
func (w *writers) stop() []string {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
	return w.acked()
}

// missingUsers returns the ids that the social database behind the
// administrator DSN dsn (of its postgres database) does not hold.
func missingUsers(t *testing.T, dsn string, ids []string) []string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + mainDBName
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("connect to %s: %v", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id::text FROM unnest($1::uuid[]) AS want(id) WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = want.id)", ids)
	if err != nil {
		t.Fatal(err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return missing
}

// startUp runs `socnet up` until the returned stop is called, and waits until
// the API is healthy.
func startUp(t *testing.T, home, apiAddr string, getenv func(string) string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"socnet", "up", "--home", home, "--http", apiAddr, "--main-shared-buffers", "32MB"},
			getenv, &out, &out)
	}()
	deadline := time.After(3 * time.Minute)
	for {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("up returned early: %v\n%s", err, out.String())
		case <-deadline:
			cancel()
			t.Fatalf("up not ready after 3m:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if ok, _ := healthy("http://" + apiAddr); ok {
			break
		}
	}
	checkCalledServicesUp(t, home)
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("up: %v\n%s", err, out.String())
			}
		case <-time.After(90 * time.Second):
			t.Errorf("up did not stop within 90s:\n%s", out.String())
		}
	}
}

// checkCalledServicesUp checks, at the API's first healthy answer, that the
// services the API calls (counter, Redis) answer too: `up` starts the API
// only after them, so that a caller polling the API gets a working stack.
func checkCalledServicesUp(t *testing.T, home string) {
	t.Helper()
	p := readPortsFile(t, home)
	for _, s := range []struct{ name, addr string }{{"counter", p.Counter}, {"redis", p.RedisHealth}} {
		if ok, err := healthy("http://" + s.addr); !ok {
			t.Fatalf("the API of %s answers, but its %s on %s does not (%v): up started the API first", home, s.name, s.addr, err)
		}
	}
}

func mustStatus(t *testing.T, home string, getenv func(string) string) stack.Status {
	t.Helper()
	var out, errOut syncBuffer
	if err := run(context.Background(), []string{"socnet", "status", "--home", home, "--json"}, getenv, &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	var doc stack.Status
	if err := json.Unmarshal([]byte(out.String()), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	return doc
}

func findCluster(t *testing.T, doc stack.Status, name string) clusterStatus {
	t.Helper()
	for _, c := range doc.Clusters {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cluster %q in status", name)
	return clusterStatus{}
}

func syncStates(c clusterStatus) map[string]int {
	got := map[string]int{}
	for _, n := range c.Nodes {
		if n.Role == "replica" {
			got[n.SyncState]++
		}
	}
	return got
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type clusterStatus = cluster.Status

func healthy(base string) (bool, error) {
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// tryRegister registers a user and reports whether the API acknowledged it.
func tryRegister(base, first, second string) (string, bool) {
	body := fmt.Sprintf(`{"first_name":%q,"second_name":%q,"birthdate":"1990-01-02","biography":"","city":"Москва","password":"secret-pw"}`, first, second)
	resp, err := http.Post(base+"/user/register", "application/json", strings.NewReader(body))
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var r struct {
		UserID string `json:"user_id"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&r) != nil {
		return "", false
	}
	return r.UserID, true
}

// TestDrillAndLoadOnStack runs a short failover drill and a short load
// against a real stack, through the commands as a user types them: the
// drill must judge its own run (PASS, zero lost) and the load must count
// every request and show where the reads landed.
func TestDrillAndLoadOnStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five PostgreSQL nodes")
	}
	t.Setenv(beMainEnv, "1")
	home := filepath.Join(t.TempDir(), "home")
	apiAddr := freeAddr(t)
	getenv := warnLogs
	stop := startUp(t, home, apiAddr, getenv)
	defer stop()
	dir := t.TempDir()

	var out, errOut syncBuffer
	report := filepath.Join(dir, "drill.json")
	err := run(context.Background(), []string{"socnet", "drill", "failover", "--home", home,
		"--duration", "4s", "--kill-after", "1500ms", "--writers", "4", "--json", report}, getenv, &out, &errOut)
	if err != nil {
		t.Fatalf("drill failover: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	var rep struct {
		OK        bool  `json:"ok"`
		TotalLost int64 `json:"total_lost"`
		Runs      []struct {
			UnavailableMS *float64 `json:"unavailable_ms"`
		} `json:"runs"`
	}
	mustReadJSON(t, report, &rep)
	if !rep.OK || rep.TotalLost != 0 || len(rep.Runs) != 1 || rep.Runs[0].UnavailableMS == nil {
		t.Fatalf("drill report: ok=%v lost=%d runs=%+v\n%s", rep.OK, rep.TotalLost, rep.Runs, out.String())
	}
	t.Logf("drill: write unavailability %.0f ms", *rep.Runs[0].UnavailableMS)

	out, errOut = syncBuffer{}, syncBuffer{}
	result := filepath.Join(dir, "load.json")
	err = run(context.Background(), []string{"socnet", "load", "--home", home, "--url", "http://" + apiAddr,
		"--mix", "get=50,search=50", "--connections", "8", "--duration", "3s", "--quiet", "--json", result,
		"--html", filepath.Join(dir, "load.html")}, getenv, &out, &errOut)
	if err != nil {
		t.Fatalf("load: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	var res struct {
		Requests  int64 `json:"requests"`
		Successes int64 `json:"successes"`
		Errors    int64 `json:"errors"`
		Nodes     []struct {
			Name    string `json:"name"`
			Cluster string `json:"cluster"`
			Role    string `json:"role"`
			Xacts   int64  `json:"xacts"`
		} `json:"nodes"`
	}
	mustReadJSON(t, result, &res)
	if res.Requests == 0 || res.Requests != res.Successes+res.Errors || res.Errors != 0 {
		t.Fatalf("load: requests %d, successes %d, errors %d", res.Requests, res.Successes, res.Errors)
	}
	// Reads go to the replicas: together they carried more transactions
	// than the primary.
	var onPrimary, onReplicas int64
	for _, n := range res.Nodes {
		switch {
		case n.Cluster != mainCluster:
		case n.Role == "primary":
			onPrimary += n.Xacts
		case n.Role == "replica":
			onReplicas += n.Xacts
		}
	}
	if onReplicas <= onPrimary {
		t.Fatalf("load: main replicas carried %d transactions, the primary %d; want the replicas to serve the reads\n%s",
			onReplicas, onPrimary, out.String())
	}
}

func mustReadJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestCounterDrillOnStack runs the failover drill on the counter cluster
// through the command as a user types it: dialog messages go through the API
// and the unread counter's saga while the counter primary is SIGKILLed. The
// drill must find every acknowledged message on every main node, and the
// counters exact: per sender equal to the unread messages, and a
// reconciliation without drift.
func TestCounterDrillOnStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five PostgreSQL nodes")
	}
	t.Setenv(beMainEnv, "1")
	home := filepath.Join(t.TempDir(), "home")
	getenv := warnLogs
	stop := startUp(t, home, freeAddr(t), getenv)
	defer stop()
	before := findCluster(t, mustStatus(t, home, getenv), counterCluster).Primary

	var out, errOut syncBuffer
	report := filepath.Join(t.TempDir(), "drill.json")
	err := run(context.Background(), []string{"socnet", "drill", "failover", "--home", home, "--cluster", "counter",
		"--duration", "5s", "--kill-after", "1500ms", "--writers", "4", "--json", report}, getenv, &out, &errOut)
	t.Logf("drill report:\n%s", out.String())
	if err != nil {
		t.Fatalf("drill failover --cluster counter: %v\n%s", err, errOut.String())
	}
	var rep struct {
		OK                bool  `json:"ok"`
		TotalLost         int64 `json:"total_lost"`
		TotalCounterDrift int   `json:"total_counter_drift"`
		Runs              []struct {
			VerifiedOn string `json:"verified_on"`
			OldPrimary string `json:"old_primary"`
			NewPrimary string `json:"new_primary"`
			Verdict    struct {
				Acknowledged int    `json:"acknowledged"`
				Lost         int    `json:"lost"`
				Reference    string `json:"reference"`
				Nodes        []struct {
					Node string `json:"node"`
					Rows int    `json:"rows"`
				} `json:"nodes"`
			} `json:"verdict"`
			Counters *struct {
				DialogsChecked int `json:"dialogs_checked"`
				Drift          int `json:"drift"`
				Dialogs        []struct {
					Counter int `json:"counter"`
					Unread  int `json:"unread"`
				} `json:"dialogs"`
				Reconcile *struct {
					Compared int `json:"compared"`
					Drift    int `json:"drift"`
				} `json:"reconcile"`
				Reads *struct {
					Sent         int   `json:"sent"`
					Acknowledged int   `json:"acknowledged"`
					Lost         []any `json:"lost"`
				} `json:"reads"`
			} `json:"counters"`
		} `json:"runs"`
	}
	mustReadJSON(t, report, &rep)
	if !rep.OK || rep.TotalLost != 0 || rep.TotalCounterDrift != 0 || len(rep.Runs) != 1 {
		t.Fatalf("drill report: ok=%v lost=%d counter drift=%d runs=%d", rep.OK, rep.TotalLost, rep.TotalCounterDrift, len(rep.Runs))
	}
	r := rep.Runs[0]
	if r.OldPrimary != before || r.NewPrimary == "" || r.NewPrimary == before {
		t.Errorf("killed %q (the counter primary was %q), promoted %q", r.OldPrimary, before, r.NewPrimary)
	}
	if now := findCluster(t, mustStatus(t, home, getenv), counterCluster).Primary; now != r.NewPrimary {
		t.Errorf("counter primary after the drill is %s, the drill saw %s promoted", now, r.NewPrimary)
	}
	// The messages are verified where they live: on every main node.
	v := r.Verdict
	if r.VerifiedOn != mainCluster || v.Acknowledged == 0 || v.Lost != 0 || len(v.Nodes) != 3 {
		t.Fatalf("verified on %q: %d acknowledged, %d lost, %d nodes", r.VerifiedOn, v.Acknowledged, v.Lost, len(v.Nodes))
	}
	stored := -1
	for _, n := range v.Nodes {
		if !strings.HasPrefix(n.Node, mainCluster+"-") || n.Rows < v.Acknowledged {
			t.Errorf("node %s holds %d messages of the run, want a main node with at least the %d acknowledged", n.Node, n.Rows, v.Acknowledged)
		}
		if n.Node == v.Reference {
			stored = n.Rows
		}
	}
	// The recipient is new and marks its dialogs read now and then: the
	// counters count exactly the messages left unread, fewer than the run
	// stored, and every acknowledged read mark is on the counter primary.
	c := r.Counters
	if c == nil || c.DialogsChecked != 4 || c.Drift != 0 || c.Reconcile == nil || c.Reconcile.Drift != 0 || c.Reconcile.Compared < 4 {
		t.Fatalf("counters: %+v", c)
	}
	if c.Reads == nil || c.Reads.Acknowledged == 0 || len(c.Reads.Lost) != 0 {
		t.Fatalf("read marks: %+v", c.Reads)
	}
	t.Logf("read marks: %d sent, %d acknowledged, all on the counter primary", c.Reads.Sent, c.Reads.Acknowledged)
	counted, unread := 0, 0
	for _, d := range c.Dialogs {
		counted += d.Counter
		unread += d.Unread
	}
	if counted != unread || unread >= stored {
		t.Errorf("the counters count %d and the database %d unread messages, of the %d the run stored", counted, unread, stored)
	}
}

// TestUpRefusesUntrustedHome plants in a home what another local user could
// and checks that `up` refuses it in one line with the command that fixes
// it, before it starts or changes anything.
func TestUpRefusesUntrustedHome(t *testing.T) {
	nobody := lookupNobody(t)
	tests := []struct {
		name  string
		plant func(t *testing.T, home string)
		path  string // relative to home
		want  string
	}{
		{"home writable by all", func(t *testing.T, home string) {
			if err := os.Chmod(home, 0o777); err != nil {
				t.Fatal(err)
			}
		}, ".", "chmod go-w " + "HOME"},
		{"token key planted by nobody", func(t *testing.T, home string) {
			writeTestFile(t, filepath.Join(home, "token.key"), strings.Repeat("k", 32))
			if err := os.Chown(filepath.Join(home, "token.key"), nobody, -1); err != nil {
				t.Fatal(err)
			}
		}, "token.key", "chown"},
		{"logs planted as a link", func(t *testing.T, home string) {
			if err := os.Symlink(t.TempDir(), filepath.Join(home, "logs")); err != nil {
				t.Fatal(err)
			}
		}, "logs", "rm HOME/logs"},
		{"clusters planted as a link", func(t *testing.T, home string) {
			if err := os.Symlink(t.TempDir(), filepath.Join(home, "clusters")); err != nil {
				t.Fatal(err)
			}
		}, "clusters", "rm HOME/clusters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			if err := os.Mkdir(home, 0o700); err != nil {
				t.Fatal(err)
			}
			tt.plant(t, home)
			before := listHome(t, home)
			var out syncBuffer
			// Bounded: an `up` that wrongly accepts the home runs until ctx ends.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := run(ctx, []string{"socnet", "up", "--home", home, "--http", freeAddr(t)},
				func(string) string { return "" }, &out, &out)
			if err == nil {
				t.Fatalf("up on a home with %s started:\n%s", tt.name, out.String())
			}
			msg := err.Error()
			want := strings.ReplaceAll(tt.want, "HOME", home)
			if strings.Contains(msg, "\n") || !strings.Contains(msg, filepath.Join(home, tt.path)) || !strings.Contains(msg, want) {
				t.Errorf("up: %q; want one line naming %s and saying %q", msg, filepath.Join(home, tt.path), want)
			}
			if after := listHome(t, home); after != before {
				t.Errorf("up changed the home it refused:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func lookupNobody(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("planting a file owned by another user needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listHome describes every entry under home with its mode and owner.
func listHome(t *testing.T, home string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(home, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d %d; ", p, fi.Mode(), st.Uid, fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestTwoStacksAndKilledUp runs two stacks side by side on one machine,
// one of them as a real `socnet up` process: both come up on internal ports
// of their own with working unread counters, and their status DSNs carry no
// password yet connect. Then the process's `up` is SIGKILLed: nothing of its
// home keeps running (services, PostgreSQL), the other stack is unaffected,
// and the next `up` on the same home starts cleanly with its data.
func TestTwoStacksAndKilledUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ten PostgreSQL nodes")
	}
	t.Setenv(beMainEnv, "1")
	getenv := warnLogs
	homeA, homeB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	apiA, apiB := freeAddr(t), freeAddr(t)
	upB := startUpProcess(t, homeB, apiB)
	stopA := startUp(t, homeA, apiA, getenv)
	defer stopA()

	pa, pb := readPortsFile(t, homeA), readPortsFile(t, homeB)
	used := map[string]bool{}
	for _, a := range []string{pa.Counter, pa.Relay, pb.Counter, pb.Relay} {
		if used[a] || strings.HasSuffix(a, ":8091") || strings.HasSuffix(a, ":8092") {
			t.Fatalf("internal addresses A %+v, B %+v: want four distinct ports chosen free", pa, pb)
		}
		used[a] = true
	}
	dialogA := newUnreadDialog(t, "http://"+apiA)
	dialogB := newUnreadDialog(t, "http://"+apiB)
	dialogA.send(t)
	dialogB.send(t)
	dialogA.waitUnread(t, 1)
	dialogB.waitUnread(t, 1)

	statusB := mustStatus(t, homeB, getenv)
	checkStatusDSNs(t, homeB, statusB)

	// SIGKILL of B's `up`: its children must not outlive it.
	procs := homeProcesses(homeB)
	if len(procs) < 5+3 {
		t.Fatalf("processes of home B: %v; want at least its 5 postmasters and 3 services", procs)
	}
	upB.kill(t)
	left := func() map[int]string {
		now := homeProcesses(homeB)
		for pid, cmd := range procs {
			if running(pid) {
				now[pid] = cmd
			}
		}
		return now
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(left()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("60s after the SIGKILL of home B's up, these of its processes run: %v", left())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A did not notice.
	dialogA.send(t)
	dialogA.waitUnread(t, 2)

	// B again, on the same home: clean start, same data and ports.
	stopB := startUp(t, homeB, apiB, getenv)
	defer stopB()
	if again := readPortsFile(t, homeB); again != pb {
		t.Errorf("B's internal addresses after the restart = %+v, want %+v", again, pb)
	}
	dialogB.waitUnread(t, 1)
	dialogB.send(t)
	dialogB.waitUnread(t, 2)
}

// upProcess is `socnet up` running as a process of its own.
type upProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

// startUpProcess runs `socnet up` as a process of its own (this test binary
// acting as socnet) and waits until its API is healthy.
func startUpProcess(t *testing.T, home, apiAddr string) *upProcess {
	t.Helper()
	p := runUp(t, apiAddr, 3*time.Minute, "up", "--home", home, "--http", apiAddr, "--main-shared-buffers", "32MB")
	checkCalledServicesUp(t, home)
	return p
}

// runUp runs `socnet args...` (an `up`) in a process of its own, stopped as
// Ctrl-C does when the test ends, and waits until `up` says it is up (every
// service and HAProxy started and recorded) and the API on apiAddr answers
// /healthz; it fails the test if `up` exits or is not ready within ready.
func runUp(t *testing.T, apiAddr string, ready time.Duration, args ...string) *upProcess {
	t.Helper()
	p := &upProcess{exited: make(chan struct{}), out: &syncBuffer{}}
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), beMainEnv+"=1", "SOCNET_LOG_LEVEL=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.After(ready)
	for {
		// HAProxy answers on apiAddr a moment before `up` has recorded
		// it in services.json: the line comes after.
		if strings.Contains(p.out.String(), "socnet is up") {
			if ok, _ := healthy("http://" + apiAddr); ok {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("up exited early:\n%s", p.out.String())
		case <-deadline:
			t.Fatalf("up not ready after %s:\n%s", ready, p.out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop stops `up` as Ctrl-C does and waits for it; a no-op once it exited.
func (p *upProcess) stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("up did not stop within 2m:\n%s", p.out.String())
	}
}

// kill SIGKILLs the process and waits until it is gone.
func (p *upProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

func readPortsFile(t *testing.T, home string) stack.Ports {
	t.Helper()
	var p stack.Ports
	mustReadJSON(t, stack.Home{Dir: home}.Ports(), &p)
	return p
}

// checkStatusDSNs checks that no DSN of the status carries a password, and
// that the primary's connects as it is with pgx and with psql (libpq).
func checkStatusDSNs(t *testing.T, home string, doc stack.Status) {
	t.Helper()
	for _, c := range doc.Clusters {
		for _, n := range c.Nodes {
			u, err := url.Parse(n.DSN)
			if err != nil {
				t.Fatalf("node %s: dsn: %v", n.Name, err)
			}
			if _, has := u.User.Password(); has || u.Query().Get("passfile") == "" {
				t.Fatalf("node %s: dsn %s carries a password or names no passfile", n.Name, u.Redacted())
			}
			if n.Name != c.Primary {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			conn, err := pgx.Connect(ctx, n.DSN)
			if err != nil {
				cancel()
				t.Fatalf("pgx connect %s: %v", n.DSN, err)
			}
			conn.Close(ctx)
			cancel()
			psql := filepath.Join(pgnodeBinDir(t), "psql")
			out, err := exec.Command(psql, n.DSN, "-Atc", "SELECT 1").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "1" {
				t.Fatalf("psql %q: %v: %s", n.DSN, err, out)
			}
		}
	}
	fi, err := os.Stat(stack.Home{Dir: home}.PassFile())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("passfile: %v %v, want mode 0600", fi, err)
	}
}

func pgnodeBinDir(t *testing.T) string {
	t.Helper()
	dir, err := pgnode.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// homeProcesses returns the live processes of the stack in home: those
// that name it in their environment or command line (services, postmasters)
// and their children (PostgreSQL's backends), with their command lines.
func homeProcesses(home string) map[int]string {
	procs := map[int]string{}
	parents := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !running(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if strings.Contains(string(cmdline), home+"/") || strings.Contains(string(environ), stack.HomeEnv+"="+home+"\x00") {
			procs[pid] = strings.ReplaceAll(string(cmdline), "\x00", " ")
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			// pid (comm) state ppid ...
			if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 1 {
				parents[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	for pid, ppid := range parents {
		if _, ok := procs[ppid]; ok {
			if _, seen := procs[pid]; !seen {
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				procs[pid] = strings.ReplaceAll(string(cmdline), "\x00", " ")
			}
		}
	}
	return procs
}

// running reports whether pid is a process that has not exited (a zombie
// waiting to be reaped has).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// unreadDialog is a sender and a recipient on a stack's API.
type unreadDialog struct {
	c               *client
	from, to, toTok string
	fromTok         string
}

func newUnreadDialog(t *testing.T, base string) *unreadDialog {
	c := &client{t: t, base: base}
	d := &unreadDialog{c: c}
	d.from = c.register("Анна", "Ахматова", "pw-from-1")
	d.to = c.register("Марина", "Цветаева", "pw-to-12")
	d.fromTok, d.toTok = c.login(d.from, "pw-from-1"), c.login(d.to, "pw-to-12")
	return d
}

func (d *unreadDialog) send(t *testing.T) {
	t.Helper()
	d.c.do("POST", "/dialog/"+d.to+"/send", d.fromTok, map[string]any{"text": "привет"}, 200, nil)
}

// waitUnread waits until the recipient's unread total is want.
func (d *unreadDialog) waitUnread(t *testing.T, want int) {
	t.Helper()
	var got int
	waitFor(t, 30*time.Second, fmt.Sprintf("%d unread on %s", want, d.c.base), func() bool {
		var u struct {
			Total int `json:"total"`
		}
		d.c.do("GET", "/dialog/unread", d.toTok, nil, 200, &u)
		got = u.Total
		return got == want
	})
}

// TestUpRefusesBusyPort holds the counter service's address as another
// stack would: `up` says so before it starts anything, instead of letting
// the other process answer its health checks.
func TestUpRefusesBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	home := filepath.Join(t.TempDir(), "home")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out syncBuffer
	err = run(ctx, []string{"socnet", "up", "--home", home, "--http", freeAddr(t), "--counter-http", ln.Addr().String()},
		func(string) string { return "" }, &out, &out)
	want := "counter cannot listen on " + ln.Addr().String()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("up with the counter's address taken: %v; want %q\n%s", err, want, out.String())
	}
	if _, err := os.Stat(filepath.Join(home, "clusters")); !os.IsNotExist(err) {
		t.Errorf("up created clusters before refusing the address: %v", err)
	}
}

// TestUpRefusesAnUnknownEngine checks that --engine names a known engine
// before anything is made in the home.
func TestUpRefusesAnUnknownEngine(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	var out syncBuffer
	err := run(context.Background(), []string{"socnet", "up", "--home", home, "--engine", "pg_auto_failover"}, warnLogs, &out, &out)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), `--engine "pg_auto_failover"`) {
		t.Fatalf("up --engine pg_auto_failover: %v (exit %d), want a usage error naming the flag", err, exitCode(err))
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("the refused up made %s: %v", home, err)
	}
}
