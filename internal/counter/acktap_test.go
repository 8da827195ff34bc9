package counter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/drill"
)

// ackTap stands on the wire between the relay and counterd and records
// every event counterd acknowledged (applied, stale or duplicate): the
// events the relay may delete from the outbox, which the counter primary
// must therefore hold. It records an event once counterd answered, before
// the relay hears the answer, so an acknowledgment the relay never
// received is recorded too.
type ackTap struct {
	t      testing.TB
	target string
	srv    *httptest.Server
	fwd    *http.Client

	mu    sync.Mutex
	seen  map[string]bool
	acked []counter.Event
}

// newAckTap starts a tap forwarding to counterd at addr (host:port).
func newAckTap(t testing.TB, addr string) *ackTap {
	a := &ackTap{t: t, target: "http://" + addr, fwd: &http.Client{Timeout: 30 * time.Second}, seen: map[string]bool{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.forward))
	t.Cleanup(a.srv.Close)
	t.Cleanup(a.fwd.CloseIdleConnections)
	return a
}

// URL is the base URL the relay is given instead of counterd's.
func (a *ackTap) URL() string { return a.srv.URL }

func (a *ackTap) forward(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, a.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := a.fwd.Do(req)
	if err != nil {
		// counterd is down: the relay sees a 5xx and retries.
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/events" && resp.StatusCode == http.StatusOK {
		a.record(body, answer)
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

// record adds the events of a batch that counterd's answer acknowledged.
func (a *ackTap) record(body, answer []byte) {
	var b counter.Batch
	var res counter.BatchResult
	if err := json.Unmarshal(body, &b); err != nil {
		a.t.Errorf("ack tap: a batch it cannot read: %v", err)
		return
	}
	if err := json.Unmarshal(answer, &res); err != nil || len(res.Results) != len(b.Events) {
		a.t.Errorf("ack tap: an answer it cannot read (%v): %.200s", err, answer)
		return
	}
	for i, r := range res.Results {
		if r.ID != b.Events[i].ID {
			a.t.Errorf("ack tap: result %d is of event %s, the batch sent %s", i, r.ID, b.Events[i].ID)
			continue
		}
		if r.Delivered() {
			a.add(b.Events[i])
		}
	}
}

// add records an event counterd acknowledged outside the tap (a read
// receipt the test applied itself, as the API does).
func (a *ackTap) add(e counter.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.seen[e.ID] {
		a.seen[e.ID] = true
		a.acked = append(a.acked, e)
	}
}

// events returns every event acknowledged so far, each once, in the order
// of the acknowledgments.
func (a *ackTap) events() []counter.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]counter.Event(nil), a.acked...)
}

// startTappedRelay starts the relay (for a stack made with noRelay) so that
// it reaches counterd through a new ackTap, and returns the tap.
func (s *stack) startTappedRelay(t testing.TB) *ackTap {
	t.Helper()
	tap := newAckTap(t, s.counterdAddr)
	s.relay = startProc(t, "relay", nil, envMainDB+"="+s.relayDSN, envCounterURL+"="+tap.URL(),
		envMaxAttempts+"="+strconv.Itoa(s.maxAttempts))
	return tap
}

// waitDrained waits until the relay delivered every event of the outbox.
func (s *stack) waitDrained(t testing.TB, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the outbox drained", func() error {
		if n := s.outboxLen(t); n > 0 {
			return fmt.Errorf("%d events in the outbox", n)
		}
		return nil
	})
}

// primaryInbox reads the inbox and counters on the counter primary.
func (s *stack) primaryInbox(t testing.TB) drill.Inbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var in drill.Inbox
	err := s.counterDB.ReadPrimary(ctx, func(q dbroute.Querier) error {
		var err error
		in, err = drill.ReadInbox(ctx, q, nil)
		return err
	})
	if err != nil {
		t.Fatalf("read the counter primary: %v", err)
	}
	return in
}

// describeLost lists lost events one a line.
func describeLost(lost []drill.LostEvent) string {
	lines := make([]string, len(lost))
	for i, l := range lost {
		lines[i] = l.String()
	}
	return strings.Join(lines, "\n")
}

// recordedStates returns each direction's last state number in the
// dialogs database (dialog_unread.seq).
func (s *stack) recordedStates(t testing.TB) map[drill.Direction]int64 {
	t.Helper()
	rows, err := s.admin.Query(context.Background(), `SELECT user_id::text, peer_id::text, seq FROM dialog_unread`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[drill.Direction]int64{}
	for rows.Next() {
		var d drill.Direction
		var seq int64
		if err := rows.Scan(&d.User, &d.Peer, &seq); err != nil {
			t.Fatal(err)
		}
		out[d] = seq
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
