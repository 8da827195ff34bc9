package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultDialogSenders is how many users a DialogWriter sends from.
const DefaultDialogSenders = 4

// DialogWriter sends dialog messages through the socnet API, each with its
// tag as the text, from a few drill users in turn to one drill recipient.
// Every message travels the unread counter's saga: the message and its
// outbox event commit together in the main database, the relay delivers the
// event to the counter service, and the counter service applies it in the
// counter database. So a drill that kills a counter node with these writes
// breaks the counters under real traffic, while the messages themselves,
// the acknowledged writes, live in the main database.
type DialogWriter struct {
	api     *apiClient
	senders int
	next    atomic.Uint64

	mu        sync.Mutex
	recipient apiUser   // set once the users are signed up
	from      []apiUser // the senders, in turn
}

// NewDialogWriter returns a writer to the API at addr (host:port or a base
// URL) sending from senders users (DefaultDialogSenders when < 1). timeout
// bounds one request; it should exceed the API's own write timeout so that
// the API, not the client, reports a commit in doubt.
func NewDialogWriter(addr string, senders, conns int, timeout time.Duration) *DialogWriter {
	if senders < 1 {
		senders = DefaultDialogSenders
	}
	return &DialogWriter{api: newAPIClient(addr, conns, timeout), senders: senders}
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
	return fmt.Sprintf("POST /dialog/{recipient}/send through the API at %s from %d senders in turn to one recipient (tag as the text)",
		w.api.base, w.senders)
}

// Write sends one message whose text is tag from the next sender to the
// recipient. POST is not idempotent, so net/http never resends it on its
// own. Until the users are signed up, a write fails without reaching the
// database.
func (w *DialogWriter) Write(ctx context.Context, tag string) WriteResult {
	to, from, err := w.users(ctx)
	if err != nil {
		return WriteResult{Outcome: Failed, Error: "no session"}
	}
	sender := from[(w.next.Add(1)-1)%uint64(len(from))]
	body, _ := json.Marshal(map[string]string{"text": tag})
	status, _, err := w.api.do(ctx, http.MethodPost, "/dialog/"+to.id+"/send", sender.token, body)
	return httpResult(status, err)
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
