package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"socnet/internal/drill"
)

// TestDrillPartitionNeedsHosts checks that the partition drill on a stack
// without network hosts fails in one line that says what is missing.
func TestDrillPartitionNeedsHosts(t *testing.T) {
	e := &env{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard,
		log: slog.New(slog.DiscardHandler)}
	err := cmdDrill(context.Background(), e, []string{"partition", "--home", t.TempDir()})
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("drill partition without hosts: %v (exit %d), want an error with exit status 1", err, exitCode(err))
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !(strings.Contains(msg, "--hosts netns") || strings.Contains(msg, "need root")) {
		t.Errorf("error %q: want one line naming --hosts netns (or root)", msg)
	}
}

func TestParseShare(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"30%", 0.3, true},
		{"0.3", 0.3, true},
		{" 5% ", 0.05, true},
		{"0", 0, false},
		{"100%", 0, false},
		{"1.5", 0, false},
		{"-10%", 0, false},
		{"half", 0, false},
	}
	for _, tt := range tests {
		got, err := parseShare(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseShare(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestDrillRefusesBadInput checks that bad flags are usage errors (exit
// status 2) found before any stack is looked for.
func TestDrillRefusesBadInput(t *testing.T) {
	home := t.TempDir() // holds no stack: nothing may get as far as reading it
	for _, args := range [][]string{
		{},
		{"explode"},
		{"failover", "--home", home, "--kill-after", "soon"},
		{"failover", "--home", home, "--kill-after", "-1s"},
		{"failover", "--home", home, "--writers", "0"},
		{"failover", "--home", home, "--repeat", "0"},
		{"failover", "--home", home, "--duration", "0s"},
		{"replica", "--home", home, "--settle", "-1s"},
		{"replica", "--home", home, "--sessions", "-1"},
		{"failover", "--home", home, "--sessions", "33"},
		{"failover", "--home", home, "--max-replica-lag", "0s"},
		{"failover", "--home", home, "--hold-async=maybe"},
		{"fill", "--home", home, "--kill-at", "120%"},
		{"fill", "--home", home, "--users", "0"},
		{"failover", "--home", home, "--no-such-flag"},
		{"failover", "--home", home, "--writes", "carrier-pigeon"},
		{"failover", "--home", home, "--writes", "sql"}, // main is written through the API only
		{"failover", "--home", home, "--cluster", "counter", "--writes", ""},
		{"partition", "--home", home, "--cut-for", "0s"},
		{"partition", "--home", home, "--target", "leader"},
		{"partition", "--home", home, "--target", "primary+etcd-leader", "--host", "main-2"},
		{"partition", "--home", home, "--cut-after", "-1s"},
		{"partition", "--home", home, "--writers", "0"},
		{"failover", "--home", home, "--fault", "network"},
		{"failover", "--home", home, "--fault", ""},
		{"compare"},
		{"compare", "--no-such-flag", "a.json"},
	} {
		e := &env{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard,
			log: slog.New(slog.DiscardHandler)}
		err := cmdDrill(context.Background(), e, args)
		var u usageError
		if !errors.As(err, &u) || exitCode(err) != 2 {
			t.Errorf("drill %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
}

// TestDrillCompare runs `socnet drill compare` on report files: the table
// is printed and written into a Markdown document between its markers, as
// HTML and as JSON; a failed run makes the exit status 3.
func TestDrillCompare(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	report := func(name, engine string, fault drill.Fault, lost int) string {
		u, p, r := 300.0, 200.0, 3000.0
		run := drill.Run{RunID: name, Drill: drill.DrillFailover, Cluster: "main", Engine: engine, Fault: string(fault),
			Started: t0, Ended: t0.Add(time.Minute), UnavailableMS: &u, PromotionMS: &p, RejoinMS: &r,
			Verdict: &drill.Verdict{Acknowledged: 10, Lost: lost}, Problems: []string{}}
		if lost > 0 {
			run.Problems = append(run.Problems, "main-2 lacks acknowledged writes")
		}
		path := filepath.Join(dir, name+".json")
		if err := drill.NewReport(drill.DrillFailover, "main", []drill.Run{run}).WriteFile(path, drill.Report.WriteJSON); err != nil {
			t.Fatal(err)
		}
		return path
	}
	pm, host := report("pm", "socnet", drill.FaultPostmaster, 0), report("host", "socnet", drill.FaultHost, 0)
	doc := filepath.Join(dir, "BENCHMARKS.md")
	if err := os.WriteFile(doc, []byte("# Benchmarks\n\n"+drill.CompareBegin+"\nold\n"+drill.CompareEnd+"\n\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out strings.Builder
		e := &env{getenv: func(string) string { return "" }, stdout: &out, stderr: io.Discard, log: slog.New(slog.DiscardHandler)}
		err := cmdDrill(context.Background(), e, append([]string{"compare"}, args...))
		return out.String(), err
	}
	out, err := run(pm, "--markdown-into", doc, "--html", filepath.Join(dir, "c.html"), host, "--json", filepath.Join(dir, "c.json"), "--command", "test run")
	if err != nil {
		t.Fatalf("compare: %v\n%s", err, out)
	}
	if !strings.Contains(out, "socnet  postmaster") || !strings.Contains(out, "socnet  host") || !strings.Contains(out, "verdict: PASS") {
		t.Errorf("output:\n%s", out)
	}
	md, _ := os.ReadFile(doc)
	if strings.Contains(string(md), "\nold\n") || !strings.Contains(string(md), "| socnet | host | 1 | 1 |") ||
		!strings.Contains(string(md), "`test run`") || !strings.HasSuffix(string(md), drill.CompareEnd+"\n\nafter\n") {
		t.Errorf("document:\n%s", md)
	}
	for _, f := range []string{"c.html", "c.json"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}

	lost := report("lost", "patroni", drill.FaultHost, 1)
	if _, err := run(pm, lost); exitCode(err) != 3 {
		t.Errorf("a run that lost a write: %v (exit %d), want exit 3", err, exitCode(err))
	}
	if _, err := run(filepath.Join(dir, "missing.json")); err == nil || exitCode(err) == 2 {
		t.Errorf("a missing report: %v, want an error that is not a usage error", err)
	}
}
