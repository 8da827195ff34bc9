package counter

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"socnet/internal/postgres"
	"socnet/internal/social"
)

// Event kinds: the outbox kinds of the dialogs database that change unread
// counts.
const (
	KindMessageSent = postgres.OutboxMessageSent // one more unread message
	KindDialogRead  = postgres.OutboxDialogRead  // the reader read the dialog
	KindUnreadReset = postgres.OutboxUnreadReset // reconciliation set the truth
)

// MaxBatch is the most events one POST /events may carry.
const MaxBatch = 1000

// Bounds of an event's state, what the dialogs database can produce
// (docs/COUNTER.md, "Bounds"). A direction's seq grows by one per
// transaction about it: 2^53 is 285 years of a million events a second on
// one dialog, far below bigint's 2^63-1, so seq+1 can never overflow there
// or here, and it is exact in every JSON reader. Unread is a count of
// messages kept as integer in dialog_unread and counters.
const (
	MaxSeq    int64 = 1 << 53
	MaxUnread       = 1<<31 - 1
)

// Event tells counterd the state of one direction of a dialog (UserID reads
// what PeerID sends) after one transaction of the dialogs database: Unread
// messages, as state number Seq of that direction. Events of one direction
// may arrive in any order and more than once; the counter keeps the state
// with the highest Seq.
type Event struct {
	// ID is the event's UUID, the key of the inbox: an event applied once
	// is a duplicate ever after.
	ID string `json:"id"`
	// OutboxID is the event's position in the outbox (0 when unknown).
	OutboxID int64  `json:"outbox_id"`
	Kind     string `json:"kind"`
	UserID   string `json:"user_id"`
	PeerID   string `json:"peer_id"`
	Seq      int64  `json:"seq"`
	Unread   int    `json:"unread"`
	// CommittedAt is when the dialogs transaction that wrote the event
	// started (its now()); delivery latency is measured from it.
	CommittedAt time.Time `json:"committed_at"`
}

// Batch is the body of POST /events.
type Batch struct {
	Events []Event `json:"events"`
	// Session, when set, is the dbroute session (a user id) the apply is
	// recorded under: that user's next counter read waits for a replica
	// that has replayed it, or goes to the primary.
	Session string `json:"session,omitempty"`
}

// Outcomes of one event in a batch.
const (
	OutcomeApplied   = "applied"   // the counter now holds the event's state
	OutcomeStale     = "stale"     // first delivery, but a newer state was already applied
	OutcomeDuplicate = "duplicate" // delivered before: nothing changed
	OutcomeRejected  = "rejected"  // invalid: it will never apply (Reason says why)
	OutcomeFailed    = "failed"    // could not be applied now (Reason says why); retry
)

// Result is what happened to one event.
type Result struct {
	ID      string `json:"id"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
}

// Delivered reports whether the sender may forget the event: it was applied,
// found stale or found a duplicate.
func (r Result) Delivered() bool {
	return r.Outcome == OutcomeApplied || r.Outcome == OutcomeStale || r.Outcome == OutcomeDuplicate
}

// BatchResult is the answer of POST /events, one Result per event in order.
type BatchResult struct {
	Results []Result `json:"results"`
}

// Validate returns why e can never be applied, or "" if it can. The checks
// are plain ifs, in order, so that each one's condition is its own
// statement (mutation testing sees it covered).
func (e Event) Validate() string {
	if !isUUID(e.ID) {
		return "id must be a UUID"
	}
	if e.Kind != KindMessageSent && e.Kind != KindDialogRead && e.Kind != KindUnreadReset {
		return fmt.Sprintf("kind %q is not one of %s, %s, %s", truncate(e.Kind, 40), KindMessageSent, KindDialogRead, KindUnreadReset)
	}
	if !isUUID(e.UserID) {
		return "user_id must be a UUID"
	}
	if !isUUID(e.PeerID) {
		return "peer_id must be a UUID"
	}
	if e.UserID == e.PeerID {
		return "user_id and peer_id must differ"
	}
	if e.Seq < 1 {
		return "seq must be at least 1"
	}
	if e.Seq > MaxSeq {
		return fmt.Sprintf("seq must be at most %d", MaxSeq)
	}
	if e.Unread < 0 {
		return "unread must not be negative"
	}
	if e.Unread > MaxUnread {
		return fmt.Sprintf("unread must be at most %d", MaxUnread)
	}
	if e.OutboxID < 0 {
		return "outbox_id must not be negative"
	}
	return ""
}

// EventFromReceipt is the event a read receipt describes, for applying it
// directly (social.UnreadCounter.ApplyRead).
func EventFromReceipt(r social.ReadReceipt) Event {
	return Event{
		ID: r.EventID, OutboxID: r.OutboxID, Kind: KindDialogRead,
		UserID: r.UserID, PeerID: r.PeerID, Seq: r.Seq, Unread: r.Unread, CommittedAt: r.At,
	}
}

// isUUID reports whether s is a UUID in its canonical lower-case form, the
// only form the dialogs database writes.
func isUUID(s string) bool {
	if len(s) != 36 || uuid.Validate(s) != nil {
		return false
	}
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'F' {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes for echoing client input in errors.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
