// Command socnet is the social-network backend and the tooling that runs it
// on replicated PostgreSQL. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "socnet: %v\n", err)
		os.Exit(exitCode(err))
	}
}

// env is what every subcommand gets from run: the injected environment and
// output streams, and a logger writing to stderr.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	self   string // path of the socnet binary, for starting child services
}

type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"serve":     {"serve the API (for a real deployment; `up` runs it for you)", cmdServe},
		"up":        {"run the local stack: both clusters, their supervisor and the services", cmdUp},
		"status":    {"show every node, the failover history, the services and where reads go", cmdStatus},
		"cluster":   {"switch over, promote, rejoin, stop, start and inspect the clusters", cmdCluster},
		"drill":     {"failure experiments that judge themselves: failover, fill, replica", cmdDrill},
		"load":      {"drive the API with load; latency, throughput and where the database load landed", cmdLoad},
		"seed":      {"fill the database with realistic people (or load the course's CSV)", cmdSeed},
		"counterd":  {"run the unread-message counter service", cmdCounterd},
		"relay":     {"deliver the dialogs outbox to the counter service", cmdRelay},
		"feed":      {"the feed's timelines in Redis: work (apply the feed outbox), check (compare with SQL)", cmdFeed},
		"reconcile": {"compare unread counters with the dialogs and repair drift (--check: report only)", cmdReconcile},
	}
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) < 2 || args[1] == "-h" || args[1] == "--help" || args[1] == "help" {
		usage(stdout, cmds)
		return nil
	}
	c, ok := cmds[args[1]]
	if !ok {
		usage(stderr, cmds)
		return usageError{fmt.Errorf("unknown command %q", args[1])}
	}
	self, err := os.Executable()
	if err != nil {
		self = args[0]
	}
	e := &env{getenv: getenv, stdout: stdout, stderr: stderr, self: self,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel(getenv)}))}
	err = c.run(ctx, e, args[2:])
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: socnet COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'socnet COMMAND -h' for the flags of a command.")
}

func logLevel(getenv func(string) string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(getenv("SOCNET_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// usageError marks bad command-line input (exit status 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// exitCode maps an error from run to the process exit status.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	// Drills and checks that find a problem return an error with its own code.
	var v interface{ ExitCode() int }
	if errors.As(err, &v) {
		return v.ExitCode()
	}
	return 1
}
