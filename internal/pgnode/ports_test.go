package pgnode

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestFreePortLeases: ports handed out are distinct across processes
// choosing at the same time, even though none of them binds its ports.
func TestFreePortLeases(t *testing.T) {
	if lo, hi := freePortRange(); hi <= lo {
		t.Skip("no port range below the ephemeral one on this machine")
	}
	if os.Getenv("SOCNET_FREEPORT_CHILD") != "" {
		var out []string
		for range 200 {
			p, err := FreePort()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, strconv.Itoa(p))
		}
		os.Stdout.WriteString("PORTS " + strings.Join(out, " ") + "\n")
		return
	}
	const procs = 4
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*strings.Builder, procs)
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestFreePortLeases$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), "SOCNET_FREEPORT_CHILD=1")
		outs[i] = &strings.Builder{}
		cmds[i].Stdout = outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outs[i])
		}
		var line string
		for _, l := range strings.Split(outs[i].String(), "\n") {
			if strings.HasPrefix(l, "PORTS ") {
				line = strings.TrimPrefix(l, "PORTS ")
			}
		}
		ports := strings.Fields(line)
		if len(ports) != 200 {
			t.Fatalf("child %d printed %d ports:\n%s", i, len(ports), outs[i])
		}
		for _, p := range ports {
			if j, dup := seen[p]; dup {
				t.Fatalf("port %s handed to child %d and child %d", p, j, i)
			}
			seen[p] = i
		}
	}
}

// TestFreePortSkipsBound: a bound port is never handed out, leased or not.
func TestFreePortSkipsBound(t *testing.T) {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("the port handed out cannot be bound: %v", err)
	}
	defer l.Close()
	if bindable(p) {
		t.Fatalf("port %d is bound but reported bindable", p)
	}
}
