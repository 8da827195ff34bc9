// Package pgtest gives tests real PostgreSQL servers: a shared server per
// test binary with a fresh database per test, and throwaway nodes for tests
// that build replicas or kill servers. Servers run through internal/pgnode
// on 127.0.0.1 and free ports. A test that cannot get a server fails; it is
// never skipped.
//
// It must not be imported by non-test code.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/pgnode"
)

// economical are the settings of every server pgtest starts: two cores and
// several test binaries share the machine.
var economical = map[string]string{
	"shared_buffers":  "32MB",
	"max_connections": "100",
	"fsync":           "on",
}

// password is the superuser password of every server of this test binary:
// replicas made by BaseBackup carry their primary's roles, so their own DSN
// must use the same password.
var password = randomHex(16)

// startTimeout bounds initdb plus start of one server.
const startTimeout = 90 * time.Second

// shared is the server of this test binary.
var shared struct {
	mu   sync.Mutex
	main bool // Main runs, so the server will be stopped
	node *pgnode.Node
	dir  string
	err  error
}

// Main runs m and then stops the shared server; call from TestMain. It exits
// the process with m.Run's code.
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.main = true
	shared.mu.Unlock()
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// stopShared stops the shared server and removes its directory.
func stopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.node == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := shared.node.Stop(ctx)
	if err == nil {
		err = os.RemoveAll(shared.dir)
	}
	shared.node = nil
	return err
}

// MustServer returns this test binary's shared PostgreSQL node, started on
// first use in its own temp dir on a free port with economical settings
// (shared_buffers=32MB, max_connections=100, fsync=on). Fails tb if it
// cannot, or if the test binary's TestMain does not call Main.
func MustServer(tb testing.TB) *pgnode.Node {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.main {
		tb.Fatalf("pgtest: the shared server needs TestMain to call pgtest.Main(m), which stops it")
	}
	if shared.node != nil {
		return shared.node
	}
	if shared.err != nil {
		tb.Fatalf("pgtest: shared server: %v", shared.err)
	}
	node, dir, err := startShared()
	if err != nil {
		shared.err = err
		tb.Fatalf("pgtest: shared server: %v", err)
	}
	shared.node, shared.dir = node, dir
	return node
}

func startShared() (*pgnode.Node, string, error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	node := pgnode.New(pgnode.Config{
		Name:     "pgtest",
		DataDir:  filepath.Join(dir, "data"),
		LogPath:  filepath.Join(dir, "postgres.log"),
		Port:     port,
		OSUser:   pgnode.OSUser(),
		Password: password,
		Settings: maps.Clone(economical),
	})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := node.InitDB(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	if err := node.Start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	return node, dir, nil
}

// notIdent matches what may not appear in a generated database name.
var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// MustDatabase creates a fresh empty database on the shared server and
// returns its admin DSN; it is dropped (WITH (FORCE)) in tb.Cleanup.
func MustDatabase(tb testing.TB) string {
	tb.Helper()
	node := MustServer(tb)
	base := notIdent.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name := "t_" + base + "_" + randomHex(4)
	ident := pgx.Identifier{name}.Sanitize()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execAdmin(ctx, node, "CREATE DATABASE "+ident); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := execAdmin(ctx, node, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return node.DSN(name)
}

// execAdmin runs one statement on node's postgres database.
func execAdmin(ctx context.Context, node *pgnode.Node, sql string) error {
	conn, err := pgx.Connect(ctx, node.DSN(""))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// MustNode initdb's and starts a throwaway node in tb.TempDir() on a free
// port (settings merged into the economical defaults), logs its output
// through tb.Logf prefixed with the name, and stops it in tb.Cleanup.
func MustNode(tb testing.TB, name string, settings map[string]string) *pgnode.Node {
	tb.Helper()
	node := NewNode(tb, name, settings)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := node.InitDB(ctx); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if err := node.Start(ctx); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return node
}

// NewNode is MustNode without InitDB/Start: a configured node (DataDir under
// tb.TempDir(), free port) for callers that build replicas with BaseBackup.
// All nodes of a test binary share one superuser password, so a replica's
// DSN works with the roles it copied from its primary. It is stopped in tb.Cleanup if it runs then.
func NewNode(tb testing.TB, name string, settings map[string]string) *pgnode.Node {
	tb.Helper()
	dir := tb.TempDir()
	port, err := freePort()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	all := maps.Clone(economical)
	maps.Copy(all, settings)
	out := LogWriter(tb, "")
	node := pgnode.New(pgnode.Config{
		Name:     name,
		DataDir:  filepath.Join(dir, "data"),
		LogPath:  filepath.Join(dir, name+".log"),
		Port:     port,
		OSUser:   pgnode.OSUser(),
		Password: password,
		Settings: all,
		Logger:   slog.New(slog.NewTextHandler(LogWriter(tb, name+" | pgnode:"), nil)),
		Output:   out,
	})
	// Registered after tb.TempDir, so it runs before the directory goes.
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := node.Stop(ctx); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return node
}

// ports remembers the ports handed out in this process, so that two nodes
// never get the same one even if the kernel offers it twice.
var ports struct {
	mu   sync.Mutex
	used map[int]bool
}

func freePort() (int, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.used == nil {
		ports.used = make(map[int]bool)
	}
	for range 20 {
		p, err := pgnode.FreePort()
		if err != nil {
			return 0, err
		}
		if !ports.used[p] {
			ports.used[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("no unused free port after 20 tries")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// LogWriter returns an io.Writer that sends each line to tb.Logf with the
// prefix. Lines written after the test has finished are dropped, since
// testing forbids logging then.
func LogWriter(tb testing.TB, prefix string) io.Writer {
	w := &logWriter{tb: tb, prefix: prefix}
	if prefix != "" && !strings.HasSuffix(prefix, " ") {
		w.prefix += " "
	}
	tb.Cleanup(w.close)
	return w
}

type logWriter struct {
	mu      sync.Mutex
	tb      testing.TB
	prefix  string
	partial []byte
	closed  bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.tb.Logf("%s%s", w.prefix, w.partial[:i])
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (w *logWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.tb.Logf("%s%s", w.prefix, w.partial)
		w.partial = nil
	}
	w.closed = true
}
