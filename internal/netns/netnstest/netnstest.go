// Package netnstest gives tests the network hosts they run on and the
// processes they start there, and removes both when the test ends.
package netnstest

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"socnet/internal/netns"
)

// Up plans the hosts for dir, brings them up and, when the test ends,
// takes them down and fails the test if a namespace or link of theirs is
// left. Where namespaces cannot be made (not root, no `ip`) it skips the
// test with the reason. Call it before starting anything on the hosts, so
// that its clean-up runs after theirs.
func Up(t testing.TB, dir string, hosts ...string) *netns.Net {
	t.Helper()
	ctx := context.Background()
	if err := netns.Check(ctx); err != nil {
		t.Skip(err)
	}
	n, err := netns.Plan(dir, hosts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Down(context.Background()); err != nil {
			t.Error(err)
		}
		AssertGone(t, n.Prefix())
	})
	if err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// AssertGone fails the test if a namespace or a link named with prefix
// exists.
func AssertGone(t testing.TB, prefix string) {
	t.Helper()
	ctx := context.Background()
	nss, err := netns.Namespaces(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	links, err := netns.Links(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(nss) > 0 || len(links) > 0 {
		t.Errorf("left behind with prefix %s: namespaces %v, links %v", prefix, nss, links)
	}
}

// StartReady starts cmd, waits for its first line on stdout, which must be
// "ready", and kills it when the test ends. The rest of its stdout is
// discarded; its stderr goes to the test binary's.
func StartReady(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("%s: first line %q, want ready (%v)", strings.Join(cmd.Args, " "), line, err)
	}
	go io.Copy(io.Discard, out)
}
