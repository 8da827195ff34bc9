package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"socnet/internal/auth"
	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

// counterTestEnv returns an env whose getenv reads vars, writing to the
// buffers.
func counterTestEnv(vars map[string]string, stdout, stderr io.Writer) *env {
	return &env{getenv: func(k string) string { return vars[k] }, stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, nil))}
}

func counterTestAddr(t *testing.T) string {
	t.Helper()
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// TestCounterCommands runs counterd and the relay as the commands do, with
// settings from flags and the environment, then reconciles: clean, drift
// found by --check (exit 3), repaired, clean again.
func TestCounterCommands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mainDSN, counterDSN := pgtest.MustDatabase(t), pgtest.MustDatabase(t)
	if err := postgres.Migrate(ctx, mainDSN, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	counterAddr, relayAddr := counterTestAddr(t), counterTestAddr(t)
	keyFile := filepath.Join(t.TempDir(), "service.key")
	key, err := auth.LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"SOCNET_DB": counterDSN, "SOCNET_MAIN_DB": mainDSN, "SOCNET_COUNTER_DB": counterDSN,
		"SOCNET_SERVICE_KEY_FILE": keyFile}
	var logs syncBuffer
	e := counterTestEnv(vars, io.Discard, &logs)
	done := make(chan error, 2)
	go func() { done <- cmdCounterd(ctx, e, []string{"--http", counterAddr, "--admin-db", counterDSN}) }()
	go func() {
		done <- cmdRelay(ctx, e, []string{"--counter", "http://" + counterAddr, "--http", relayAddr, "--poll", "10ms"})
	}()
	client := counter.NewClient("http://"+counterAddr, counter.WithServiceKey(key))
	defer client.Close()
	waitCounterCond(t, 30*time.Second, "counterd healthy", func() bool { return client.Healthy(ctx) == nil })
	_, err = counter.NewClient("http://"+counterAddr).Unread(ctx, newTestUUID(t))
	if social.ErrorCode(err) != social.EUNAVAILABLE || !strings.Contains(err.Error(), "refused this service's signature") {
		t.Errorf("an unsigned read of counters: %v, want EUNAVAILABLE naming the signature", err)
	}

	db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Primary: mainDSN, MaxConns: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	users, dialogs := postgres.NewUserStore(db), postgres.NewDialogStore(db)
	var ids []string
	for i := range 2 {
		u := social.User{FirstName: "Имя", SecondName: strconv.Itoa(i), Birthdate: time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)}
		if err := users.CreateUser(ctx, &u, []byte("x")); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	for range 3 {
		if err := dialogs.SendMessage(ctx, &social.Message{From: ids[0], To: ids[1], Text: "привет"}); err != nil {
			t.Fatal(err)
		}
	}
	waitCounterCond(t, 30*time.Second, "the counter", func() bool {
		u, err := client.Unread(ctx, ids[1])
		return err == nil && u.Total == 3
	})
	for path, want := range map[string]string{"/metrics": "socnet_relay_outbox_backlog 0", "/healthz": `"active":true,"backlog_over_max":false`} {
		waitCounterCond(t, 10*time.Second, "relay "+path, func() bool {
			resp, err := http.Get("http://" + relayAddr + path)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.Contains(string(b), want)
		})
	}

	reconcile := func(args ...string) (string, error) {
		var out syncBuffer
		err := cmdReconcile(ctx, counterTestEnv(vars, &out, io.Discard), append(args, "--drain-timeout", "10s"))
		return out.String(), err
	}
	if out, err := reconcile("--check"); err != nil || !strings.Contains(out, "0 drifting") {
		t.Fatalf("clean check: %v\n%s", err, out)
	}
	admin := counterAdminExec(t, mainDSN)
	admin(`INSERT INTO messages (id, from_user_id, to_user_id, text) VALUES (gen_random_uuid(), $1, $2, 'без события')`, ids[0], ids[1])
	out, err := reconcile("--check")
	if exitCode(err) != 3 || !strings.Contains(out, "counter=3 truth=4") || !strings.Contains(out, "not repaired") {
		t.Fatalf("check with drift: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	if out, err := reconcile("--json"); err != nil || !strings.Contains(out, `"repaired": true`) || !strings.Contains(out, `"remaining": 0`) {
		t.Fatalf("repair: %v\n%s", err, out)
	}
	if out, err := reconcile("--check"); err != nil {
		t.Fatalf("check after repair: %v\n%s", err, out)
	}
	if u, err := client.Unread(ctx, ids[1]); err != nil || u.Total != 4 {
		t.Errorf("after repair: %+v, %v; want 4", u, err)
	}

	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("command ended with %v", err)
		}
	}
}

func TestCounterCommandsRefuseBadInput(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		run  func(context.Context, *env, []string) error
		args []string
		want string
	}{
		{"counterd without db", cmdCounterd, nil, "--db"},
		{"counterd without a key", cmdCounterd, []string{"--db", "postgres://x@h/db"}, "--service-key-file"},
		{"counterd with a key and without auth", cmdCounterd, []string{"--db", "postgres://x@h/db", "--service-key-file", "k", "--insecure-no-auth"}, "exclude"},
		{"relay bad max backlog", cmdRelay, []string{"--main-db", "postgres://x@h/db", "--max-backlog", "0"}, "--max-backlog"},
		{"counterd reconcile without main db", cmdCounterd, []string{"--db", "postgres://x@h/db", "--reconcile-every", "1m"}, "--main-db"},
		{"relay without main db", cmdRelay, nil, "--main-db"},
		{"relay bad counter url", cmdRelay, []string{"--main-db", "postgres://x@h/db", "--counter", "127.0.0.1:1"}, "--counter"},
		{"relay bad batch", cmdRelay, []string{"--main-db", "postgres://x@h/db", "--batch", "0"}, "--batch"},
		{"reconcile without dsns", cmdReconcile, []string{"--check"}, "--main-db"},
		{"unknown flag", cmdRelay, []string{"--nope"}, "nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(ctx, counterTestEnv(nil, io.Discard, io.Discard), tc.args)
			var u usageError
			if !errors.As(err, &u) || exitCode(err) != 2 {
				t.Errorf("err %v (exit %d); want a usage error", err, exitCode(err))
			}
			if err != nil && !strings.Contains(err.Error(), tc.want) && tc.name != "unknown flag" {
				t.Errorf("err %q does not name %s", err, tc.want)
			}
		})
	}
}

// TestCounterdRefusesAnOpenKeyFile: a service key others may read is no
// secret; counterd does not start with it.
func TestCounterdRefusesAnOpenKeyFile(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "service.key")
	if err := os.WriteFile(keyFile, make([]byte, auth.KeyLen), 0o644); err != nil {
		t.Fatal(err)
	}
	err := cmdCounterd(context.Background(), counterTestEnv(nil, io.Discard, io.Discard),
		[]string{"--db", "postgres://x@127.0.0.1:1/db", "--service-key-file", keyFile})
	if err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("counterd with a 0644 key file: %v, want a refusal naming the mode", err)
	}
}

func TestWarnArgvPasswords(t *testing.T) {
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--db", "postgres://app:secret@h/db"}, true},
		{[]string{"--db=host=h password=secret dbname=x"}, true},
		{[]string{"--main-db", "postgres://app@h/db"}, false},
		{[]string{"--http", "a:b@c"}, false},
	} {
		var logs syncBuffer
		warnArgvPasswords(counterTestEnv(nil, io.Discard, &logs), tc.args, "db", "main-db")
		if got := strings.Contains(logs.String(), "password is on the command line"); got != tc.warn {
			t.Errorf("%q: warned %v, want %v", tc.args, got, tc.warn)
		}
		if strings.Contains(logs.String(), "secret") {
			t.Errorf("%q: the warning repeats the password: %s", tc.args, logs.String())
		}
	}
}

func newTestUUID(t *testing.T) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// waitCounterCond polls cond until it holds or the timeout passes.
func waitCounterCond(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counterAdminExec returns a function that runs a statement on dsn.
func counterAdminExec(t *testing.T, dsn string) func(sql string, args ...any) {
	t.Helper()
	db, err := dbroute.Open(context.Background(), dbroute.Config{Name: "admin", Primary: dsn, MaxConns: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return func(sql string, args ...any) {
		t.Helper()
		err := db.ReadPrimary(context.Background(), func(q dbroute.Querier) error {
			_, err := q.Exec(context.Background(), sql, args...)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}
