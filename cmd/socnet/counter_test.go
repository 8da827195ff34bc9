package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"socnet/internal/auth"
	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/drill"
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

// onePrimary is a drill.Cluster of one node, the primary, for the counter
// check (it only lists nodes).
type onePrimary struct {
	drill.Cluster
	name, dsn string
}

func (o onePrimary) Name() string { return o.name }

func (o onePrimary) Nodes(context.Context) ([]drill.Node, error) {
	return []drill.Node{{Name: o.name + "-1", Role: drill.RolePrimary, DSN: o.dsn}}, nil
}

// counterServices is the unread counter's saga run as the commands run it:
// the API (socnet serve), counterd and the relay on two test databases.
type counterServices struct {
	api, mainDSN, counterDSN string
}

// startCounterServices starts the API, counterd and the relay, and stops
// them when the test ends, failing it if one ended with an error.
func startCounterServices(t *testing.T) counterServices {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := counterServices{mainDSN: pgtest.MustDatabase(t), counterDSN: pgtest.MustDatabase(t)}
	if err := postgres.Migrate(ctx, s.mainDSN, slog.New(slog.DiscardHandler)); err != nil {
		cancel()
		t.Fatal(err)
	}
	counterAddr, relayAddr := counterTestAddr(t), counterTestAddr(t)
	keyFile := filepath.Join(t.TempDir(), "service.key")
	key, err := auth.LoadOrCreateKey(keyFile)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	vars := map[string]string{"SOCNET_DB": s.counterDSN, "SOCNET_MAIN_DB": s.mainDSN, "SOCNET_SERVICE_KEY_FILE": keyFile}
	var logs syncBuffer
	e := counterTestEnv(vars, io.Discard, &logs)
	done := make(chan error, 3)
	t.Cleanup(func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Errorf("command ended with %v", err)
			}
		}
	})
	go func() { done <- cmdCounterd(ctx, e, []string{"--http", counterAddr, "--admin-db", s.counterDSN}) }()
	go func() {
		done <- cmdRelay(ctx, e, []string{"--counter", "http://" + counterAddr, "--http", relayAddr, "--poll", "10ms"})
	}()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	go func() {
		done <- run(ctx, []string{"socnet", "serve", "--http", "127.0.0.1:0", "--db", s.mainDSN, "--admin-db", s.mainDSN,
			"--key-file", filepath.Join(dir, "token.key"), "--addr-file", addrFile, "--bcrypt-cost", "4",
			"--counter", "http://" + counterAddr, "--service-key-file", keyFile}, func(string) string { return "" }, io.Discard, &logs)
	}()
	s.api = waitAddrFile(t, addrFile, done, 30*time.Second)
	waitHealthy(t, "http://"+s.api, 10*time.Second)
	client := counter.NewClient("http://"+counterAddr, counter.WithServiceKey(key))
	defer client.Close()
	waitCounterCond(t, 30*time.Second, "counterd healthy", func() bool { return client.Healthy(ctx) == nil })
	return s
}

// TestCounterCheckSeesALostState runs the counter drill's check against the
// real commands (the API, counterd, the relay) with dialog messages sent
// through the API: clean, it passes and sends one final message per
// dialog. Then one acknowledged state is dropped from the counter
// database's inbox, a state that later messages overtook: the counts still
// agree, and the check must fail naming the lost state.
func TestCounterCheckSeesALostState(t *testing.T) {
	ctx := context.Background()
	s := startCounterServices(t)
	w := drill.NewDialogWriter(s.api, 2, 2, 15*time.Second)
	w.ReadEvery = -1 // messages only: the states are numbered 1..6
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if r := w.Write(ctx, "check-"+strconv.Itoa(i)); r.Outcome != drill.Acknowledged {
			t.Fatalf("write %d: %+v", i, r)
		}
	}
	check := &drill.CounterCheck{Dialogs: w, Counter: onePrimary{name: "counter", dsn: s.counterDSN},
		Timeout: 30 * time.Second, Poll: 50 * time.Millisecond}
	main := onePrimary{name: "main", dsn: s.mainDSN}

	v := check.Check(ctx, main, time.Now())
	if len(v.Problems) != 0 || v.Inbox == nil || v.Inbox.States != 6 || len(v.Inbox.Lost) != 0 || v.Inbox.Primary != "counter-1" ||
		v.FinalMessages != 2 || v.FinalSettledMS == nil || v.Reads == nil || v.Reads.Sent != 0 {
		t.Fatalf("clean check: %+v, inbox %+v, reads %+v", v, v.Inbox, v.Reads)
	}

	// The second state of the first sender's dialog (its second message)
	// disappears from the inbox; the counter holds later states.
	sender := w.Senders()[0]
	admin := counterAdminExec(t, s.counterDSN)
	admin(`DELETE FROM inbox WHERE user_id = $1 AND peer_id = $2 AND seq = 2`, w.Recipient(), sender)
	v = check.Check(ctx, main, time.Now())
	want := []drill.LostEvent{{Direction: drill.Direction{User: w.Recipient(), Peer: sender}, Seq: 2, Reason: "not in the inbox"}}
	if v.Inbox == nil {
		t.Fatalf("no inbox verdict: %+v", v)
	}
	if diff := cmp.Diff(want, v.Inbox.Lost); diff != "" {
		t.Errorf("lost (-want +got):\n%s", diff)
	}
	if v.Drift != 0 || len(v.Problems) != 1 || !strings.Contains(v.Problems[0], "counter primary counter-1 lost 1 of the 8 states") {
		t.Errorf("counts drift %d (want 0: they cannot see it); problems %q", v.Drift, v.Problems)
	}
}

// TestCounterCheckSeesALostReadMark runs the drill's dialog writer with its
// read marks against the real commands, and the counter check: clean, every
// acknowledged read mark is found on the counter primary. Then the effect
// of an acknowledged read mark is dropped from the counter database twice:
// the event of one that a later message overtook (the counts still agree),
// and the whole effect of one that nothing followed (its event, and the
// counter set back to its count before). The check must name the read mark
// each time.
func TestCounterCheckSeesALostReadMark(t *testing.T) {
	ctx := context.Background()
	s := startCounterServices(t)
	w := drill.NewDialogWriter(s.api, 2, 2, 15*time.Second)
	w.ReadEvery = 3
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	recipient, senders := w.Recipient(), w.Senders()
	write := func(n int) {
		t.Helper()
		for i := range n {
			if r := w.Write(ctx, "read-check-"+strconv.Itoa(i)); r.Outcome != drill.Acknowledged {
				t.Fatalf("write %d: %+v", i, r)
			}
		}
	}
	marks := func() []drill.ReadMark {
		t.Helper()
		ms, err := w.ReadMarks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Outcome != drill.Acknowledged {
				t.Fatalf("read mark not acknowledged: %+v", m)
			}
		}
		return ms
	}
	markRead := func(peer string) drill.ReadMark {
		t.Helper()
		m := w.MarkRead(ctx, peer)
		if m.Outcome != drill.Acknowledged {
			t.Fatalf("read mark: %+v", m)
		}
		return m
	}
	// Six sends start read marks after the third and the sixth (the
	// second unless the first is still in flight). Then the first sender's
	// dialog is read once more, and a message of each sender follows.
	write(6)
	if n := len(marks()); n < 1 {
		t.Fatalf("%d read marks after 6 sends with ReadEvery 3", n)
	}
	overtaken := markRead(senders[0])
	write(2)
	check := &drill.CounterCheck{Dialogs: w, Counter: onePrimary{name: "counter", dsn: s.counterDSN},
		Timeout: 30 * time.Second, Poll: 50 * time.Millisecond}
	main := onePrimary{name: "main", dsn: s.mainDSN}

	v := check.Check(ctx, main, time.Now())
	ms := marks()
	if len(v.Problems) != 0 || v.Reads == nil || v.Reads.Primary != "counter-1" || v.Reads.Sent != len(ms) ||
		v.Reads.Acknowledged != len(ms) || len(v.Reads.Lost) != 0 {
		t.Fatalf("clean check of %d read marks: problems %q, reads %+v", len(ms), v.Problems, v.Reads)
	}

	// The event of the overtaken read mark disappears from the inbox: it is
	// the last read of its dialog, and messages came after it.
	admin := counterAdminExec(t, s.counterDSN)
	admin(`DELETE FROM inbox WHERE user_id = $1 AND peer_id = $2 AND kind = 'dialog_read'
		AND seq = (SELECT max(seq) FROM inbox WHERE user_id = $1 AND peer_id = $2 AND kind = 'dialog_read')`, recipient, senders[0])
	v = check.Check(ctx, main, time.Now())
	noEvent := "no dialog_read event of its dialog committed while it was in flight is in the inbox"
	want := []drill.LostRead{{ReadMark: overtaken, User: recipient, Reason: noEvent}}
	if v.Reads == nil {
		t.Fatalf("no read verdict: %+v", v)
	}
	if diff := cmp.Diff(want, v.Reads.Lost); diff != "" {
		t.Errorf("lost read marks (-want +got):\n%s", diff)
	}
	if v.Drift != 0 || !slices.ContainsFunc(v.Problems, func(p string) bool {
		return strings.Contains(p, "does not reflect 1 of the "+strconv.Itoa(len(ms))+" acknowledged read marks") &&
			strings.Contains(p, "read mark of user "+recipient+" reading "+senders[0])
	}) {
		t.Errorf("counts drift %d (want 0: they cannot see it); problems %q", v.Drift, v.Problems)
	}

	// The second sender's dialog is read, nothing follows, and the counter
	// primary loses the read mark whole: its event, and the count goes
	// back. The relay must have delivered the event first, or it would
	// apply it again.
	var before struct {
		unread int
		seq    int64
	}
	counterScan, mainScan := counterAdminScan(t, s.counterDSN), counterAdminScan(t, s.mainDSN)
	counterScan(`SELECT unread, seq FROM counters WHERE user_id = $1 AND peer_id = $2`, []any{recipient, senders[1]},
		&before.unread, &before.seq)
	if before.unread == 0 {
		t.Fatalf("the second sender's dialog has no unread message to read")
	}
	lostWhole := markRead(senders[1])
	waitCounterCond(t, 30*time.Second, "the outbox drained", func() bool {
		var n int
		mainScan(`SELECT count(*) FROM outbox WHERE payload->>'user_id' = $1`, []any{recipient}, &n)
		return n == 0
	})
	admin(`DELETE FROM inbox WHERE user_id = $1 AND peer_id = $2 AND seq > $3`, recipient, senders[1], before.seq)
	admin(`UPDATE counters SET unread = $3, seq = $4 WHERE user_id = $1 AND peer_id = $2`, recipient, senders[1], before.unread, before.seq)
	check.Timeout = 10 * time.Second // the counts will not agree
	v = check.Check(ctx, main, time.Now())
	want = []drill.LostRead{
		{ReadMark: overtaken, User: recipient, Reason: noEvent}, // still lost
		{ReadMark: lostWhole, User: recipient, Reason: noEvent},
		{ReadMark: lostWhole, User: recipient, Reason: fmt.Sprintf(
			"the counter holds %d unread (seq %d), more than the 0 message(s) of the dialog not acknowledged before the read mark", before.unread, before.seq)},
	}
	if v.Reads == nil {
		t.Fatalf("no read verdict: %+v", v)
	}
	byPeerAndReason := cmpopts.SortSlices(func(a, b drill.LostRead) bool { return a.Peer+a.Reason < b.Peer+b.Reason })
	if diff := cmp.Diff(want, v.Reads.Lost, byPeerAndReason); diff != "" {
		t.Errorf("lost read marks (-want +got):\n%s", diff)
	}
}

// counterAdminScan returns a function that scans the row a query returns
// on dsn into dest.
func counterAdminScan(t *testing.T, dsn string) func(sql string, args []any, dest ...any) {
	t.Helper()
	db, err := dbroute.Open(context.Background(), dbroute.Config{Name: "admin", Primary: dsn, MaxConns: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return func(sql string, args []any, dest ...any) {
		t.Helper()
		err := db.ReadPrimary(context.Background(), func(q dbroute.Querier) error {
			return q.QueryRow(context.Background(), sql, args...).Scan(dest...)
		})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}
