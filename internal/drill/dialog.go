package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults of a DialogWriter.
const (
	// DefaultDialogSenders is how many users a DialogWriter sends from.
	DefaultDialogSenders = 4
	// DefaultReadEvery is how many sends a DialogWriter makes per read
	// mark.
	DefaultReadEvery = 5
)

// DialogWriter sends dialog messages through the socnet API, each with its
// tag as the text, from a few drill users in turn to one drill recipient.
// Every message travels the unread counter's saga: the message and its
// outbox event commit together in the main database, the relay delivers the
// event to the counter service, and the counter service applies it in the
// counter database. So a drill that kills a counter node with these writes
// breaks the counters under real traffic, while the messages themselves,
// the acknowledged writes, live in the main database.
//
// Every ReadEvery-th send is followed by a read mark of its dialog
// (PUT /dialog/{sender}/read as the recipient), which the API applies to
// the counter service before it answers. A read mark runs on its own, so
// that a counter outage does not stall the sends, and at most one is in
// flight: a send that finds one running marks nothing. Each read mark is
// recorded (ReadMarks) for the CounterCheck.
type DialogWriter struct {
	// ReadEvery is how many sends make one read mark: 0 means
	// DefaultReadEvery, a negative number no read marks. Set it before the
	// first Write.
	ReadEvery int

	api     *apiClient
	senders int
	next    atomic.Uint64
	reading chan struct{} // holds a token while a read mark is in flight

	mu        sync.Mutex
	recipient apiUser        // set once the users are signed up
	from      []apiUser      // the senders, in turn
	acked     map[string]int // acknowledged sends by sender
	reads     []ReadMark
}

// ReadMark is one PUT /dialog/{peer}/read that a DialogWriter sent as its
// recipient, with what it saw.
type ReadMark struct {
	// Peer is the sender whose messages the recipient marked read.
	Peer    string  `json:"peer"`
	Outcome Outcome `json:"outcome"`
	// Error is the error class of a read mark that was not acknowledged.
	Error string `json:"error,omitempty"`
	// Start is when the request was sent, End when its answer (or error)
	// came: an acknowledged read mark committed in between.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// SentBefore counts the messages from Peer acknowledged before Start:
	// the read mark marked each of them read.
	SentBefore int `json:"sent_before"`
}

// NewDialogWriter returns a writer to the API at addr (host:port or a base
// URL) sending from senders users (DefaultDialogSenders when < 1). timeout
// bounds one request; it should exceed the API's own write timeout so that
// the API, not the client, reports a commit in doubt.
func NewDialogWriter(addr string, senders, conns int, timeout time.Duration) *DialogWriter {
	if senders < 1 {
		senders = DefaultDialogSenders
	}
	return &DialogWriter{api: newAPIClient(addr, conns, timeout), senders: senders,
		reading: make(chan struct{}, 1), acked: map[string]int{}}
}

// Setup registers the recipient and the senders through the API and logs
// them in, once: later calls return at once. A drill calls it before it
// starts writing, so that the bcrypt of registrations and logins is not
// part of the run; Write calls it too.
func (w *DialogWriter) Setup(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.recipient.token != "" {
		return nil
	}
	recipient, from, err := w.api.signUpGroup(ctx, "Recipient", "Sender", w.senders)
	if err != nil {
		return err
	}
	w.recipient, w.from = recipient, from
	return nil
}

// users returns the recipient and the senders once signed up.
func (w *DialogWriter) users(ctx context.Context) (apiUser, []apiUser, error) {
	if err := w.Setup(ctx); err != nil {
		return apiUser{}, nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.recipient, w.from, nil
}

// Describe says what a write is.
func (w *DialogWriter) Describe() string {
	d := fmt.Sprintf("POST /dialog/{recipient}/send through the API at %s from %d senders in turn to one recipient (tag as the text)",
		w.api.base, w.senders)
	if every := w.readEvery(); every > 0 {
		d += fmt.Sprintf("; every %d sends, PUT /dialog/{sender}/read as the recipient", every)
	}
	return d
}

// readEvery returns ReadEvery with its default; 0 means no read marks.
func (w *DialogWriter) readEvery() int {
	switch {
	case w.ReadEvery == 0:
		return DefaultReadEvery
	case w.ReadEvery < 0:
		return 0
	}
	return w.ReadEvery
}

// Write sends one message whose text is tag from the next sender to the
// recipient. POST is not idempotent, so net/http never resends it on its
// own. Until the users are signed up, a write fails without reaching the
// database. Every ReadEvery-th write then starts a read mark of its
// sender's dialog, unless one is in flight; the result is the send's.
func (w *DialogWriter) Write(ctx context.Context, tag string) WriteResult {
	to, from, err := w.users(ctx)
	if err != nil {
		return WriteResult{Outcome: Failed, Error: "no session"}
	}
	n := w.next.Add(1)
	sender := from[(n-1)%uint64(len(from))]
	res, _ := w.send(ctx, sender, to, tag)
	if every := w.readEvery(); every > 0 && n%uint64(every) == 0 {
		select {
		case w.reading <- struct{}{}:
			go func() {
				defer func() { <-w.reading }()
				w.MarkRead(ctx, sender.id)
			}()
		default: // one is in flight
		}
	}
	return res
}

// send sends one message from sender to to, once, and counts it for the
// read marks when it is acknowledged. It returns the result and, for an
// answer that is not a success, the start of its body.
func (w *DialogWriter) send(ctx context.Context, sender, to apiUser, text string) (WriteResult, string) {
	body, _ := json.Marshal(map[string]string{"text": text})
	status, data, err := w.api.do(ctx, http.MethodPost, "/dialog/"+to.id+"/send", sender.token, body)
	res := httpResult(status, err)
	if res.Outcome != Acknowledged {
		return res, fmt.Sprintf("%.200s", data)
	}
	w.mu.Lock()
	w.acked[sender.id]++
	w.mu.Unlock()
	return res, ""
}

// MarkRead marks the dialog with peer read as the recipient
// (PUT /dialog/{peer}/read), once, records the read mark and returns it.
// Like a send, it is never retried.
func (w *DialogWriter) MarkRead(ctx context.Context, peer string) ReadMark {
	to, _, err := w.users(ctx)
	if err != nil {
		return ReadMark{Peer: peer, Outcome: Failed, Error: "no session"}
	}
	w.mu.Lock()
	m := ReadMark{Peer: peer, SentBefore: w.acked[peer]}
	w.mu.Unlock()
	m.Start = time.Now()
	status, _, err := w.api.do(ctx, http.MethodPut, "/dialog/"+peer+"/read", to.token, nil)
	m.End = time.Now()
	res := httpResult(status, err)
	m.Outcome, m.Error = res.Outcome, res.Error
	w.mu.Lock()
	w.reads = append(w.reads, m)
	w.mu.Unlock()
	return m
}

// ReadMarks waits for the read mark in flight, if any, and returns every
// read mark recorded so far, in the order they ended. Call it once the
// writes have stopped.
func (w *DialogWriter) ReadMarks(ctx context.Context) ([]ReadMark, error) {
	select {
	case w.reading <- struct{}{}:
		<-w.reading
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the read mark in flight: %w", ctx.Err())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.reads), nil
}

// Tagged returns the messages to the recipient whose text starts with
// prefix, with their ids.
func (w *DialogWriter) Tagged(ctx context.Context, conn *pgx.Conn, prefix string) ([]Row, error) {
	return queryRows(ctx, conn, `SELECT text, id::text FROM messages WHERE text LIKE $1`, likePrefix(prefix))
}

// Recipient returns the recipient's user id, "" before Setup.
func (w *DialogWriter) Recipient() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.recipient.id
}

// Senders returns the senders' user ids, nil before Setup.
func (w *DialogWriter) Senders() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.from))
	for _, u := range w.from {
		ids = append(ids, u.id)
	}
	return ids
}

// Unread asks the API, as the recipient, for the unread counts
// (GET /dialog/unread, answered by the counter service) and returns them by
// sender. A sender the counter service does not list has none.
func (w *DialogWriter) Unread(ctx context.Context) (map[string]int, error) {
	to, _, err := w.users(ctx)
	if err != nil {
		return nil, err
	}
	status, data, err := w.api.do(ctx, http.MethodGet, "/dialog/unread", to.token, nil)
	if err != nil {
		return nil, fmt.Errorf("GET /dialog/unread: %w", err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /dialog/unread: status %d: %.200s", status, data)
	}
	var u struct {
		Dialogs []struct {
			UserID string `json:"user_id"`
			Unread int    `json:"unread"`
		} `json:"dialogs"`
	}
	if err := json.Unmarshal(data, &u); err != nil {
		return nil, fmt.Errorf("GET /dialog/unread: decode: %w", err)
	}
	out := make(map[string]int, len(u.Dialogs))
	for _, d := range u.Dialogs {
		out[d.UserID] = d.Unread
	}
	return out, nil
}
