package social

import (
	"context"
	"time"
)

// MaxUnreadDialogs bounds the dialogs an unread summary lists; Total still
// counts every dialog.
const MaxUnreadDialogs = 1000

// DialogUnread is how many messages from one peer a user has not read.
type DialogUnread struct {
	PeerID string
	Unread int
}

// Unread is a user's unread messages: the sum over all dialogs and the
// dialogs the counter service knows, most unread first. A dialog that is not
// listed has no unread messages.
type Unread struct {
	Total   int
	Dialogs []DialogUnread
}

// ReadReceipt is what marking a dialog read did: how many messages went from
// unread to read, and the event that carries the dialog's new unread state to
// the counter service. Seq orders the states of one dialog (user, peer): the
// counter keeps the state with the highest Seq it has seen.
type ReadReceipt struct {
	EventID  string    // id of the outbox event, the counter service's idempotency key
	OutboxID int64     // position of the event in the outbox
	UserID   string    // the reader
	PeerID   string    // whose messages were read
	Count    int       // messages that went from unread to read
	Seq      int64     // the dialog's state number after the read
	Unread   int       // unread messages from PeerID to UserID after the read
	At       time.Time // when the read was recorded
}

// DialogReader marks dialogs read.
type DialogReader interface {
	// MarkRead marks every message from peerID to userID as read, in one
	// transaction with the event that tells the counter service. Marking a
	// dialog with nothing unread is not an error and still returns a
	// receipt. Returns EINVALID for an id that is not a UUID or when the
	// two are the same user, ENOTFOUND when either user does not exist,
	// EUNAVAILABLE when the database cannot take the write.
	MarkRead(ctx context.Context, userID, peerID string) (ReadReceipt, error)
}

// UnreadCounter is the counter service as the API sees it.
type UnreadCounter interface {
	// Unread returns userID's unread messages per dialog and in total.
	// Returns EINVALID for an id that is not a UUID, EUNAVAILABLE when the
	// counter service cannot answer.
	Unread(ctx context.Context, userID string) (Unread, error)
	// ApplyRead makes the counter reflect r now, without waiting for the
	// outbox relay, so that the reader's next Unread sees it. Applying a
	// receipt twice, or after the relay delivered it, changes nothing.
	// Returns EUNAVAILABLE when the counter service cannot take it.
	ApplyRead(ctx context.Context, r ReadReceipt) error
}
