package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
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
		{"partition", "--home", home, "--cut-after", "-1s"},
		{"partition", "--home", home, "--writers", "0"},
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
