package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/stack"
)

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
	getenv := func(k string) string {
		if k == "SOCNET_LOG_LEVEL" {
			return "warn"
		}
		return ""
	}

	stop := startUp(t, home, apiAddr, getenv)
	base := "http://" + apiAddr
	c := &client{t: t, base: base}
	alice := c.register("Осип", "Мандельштам", "pw-alice")

	doc := mustStatus(t, home, getenv)
	main := findCluster(t, doc, mainCluster)
	if got := syncStates(main); got["sync"] != 1 || got["potential"] != 1 {
		t.Fatalf("main replicas' sync states = %v, want one sync and one potential", got)
	}
	running := map[string]bool{}
	for _, s := range doc.Services {
		running[s.Name] = processAlive(s.Pid)
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
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill primary %s (pid %d): %v", oldPrimary, pid, err)
	}
	killed := time.Now()
	// Writes come back on the new primary by themselves.
	var bob string
	waitFor(t, 20*time.Second, "a write after the failover", func() bool {
		id, ok := tryRegister(base, "Борис", "Пастернак")
		bob = id
		return ok
	})
	t.Logf("first acknowledged write %v after SIGKILL of %s", time.Since(killed).Round(time.Millisecond), oldPrimary)
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

// startUp runs `socnet up` until the returned stop is called, and waits until
// the API is healthy.
func startUp(t *testing.T, home, apiAddr string, getenv func(string) string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"socnet", "up", "--home", home, "--http", apiAddr, "--counter-http", freeAddr(t)},
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

func mustStatus(t *testing.T, home string, getenv func(string) string) statusDoc {
	t.Helper()
	var out, errOut syncBuffer
	if err := run(context.Background(), []string{"socnet", "status", "--home", home, "--json"}, getenv, &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	var doc statusDoc
	if err := json.Unmarshal([]byte(out.String()), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	return doc
}

func findCluster(t *testing.T, doc statusDoc, name string) clusterStatus {
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
	getenv := func(k string) string {
		if k == "SOCNET_LOG_LEVEL" {
			return "warn"
		}
		return ""
	}
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
	getenv := func(k string) string {
		if k == "SOCNET_LOG_LEVEL" {
			return "warn"
		}
		return ""
	}
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
	// The recipient is new and reads nothing: every message of the run is
	// unread, and the counters count exactly those.
	c := r.Counters
	if c == nil || c.DialogsChecked != 4 || c.Drift != 0 || c.Reconcile == nil || c.Reconcile.Drift != 0 || c.Reconcile.Compared < 4 {
		t.Fatalf("counters: %+v", c)
	}
	counted, unread := 0, 0
	for _, d := range c.Dialogs {
		counted += d.Counter
		unread += d.Unread
	}
	if counted != stored || unread != stored {
		t.Errorf("the counters count %d and the database %d unread messages, but the run stored %d", counted, unread, stored)
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

// TestStopLeftovers runs processes recorded in services.json as a previous
// `up` that died would leave them: the one marked as a child of this home is
// stopped, the ones marked for another home or not at all (a pid reused by
// an unrelated process) are left alone.
func TestStopLeftovers(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	start := func(env ...string) (*exec.Cmd, chan error) {
		cmd := exec.Command("sleep", "300")
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd, done
	}
	ours, oursDone := start(stackHomeEnv + "=" + home)
	other, otherDone := start(stackHomeEnv + "=" + filepath.Join(dir, "other"))
	unmarked, unmarkedDone := start()
	recs := []serviceRecord{{Name: "relay", Pid: ours.Process.Pid}, {Name: "api", Pid: other.Process.Pid},
		{Name: "counter", Pid: unmarked.Process.Pid}}
	data, _ := json.Marshal(recs)
	writeTestFile(t, servicesPath(home), string(data))

	stopLeftovers(stack.Home{Dir: home}, discardLogger(), 10*time.Second)
	select {
	case <-oursDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("the leftover of this home (pid %d) still runs", ours.Process.Pid)
	}
	for name, done := range map[string]chan error{"another home's": otherDone, "an unmarked": unmarkedDone} {
		select {
		case err := <-done:
			t.Errorf("%s process was stopped: %v", name, err)
		default:
		}
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
