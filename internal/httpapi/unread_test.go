package httpapi_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/httpapi"
	"socnet/internal/pgtest"
	"socnet/internal/social"
)

// unreadEnv is the API with a counterd (served from this process, on its
// own database) and a relay delivering the API's outbox to it.
type unreadEnv struct {
	*env
	counterd *httptest.Server
	counter  *counter.Client
}

func mustUnreadEnv(t testing.TB) *unreadEnv {
	t.Helper()
	ctx := context.Background()
	log := discardLog()
	counterDSN := pgtest.MustDatabase(t)
	if err := counter.Migrate(ctx, []string{counterDSN}, log); err != nil {
		t.Fatal(err)
	}
	cdb, err := dbroute.Open(ctx, dbroute.Config{Name: "counter", Primary: counterDSN, MaxConns: 4}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cdb.Close)
	store, err := counter.NewStore(cdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := counter.NewServer(log, store, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	counterd := httptest.NewServer(h)
	t.Cleanup(counterd.Close)
	client := counter.NewClient(counterd.URL, counter.WithTimeout(time.Second))

	dsn := pgtest.MustDatabase(t)
	e := mustEnvWith(t, envOptions{dsn: dsn, wrap: func(d *httpapi.Deps) {
		d.Reader = d.Dialogs.(social.DialogReader)
		d.Unread = client
	}})
	relay, err := counter.NewRelay(counter.RelayConfig{MainDSNs: []string{dsn}, Counter: client,
		Poll: 10 * time.Millisecond, Backoff: counter.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}}, log)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		relay.Run(rctx)
	}()
	t.Cleanup(func() { stop(); <-done })
	return &unreadEnv{env: e, counterd: counterd, counter: client}
}

// unreadBody is GET /dialog/unread's answer.
type unreadBody struct {
	Total   int `json:"total"`
	Dialogs []struct {
		UserID string `json:"user_id"`
		Unread int    `json:"unread"`
	} `json:"dialogs"`
}

func (e *unreadEnv) unread(t testing.TB, token string) unreadBody {
	t.Helper()
	var u unreadBody
	e.do(t, request{method: "GET", path: "/dialog/unread", token: token}).wantStatus(t, 200).json(t, &u)
	return u
}

func (e *unreadEnv) send(t *testing.T, token, to string, n int) {
	t.Helper()
	for range n {
		e.do(t, request{method: "POST", path: "/dialog/" + to + "/send", token: token, body: map[string]string{"text": "привет"}}).
			wantStatus(t, 200)
	}
}

// unreadPairs renders an answer as "peer:n" pairs in its order, and the total.
func unreadPairs(u unreadBody, names map[string]string) []string {
	out := []string{"total:" + strconv.Itoa(u.Total)}
	for _, d := range u.Dialogs {
		out = append(out, names[d.UserID]+":"+strconv.Itoa(d.Unread))
	}
	return out
}

func TestDialogUnreadAndRead(t *testing.T) {
	e := mustUnreadEnv(t)
	me, myToken := e.mustUser(t, "Иван", "Петров")
	anna, annaToken := e.mustUser(t, "Анна", "Белова")
	boris, borisToken := e.mustUser(t, "Борис", "Волков")
	names := map[string]string{anna: "anna", boris: "boris", me: "me"}

	if diff := cmp.Diff([]string{"total:0"}, unreadPairs(e.unread(t, myToken), names)); diff != "" {
		t.Errorf("before any message (-want +got):\n%s", diff)
	}
	e.send(t, annaToken, me, 3)
	e.send(t, borisToken, me, 2)
	e.send(t, myToken, anna, 1)
	want := []string{"total:5", "anna:3", "boris:2"}
	deadline := time.Now().Add(10 * time.Second)
	for got := unreadPairs(e.unread(t, myToken), names); !cmp.Equal(want, got); got = unreadPairs(e.unread(t, myToken), names) {
		if time.Now().After(deadline) {
			t.Fatalf("unread %v; want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Reading anna's dialog shows at once; boris's is untouched. Twice is fine.
	for range 2 {
		e.do(t, request{method: "PUT", path: "/dialog/" + anna + "/read", token: myToken}).wantStatus(t, 200)
		if diff := cmp.Diff([]string{"total:2", "boris:2", "anna:0"}, unreadPairs(e.unread(t, myToken), names)); diff != "" {
			t.Errorf("right after reading anna (-want +got):\n%s", diff)
		}
	}
	// The messages are still there, and anna's own count is hers.
	var msgs []map[string]string
	e.do(t, request{method: "GET", path: "/dialog/" + anna + "/list", token: myToken}).wantStatus(t, 200).json(t, &msgs)
	if len(msgs) != 4 {
		t.Errorf("dialog with anna lists %d messages, want 4", len(msgs))
	}
	deadline = time.Now().Add(10 * time.Second)
	for got := unreadPairs(e.unread(t, annaToken), names); !cmp.Equal([]string{"total:1", "me:1"}, got); got = unreadPairs(e.unread(t, annaToken), names) {
		if time.Now().After(deadline) {
			t.Fatalf("anna's unread %v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Bad requests change no row (once the relay has drained the outbox).
	deadline = time.Now().Add(10 * time.Second)
	for e.mustCounts(t).Outbox > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the outbox did not drain")
		}
		time.Sleep(20 * time.Millisecond)
	}
	bad := []struct {
		path, token string
		status      int
	}{
		{"/dialog/not-a-uuid/read", myToken, 400},
		{"/dialog/" + me + "/read", myToken, 400},
		{"/dialog/01900000-0000-7000-8000-000000000001/read", myToken, 404},
		{"/dialog/" + anna + "/read", "", 401},
	}
	for _, b := range bad {
		before := e.mustCounts(t)
		e.do(t, request{method: "PUT", path: b.path, token: b.token}).wantStatus(t, b.status)
		if after := e.mustCounts(t); after != before {
			t.Errorf("PUT %s changed rows from %+v to %+v", b.path, before, after)
		}
	}
	e.do(t, request{method: "GET", path: "/dialog/unread"}).wantStatus(t, 401)
}

func TestDialogUnreadWithCounterDown(t *testing.T) {
	e := mustUnreadEnv(t)
	me, myToken := e.mustUser(t, "Иван", "Петров")
	anna, annaToken := e.mustUser(t, "Анна", "Белова")
	e.send(t, annaToken, me, 2)
	e.counterd.Close()

	r := e.do(t, request{method: "GET", path: "/dialog/unread", token: myToken}).wantStatus(t, 503)
	if got := r.error(t); got.Kind != social.EUNAVAILABLE {
		t.Errorf("GET /dialog/unread with counterd down: %+v", got)
	}
	r = e.do(t, request{method: "PUT", path: "/dialog/" + anna + "/read", token: myToken}).wantStatus(t, 503)
	if got := r.error(t); !strings.Contains(got.Message, "repeat the request") {
		t.Errorf("PUT read with counterd down: %+v; want a message that asks to repeat it", got)
	}
	// The read itself is committed; the relay will deliver it.
	var unread int
	err := e.db.ReadPrimary(context.Background(), func(q dbroute.Querier) error {
		return q.QueryRow(context.Background(), `SELECT count(*) FROM messages WHERE to_user_id = $1 AND read_at IS NULL`, me).Scan(&unread)
	})
	if err != nil || unread != 0 {
		t.Errorf("%d messages unread after the read (%v), want 0", unread, err)
	}
}

// BenchmarkDialogUnread measures GET /dialog/unread through the whole API
// (bearer token, the counter client, counterd, its database) with 32
// concurrent keep-alive connections over 2000 users with 5 dialogs each.
// counterd runs in this process on one PostgreSQL node; see
// internal/counter's BenchmarkCounterReads for counterd alone on a replica.
//
//	go test -run '^$' -bench DialogUnread -benchtime 20000x ./internal/httpapi/
func BenchmarkDialogUnread(b *testing.B) {
	e := mustUnreadEnv(b)
	ctx := context.Background()
	const users, dialogs = 2000, 5
	ids := make([]string, users)
	tokens := make([]string, users)
	for i := range ids {
		u := social.User{FirstName: "Имя", SecondName: strconv.Itoa(i), Birthdate: time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)}
		if err := e.users.CreateUser(ctx, &u, []byte("x")); err != nil {
			b.Fatal(err)
		}
		ids[i] = u.ID
		tok, err := e.tokens.Issue(u.ID)
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = tok
	}
	var batch []counter.Event
	for i, u := range ids {
		for d := 1; d <= dialogs; d++ {
			id, _ := uuid.NewV7()
			batch = append(batch, counter.Event{ID: id.String(), Kind: counter.KindMessageSent, UserID: u,
				PeerID: ids[(i+d)%users], Seq: 1, Unread: d})
		}
		if len(batch) >= counter.MaxBatch-dialogs || i == users-1 {
			if _, err := e.counter.Apply(ctx, counter.Batch{Events: batch}); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	hist := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	var mu sync.Mutex
	var failed atomic.Int64
	b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
		rng := rand.New(rand.NewPCG(rand.Uint64(), 3))
		for pb.Next() {
			req, _ := http.NewRequest("GET", e.base+"/dialog/unread", nil)
			req.Header.Set("Authorization", "Bearer "+tokens[rng.IntN(users)])
			t0 := time.Now()
			resp, err := hc.Do(req)
			if err != nil {
				failed.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed.Add(1)
				continue
			}
			local.RecordValue(time.Since(t0).Microseconds())
		}
		mu.Lock()
		hist.Merge(local)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Errorf("%d requests failed", n)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
	b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
}
