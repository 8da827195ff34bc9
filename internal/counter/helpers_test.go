package counter_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"socnet/internal/auth"
	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

// serviceKey is the key every counterd of these tests requires and every
// client signs with; child processes get it in envServiceKey.
var serviceKey = func() []byte {
	k := make([]byte, auth.KeyLen)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	return k
}()

// newClient returns a client of the counterd at baseURL that signs with
// serviceKey.
func newClient(baseURL string, opts ...counter.ClientOption) *counter.Client {
	return counter.NewClient(baseURL, append([]counter.ClientOption{counter.WithServiceKey(serviceKey)}, opts...)...)
}

func testLogger(tb testing.TB, prefix string) *slog.Logger {
	return slog.New(slog.NewTextHandler(pgtest.LogWriter(tb, prefix), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// stack is the saga under test: a migrated dialogs database with its
// stores, a counter database, and counterd and the relay as child
// processes.
type stack struct {
	mainDSN     string
	relayDSN    string   // the dialogs database as the relay connects to it
	counterDSNs []string // every node of the counter database

	mainDB    *dbroute.DB
	admin     *pgxpool.Pool // the dialogs database as administrator
	users     *postgres.UserStore
	dialogs   *postgres.DialogStore
	counterDB *dbroute.DB // the counter database, for looking behind counterd

	counterdAddr   string
	client         *counter.Client
	counterd       *proc
	relay          *proc
	maxAttempts    int
	reconcileEvery time.Duration
}

// stackOptions change what mustStack builds.
type stackOptions struct {
	counterDSNs []string // default: a fresh database on pgtest's server
	maxAttempts int      // relay's; default 3
	noRelay     bool     // do not start the relay
	// relayAsApp runs the relay as the API's role (postgres.EnsureAppRole),
	// with no rights but the API's.
	relayAsApp bool
	// reconcileEvery makes counterd reconcile periodically.
	reconcileEvery time.Duration
}

func mustStack(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := &stack{mainDSN: pgtest.MustDatabase(t), counterDSNs: opts.counterDSNs, maxAttempts: opts.maxAttempts,
		reconcileEvery: opts.reconcileEvery}
	if len(s.counterDSNs) == 0 {
		s.counterDSNs = []string{pgtest.MustDatabase(t)}
	}
	if s.maxAttempts == 0 {
		s.maxAttempts = 3
	}
	log := testLogger(t, "test:")
	if err := postgres.Migrate(ctx, s.mainDSN, log); err != nil {
		t.Fatalf("migrate dialogs database: %v", err)
	}
	var err error
	if s.mainDB, err = dbroute.Open(ctx, dbroute.Config{Name: "main", Primary: s.mainDSN, MaxConns: 8}, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.mainDB.Close)
	if s.admin, err = pgxpool.New(ctx, s.mainDSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.admin.Close)
	s.users, s.dialogs = postgres.NewUserStore(s.mainDB), postgres.NewDialogStore(s.mainDB)
	if s.counterDB, err = dbroute.Open(ctx, dbroute.Config{Name: "counter", Nodes: s.counterDSNs, MaxConns: 4}, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.counterDB.Close)

	s.relayDSN = s.mainDSN
	if opts.relayAsApp {
		s.relayDSN = mustAppRole(t, s.mainDSN)
	}
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s.counterdAddr = "127.0.0.1:" + strconv.Itoa(port)
	s.client = newClient("http://" + s.counterdAddr)
	t.Cleanup(s.client.Close)
	s.startCounterd(t)
	if !opts.noRelay {
		s.startRelay(t)
	}
	return s
}

// startCounterd starts counterd and waits until it is healthy.
func (s *stack) startCounterd(t testing.TB) {
	t.Helper()
	env := []string{envHTTP + "=" + s.counterdAddr, envDB + "=" + strings.Join(s.counterDSNs, ","),
		envAdminDB + "=" + strings.Join(s.counterDSNs, ",")}
	if s.reconcileEvery > 0 {
		env = append(env, envMainDB+"="+s.mainDSN, envReconcile+"="+s.reconcileEvery.String())
	}
	s.counterd = startProc(t, "counterd", nil, env...)
	waitFor(t, 60*time.Second, "counterd healthy", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return s.client.Healthy(ctx)
	})
}

// startRelay starts the relay (it needs no readiness: it delivers when it can).
func (s *stack) startRelay(t testing.TB) {
	t.Helper()
	s.relay = startProc(t, "relay", nil, envMainDB+"="+s.relayDSN, envCounterURL+"=http://"+s.counterdAddr,
		envMaxAttempts+"="+strconv.Itoa(s.maxAttempts))
}

// mustUsers registers n users and returns their ids.
func (s *stack) mustUsers(t testing.TB, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		u := social.User{FirstName: "Пользователь", SecondName: strconv.Itoa(i + 1),
			Birthdate: time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)}
		if err := s.users.CreateUser(context.Background(), &u, []byte("$2a$10$hash")); err != nil {
			t.Fatalf("create user: %v", err)
		}
		ids[i] = u.ID
	}
	return ids
}

func (s *stack) mustSend(t testing.TB, from, to string) social.Message {
	t.Helper()
	m := social.Message{From: from, To: to, Text: "привет"}
	if err := s.dialogs.SendMessage(context.Background(), &m); err != nil {
		t.Fatalf("send %s -> %s: %v", from, to, err)
	}
	return m
}

// direction is user reading what peer sends.
type direction struct{ user, peer string }

// truth returns the unread messages of every direction that has any.
func (s *stack) truth(t testing.TB) map[direction]int {
	return s.countMessages(t, "WHERE read_at IS NULL")
}

// countMessages counts the stored messages of every direction, those that
// where selects.
func (s *stack) countMessages(t testing.TB, where string) map[direction]int {
	t.Helper()
	rows, err := s.admin.Query(context.Background(), `SELECT to_user_id::text, from_user_id::text, count(*)
		FROM messages `+where+` GROUP BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[direction]int{}
	for rows.Next() {
		var d direction
		var n int
		if err := rows.Scan(&d.user, &d.peer, &n); err != nil {
			t.Fatal(err)
		}
		out[d] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// counters returns counterd's nonzero counters, read from the counter primary.
func (s *stack) counters(t testing.TB) map[direction]int {
	t.Helper()
	out := map[direction]int{}
	err := s.counterDB.ReadPrimary(context.Background(), func(q dbroute.Querier) error {
		clear(out)
		rows, err := q.Query(context.Background(), `SELECT user_id::text, peer_id::text, unread FROM counters WHERE unread > 0`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d direction
			var n int
			if err := rows.Scan(&d.user, &d.peer, &n); err != nil {
				return err
			}
			out[d] = n
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	return out
}

// inboxLen counts the inbox rows on the counter primary.
func (s *stack) inboxLen(t testing.TB) int {
	t.Helper()
	var n int
	err := s.counterDB.ReadPrimary(context.Background(), func(q dbroute.Querier) error {
		return q.QueryRow(context.Background(), `SELECT count(*) FROM inbox`).Scan(&n)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *stack) outboxLen(t testing.TB) int {
	t.Helper()
	var n int
	if err := s.admin.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// diffCounts describes where counters and truth differ, "" when nowhere.
func diffCounts(counters, truth map[direction]int) string {
	var lines []string
	for d, n := range truth {
		if counters[d] != n {
			lines = append(lines, fmt.Sprintf("user %s peer %s: counter %d, unread %d", d.user, d.peer, counters[d], n))
		}
	}
	for d, n := range counters {
		if _, ok := truth[d]; !ok {
			lines = append(lines, fmt.Sprintf("user %s peer %s: counter %d, unread 0", d.user, d.peer, n))
		}
	}
	sort.Strings(lines)
	if len(lines) > 20 {
		lines = append(lines[:20], fmt.Sprintf("... and %d more", len(lines)-20))
	}
	return strings.Join(lines, "\n")
}

// mustConverge waits until the outbox is drained and every counter equals
// the unread messages of its direction, then checks that reconciliation
// finds no drift. It is what every saga test ends with.
func (s *stack) mustConverge(t testing.TB, timeout time.Duration) {
	t.Helper()
	var diff string
	var backlog int
	waitFor(t, timeout, "counters equal to the unread messages", func() error {
		backlog = s.outboxLen(t)
		diff = diffCounts(s.counters(t), s.truth(t))
		if backlog > 0 || diff != "" {
			return fmt.Errorf("outbox holds %d events; differences:\n%s", backlog, diff)
		}
		return nil
	})
	rep := s.reconcile(t, false)
	if len(rep.Drifts) > 0 || rep.Unsettled > 0 {
		t.Errorf("reconciliation after convergence: %d drifts, %d unsettled: %+v", len(rep.Drifts), rep.Unsettled, rep.Drifts)
	}
}

// reconcile runs a reconciliation (repairing when repair is set).
func (s *stack) reconcile(t testing.TB, repair bool) counter.ReconcileReport {
	t.Helper()
	rc, err := counter.NewReconciler([]string{s.mainDSN}, s.counterDB, nil, testLogger(t, "reconcile:"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := rc.Run(ctx, counter.ReconcileOptions{Repair: repair, DrainTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return rep
}

// metric returns the value of one series on counterd's /metrics, e.g.
// `socnet_counter_events_total{outcome="duplicate"}`.
func metric(t testing.TB, baseURL, series string) float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := counter.NewSigner(serviceKey, nil).Sign(req, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not found at %s/metrics", series, baseURL)
	return 0
}

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proc is a child process running one role of the saga.
type proc struct {
	t    testing.TB
	name string
	env  []string
	out  io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startProc starts the test binary as the role that name begins with
// ("sender-2" runs a sender) with the extra environment; stdout goes to out
// (nil: the test log), stderr to the test log. It is killed at the end of
// the test.
func startProc(t testing.TB, name string, out io.Writer, env ...string) *proc {
	t.Helper()
	role, _, _ := strings.Cut(name, "-")
	env = append([]string{roleEnv + "=" + role, envServiceKey + "=" + hex.EncodeToString(serviceKey)}, env...)
	p := &proc{t: t, name: name, env: env, out: out}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) start() {
	p.t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stderr = pgtest.LogWriter(p.t, p.name+":")
	cmd.Stdout = p.out
	if p.out == nil {
		cmd.Stdout = cmd.Stderr
	}
	// Dies with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// restart kills the process and starts it again.
func (p *proc) restart() {
	p.t.Helper()
	p.kill()
	p.start()
}

// wait waits for the process to exit on its own.
func (p *proc) wait(timeout time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	select {
	case <-done:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			return fmt.Errorf("%s exited with status %d", p.name, code)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s still runs after %v", p.name, timeout)
	}
}

// ledger collects the message ids a sender process acknowledged.
type ledger struct {
	mu   sync.Mutex
	sent []string
	done bool
	pw   *io.PipeWriter
}

func newLedger() *ledger {
	pr, pw := io.Pipe()
	l := &ledger{pw: pw}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			l.mu.Lock()
			switch {
			case strings.HasPrefix(line, "sent "):
				if id := strings.TrimPrefix(line, "sent "); uuid.Validate(id) == nil {
					l.sent = append(l.sent, id)
				}
			case line == "done":
				l.done = true
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *ledger) Write(b []byte) (int, error) { return l.pw.Write(b) }

func (l *ledger) acked() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.sent...)
}

// mustAppRole creates the API's role on the dialogs database at dsn (as
// `socnet up` does) and returns dsn with that role's credentials. The role
// is dropped at the end of the test.
func mustAppRole(t testing.TB, dsn string) string {
	t.Helper()
	ctx := context.Background()
	role := "app_" + strings.ReplaceAll(newUUID(t)[24:], "-", "")
	password := newUUID(t)
	if err := postgres.EnsureAppRole(ctx, dsn, role, password); err != nil {
		t.Fatalf("app role: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop role %s: %v", role, err)
			return
		}
		defer conn.Close(ctx)
		for _, q := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, password)
	return u.String()
}

// send sends a message, for goroutines that must not stop the test.
func (s *stack) send(from, to string) error {
	return s.dialogs.SendMessage(context.Background(), &social.Message{From: from, To: to, Text: "привет"})
}

// startTraffic runs fn(w, 0), fn(w, 1), ... in n goroutines w until the
// returned stop is called, fn returns an error (reported) or fn returns
// errDone. stop waits for them; it also runs at the end of the test, before
// the databases go.
func startTraffic(t testing.TB, n int, fn func(w, i int) error) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				if err := fn(w, i); err != nil {
					if !errors.Is(err, errDone) {
						t.Errorf("traffic: %v", err)
					}
					return
				}
			}
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// errDone ends one goroutine of startTraffic without an error.
var errDone = errors.New("done")
