package counter_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/counter"
	"socnet/internal/pgnode"
)

// TestOutboxBacklogEstimate: the estimate spans the outbox's ids, 0 when it
// is empty, and never counts less than the events there.
func TestOutboxBacklogEstimate(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	ctx := context.Background()
	ids := s.mustUsers(t, 2)
	estimate := func() int64 {
		t.Helper()
		b, err := counter.OutboxBacklogAt(ctx, []string{s.mainDSN})
		if err != nil {
			t.Fatal(err)
		}
		if b.OldestSeconds < 0 || (b.Events == 0) != (b.OldestSeconds == 0) {
			t.Errorf("backlog %+v: the oldest event's age does not match the events", b)
		}
		return b.Events
	}
	var got []int64
	got = append(got, estimate())
	for range 5 {
		s.mustSend(t, ids[0], ids[1])
	}
	got = append(got, estimate())
	exec := func(sql string) {
		if _, err := s.admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`DELETE FROM outbox WHERE id = (SELECT min(id) FROM outbox)`)
	got = append(got, estimate()) // the oldest delivered: exact again
	exec(`DELETE FROM outbox WHERE id = (SELECT min(id) + 1 FROM outbox)`)
	got = append(got, estimate()) // a hole: an upper bound
	exec(`DELETE FROM outbox`)
	got = append(got, estimate())
	if diff := cmp.Diff([]int64{0, 5, 4, 4, 0}, got); diff != "" {
		t.Errorf("estimates (-want +got):\n%s", diff)
	}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gauge returns the value of the unlabelled gauge name on reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// TestOutboxAboveMaxBacklog is the backlog policy: with counterd down the
// outbox grows past the relay's maximum; the relay says so in its log and
// its gauge, the API's sends keep succeeding (the outbox is the record of
// what counterd is owed), and once counterd is back the backlog drains and
// the alert clears.
func TestOutboxAboveMaxBacklog(t *testing.T) {
	s := mustStack(t, stackOptions{noRelay: true})
	ctx := context.Background()
	ids := s.mustUsers(t, 2)
	port, err := pgnode.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	downAddr := "127.0.0.1:" + strconv.Itoa(port)
	logs := &lockedBuffer{}
	reg := prometheus.NewRegistry()
	relay, err := counter.NewRelay(counter.RelayConfig{
		MainDSNs: []string{s.mainDSN}, Counter: newClient("http://"+downAddr, counter.WithTimeout(time.Second)),
		Poll: 20 * time.Millisecond, Backoff: counter.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		StatsEvery: 50 * time.Millisecond, MaxBacklog: 3, Registry: reg,
	}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	defer func() { stop(); <-done }()
	overMax := func() float64 {
		t.Helper()
		return gauge(t, reg, "socnet_relay_outbox_backlog_over_max")
	}

	for range 3 {
		s.mustSend(t, ids[0], ids[1])
	}
	waitFor(t, 10*time.Second, "the relay active with the backlog at its maximum", func() error {
		if !relay.Active() || gauge(t, reg, "socnet_relay_outbox_backlog") != 3 {
			return fmt.Errorf("active %v, backlog %v", relay.Active(), gauge(t, reg, "socnet_relay_outbox_backlog"))
		}
		return nil
	})
	if relay.OverMaxBacklog() || overMax() != 0 {
		t.Errorf("a backlog at the maximum is reported over it")
	}
	for range 5 { // sending goes on over the maximum
		s.mustSend(t, ids[1], ids[0])
	}
	waitFor(t, 10*time.Second, "the alert", func() error {
		if !relay.OverMaxBacklog() || overMax() != 1 || !strings.Contains(logs.String(), "outbox backlog above its maximum") {
			return fmt.Errorf("over %v, gauge %v", relay.OverMaxBacklog(), overMax())
		}
		return nil
	})
	if n := s.outboxLen(t); n != 8 {
		t.Errorf("outbox holds %d events, want the 8 sent", n)
	}

	// counterd comes back at the address the relay delivers to.
	store, _, creg := mustStore(t)
	h, err := counter.NewServer(testLogger(t, "counterd:"), store, creg,
		counter.WithVerifier(counter.NewVerifier(serviceKey, 0, 0, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", downAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	srv.Start()
	defer srv.Close()
	waitFor(t, 30*time.Second, "the backlog drained and the alert cleared", func() error {
		if n := s.outboxLen(t); n != 0 || relay.OverMaxBacklog() || overMax() != 0 {
			return fmt.Errorf("outbox %d, over %v, gauge %v", n, relay.OverMaxBacklog(), overMax())
		}
		return nil
	})
	if !strings.Contains(logs.String(), "outbox backlog back under its maximum") {
		t.Errorf("no log line when the backlog went back under the maximum")
	}
}
