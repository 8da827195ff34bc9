package netns_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"socnet/internal/netns"
	"socnet/internal/netns/netnstest"
)

const port = 7411

// TestMain lets the test binary play the parts the tests run in other
// processes: a TCP server inside a host, a client inside a host, a process
// that brings a net up and is then SIGKILLed, and a non-root check.
func TestMain(m *testing.M) {
	switch os.Getenv("NETNS_TEST_ROLE") {
	case "serve":
		serve(os.Getenv("NETNS_TEST_ARG"))
	case "dial":
		if err := dial(os.Getenv("NETNS_TEST_ARG")); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	case "up":
		ctx := context.Background()
		n, err := netns.Plan(os.Getenv("NETNS_TEST_ARG"), []string{"a", "b"})
		if err == nil {
			err = n.Up(ctx)
		}
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("up")
		time.Sleep(time.Minute)
		os.Exit(0)
	case "check":
		fmt.Println(netns.Check(context.Background()))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve answers every connection on addr with "hello" and the listener's
// own address, having printed "ready" once it listens.
func serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintf(c, "hello %s\n", addr)
		c.Close()
	}
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if want := "hello " + addr + "\n"; line != want {
		return fmt.Errorf("read %q, want %q", line, want)
	}
	return nil
}

func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// mustUp plans and brings up a net for a fresh home, removed at the test's end.
func mustUp(t *testing.T, home string, hosts ...string) *netns.Net {
	t.Helper()
	return netnstest.Up(t, home, hosts...)
}

// startServer runs the test binary as a TCP server inside host.
func startServer(t *testing.T, n *netns.Net, host string) string {
	t.Helper()
	a, _ := n.Addr(host)
	addr := netip.AddrPortFrom(a, port).String()
	cmd := n.Command(context.Background(), host, self(t))
	cmd.Env = append(os.Environ(), "NETNS_TEST_ROLE=serve", "NETNS_TEST_ARG="+addr)
	netnstest.StartReady(t, cmd)
	return addr
}

// dialFrom connects to addr from host's namespace, or from the machine's own
// if host is empty.
func dialFrom(t *testing.T, n *netns.Net, host, addr string) error {
	t.Helper()
	if host == "" {
		return dial(addr)
	}
	// Through a shell that forks, so that the dialler is a child of the
	// process Command starts and must have inherited its namespace.
	cmd := n.Command(context.Background(), host, "sh", "-c", `"$0"; exit $?`, self(t))
	cmd.Env = append(os.Environ(), "NETNS_TEST_ROLE=dial", "NETNS_TEST_ARG="+addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("dial %s from %s: %w: %s", addr, host, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestReachCutHeal(t *testing.T) {
	n := mustUp(t, t.TempDir(), "a", "b")
	// Up again on an existing net changes nothing and fails in nothing.
	if err := n.Up(context.Background()); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	addr := startServer(t, n, "a")
	eventually(t, "reach a from the machine", func() error { return dialFrom(t, n, "", addr) })
	eventually(t, "reach a from b", func() error { return dialFrom(t, n, "b", addr) })

	if err := n.Cut(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(t, n, "", addr); err == nil {
		t.Error("a reached from the machine while cut")
	}
	if err := dialFrom(t, n, "b", addr); err == nil {
		t.Error("a reached from b while cut")
	}
	if err := n.Heal(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "reach a from the machine after heal", func() error { return dialFrom(t, n, "", addr) })
	eventually(t, "reach a from b after heal", func() error { return dialFrom(t, n, "b", addr) })
}

// TestNoRouteOut checks that a host reaches nothing but its subnet.
func TestNoRouteOut(t *testing.T) {
	n := mustUp(t, t.TempDir(), "a")
	out, err := n.Command(context.Background(), "a", "ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if f[0] == "local" || f[0] == "broadcast" {
			f = f[1:]
		}
		p, err := netip.ParsePrefix(f[0])
		if err != nil {
			a, aerr := netip.ParseAddr(f[0])
			if aerr != nil {
				t.Errorf("route %q: neither prefix nor address", line)
				continue
			}
			p = netip.PrefixFrom(a, 32)
		}
		loop := netip.MustParsePrefix("127.0.0.0/8")
		if !n.Subnet().Contains(p.Addr()) && !loop.Contains(p.Addr()) {
			t.Errorf("route %q leads outside %s and loopback", line, n.Subnet())
		}
	}
}

func TestCleanupAfterSIGKILL(t *testing.T) {
	ctx := context.Background()
	if err := netns.Check(ctx); err != nil {
		t.Skip(err)
	}
	home := t.TempDir()
	n, err := netns.Plan(home, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.Cleanup(context.Background(), home)
		netnstest.AssertGone(t, n.Prefix())
	})
	cmd := exec.Command(self(t))
	cmd.Env = append(os.Environ(), "NETNS_TEST_ROLE=up", "NETNS_TEST_ARG="+home)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if line != "up\n" {
		t.Fatalf("child: %q", line)
	}
	nss, _ := netns.Namespaces(ctx, n.Prefix())
	links, _ := netns.Links(ctx, n.Prefix())
	if len(nss) != 2 || len(links) != 3 {
		t.Fatalf("after SIGKILL: namespaces %v, links %v; want 2 namespaces, a bridge and 2 veths", nss, links)
	}
	if err := netns.Cleanup(ctx, home); err != nil {
		t.Fatal(err)
	}
	netnstest.AssertGone(t, n.Prefix())
}

// TestSideBySide brings up two homes whose preferred subnets are the same:
// the second must move to another /24, with distinct names, and both work.
func TestSideBySide(t *testing.T) {
	dir := t.TempDir()
	first := filepath.Join(dir, "home-0")
	p0, err := netns.Plan(first, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	second := ""
	for i := 1; i < 5000 && second == ""; i++ {
		h := filepath.Join(dir, fmt.Sprintf("home-%d", i))
		p, err := netns.Plan(h, []string{"a"})
		if err != nil {
			t.Fatal(err)
		}
		if p.Subnet() == p0.Subnet() {
			second = h
		}
	}
	if second == "" {
		t.Fatal("no home found with the same preferred subnet")
	}
	n1 := mustUp(t, first, "a", "b")
	n2 := mustUp(t, second, "a", "b")
	if n1.Prefix() == n2.Prefix() || n1.Netns("a") == n2.Netns("a") || n1.Bridge() == n2.Bridge() {
		t.Errorf("names collide: %s %s", n1.Prefix(), n2.Prefix())
	}
	if n1.Subnet().Overlaps(n2.Subnet()) {
		t.Errorf("subnets overlap: %s %s", n1.Subnet(), n2.Subnet())
	}
	for _, n := range []*netns.Net{n1, n2} {
		addr := startServer(t, n, "a")
		eventually(t, "reach a from the machine", func() error { return dialFrom(t, n, "", addr) })
		eventually(t, "reach a from b", func() error { return dialFrom(t, n, "b", addr) })
	}
	// One net's host cannot reach the other's: separate bridges, no routes.
	a2, _ := n2.Addr("a")
	if err := dialFrom(t, n1, "b", netip.AddrPortFrom(a2, port).String()); err == nil {
		t.Error("host of one net reached a host of the other")
	}
}

func TestNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		if err := netns.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "need root") {
			t.Fatalf("Check as uid %d: %v", os.Geteuid(), err)
		}
		return
	}
	// The binary is copied where user nobody can run it.
	dir, err := os.MkdirTemp("", "netns-notroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "netns.test")
	data, err := os.ReadFile(self(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = []string{"NETNS_TEST_ROLE=check", "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := strings.TrimSpace(string(out))
	want := "netns: network namespaces need root (running as uid 65534)"
	if got != want {
		t.Errorf("as nobody: got %q, want %q", got, want)
	}
}

// TestNoIP checks the error when `ip` cannot be found.
func TestNoIP(t *testing.T) {
	cmd := exec.Command(self(t))
	cmd.Env = []string{"NETNS_TEST_ROLE=check", "PATH=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if os.Geteuid() == 0 {
		if want := "netns: network namespaces unavailable: no `ip` program (install iproute2)"; got != want {
			t.Errorf("without ip: got %q, want %q", got, want)
		}
	} else if !strings.Contains(got, "need root") {
		t.Errorf("without ip, not root: got %q", got)
	}
}

// TestAttach finds a running net from its home alone, as a drill in
// another process does, and cuts one of its hosts off.
func TestAttach(t *testing.T) {
	home := t.TempDir()
	n := mustUp(t, home, "a", "b", "c")
	ctx := context.Background()
	got, err := netns.Attach(ctx, home)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Hosts()) != fmt.Sprint(n.Hosts()) || got.Subnet() != n.Subnet() || got.Prefix() != n.Prefix() {
		t.Fatalf("attached hosts %v subnet %s prefix %s, want %v %s %s", got.Hosts(), got.Subnet(), got.Prefix(), n.Hosts(), n.Subnet(), n.Prefix())
	}
	for _, h := range n.Hosts() {
		want, _ := n.Addr(h)
		if a, _ := got.Addr(h); a != want {
			t.Errorf("attached address of %s: %s, want %s", h, a, want)
		}
	}
	addr := startServer(t, n, "b")
	eventually(t, "reach b", func() error { return dialFrom(t, n, "", addr) })
	if err := got.Cut(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(t, n, "", addr); err == nil {
		t.Error("b reached while cut through the attached net")
	}
	if err := got.Heal(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "reach b after heal", func() error { return dialFrom(t, n, "", addr) })

	if _, err := netns.Attach(ctx, t.TempDir()); err == nil {
		t.Error("attached a home with no net")
	}
}
