package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// DialogStore implements social.DialogStore.
type DialogStore struct {
	db *dbroute.DB
}

var _ social.DialogStore = (*DialogStore)(nil)

// NewDialogStore returns a DialogStore over db.
func NewDialogStore(db *dbroute.DB) *DialogStore { return &DialogStore{db: db} }

// OutboxMessageSent is the outbox kind of the event SendMessage writes. Its
// aggregate is DialogKey of the two users and its payload is
// {"event_id", "message_id", "from", "to", "sent_at"}: UUIDs as strings,
// sent_at as an RFC 3339 timestamp.
const OutboxMessageSent = "message_sent"

// DialogKey returns the key of the dialog between users a and b, the same
// whichever of them is given first: the lower UUID, a colon, the higher.
func DialogKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return a + ":" + b
}

// SendMessage stores m and sets m.ID and m.CreatedAt. In the same
// transaction it writes one outbox event of kind OutboxMessageSent, so the
// counter service learns of every message that exists and of no other.
// Returns ENOTFOUND when the recipient (or sender) does not exist, EINVALID
// when m.From == m.To, an id is not a UUID or the text is refused.
func (s *DialogStore) SendMessage(ctx context.Context, m *social.Message) error {
	from, err := parseID("from", m.From)
	if err != nil {
		return err
	}
	to, err := parseID("user_id", m.To)
	if err != nil {
		return err
	}
	if from == to {
		return social.Invalid(map[string]string{"user_id": "cannot send a message to yourself"})
	}
	id, err := newID()
	if err != nil {
		return err
	}
	eventID, err := newID()
	if err != nil {
		return err
	}
	var created time.Time
	err = s.db.Transact(ctx, func(tx pgx.Tx) error {
		// One statement, so one round trip; the transaction around it is
		// what makes the message and its event commit together.
		return tx.QueryRow(ctx, `WITH m AS (
				INSERT INTO messages (id, from_user_id, to_user_id, text) VALUES ($1, $2, $3, $4)
				RETURNING id, from_user_id, to_user_id, user_lo, user_hi, created_at
			), event AS (
				INSERT INTO outbox (aggregate, kind, payload)
				SELECT m.user_lo::text || ':' || m.user_hi::text, $5,
					jsonb_build_object('event_id', $6::uuid, 'message_id', m.id,
						'from', m.from_user_id, 'to', m.to_user_id,
						'sent_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
				FROM m
			)
			SELECT created_at FROM m`, id, from, to, m.Text, OutboxMessageSent, eventID).Scan(&created)
	})
	if err != nil {
		return mapError("send message", userNotFound, err)
	}
	m.ID, m.CreatedAt = id.String(), created
	return nil
}

// Dialog returns the messages between a and b, oldest first, within the
// newest social.DialogListCap of them, from the primary so that a sender
// sees the message just sent. The result is never nil; EINVALID for an id
// that is not a UUID.
func (s *DialogStore) Dialog(ctx context.Context, a, b string) ([]social.Message, error) {
	ua, err := parseID("user_id", a)
	if err != nil {
		return nil, err
	}
	ub, err := parseID("user_id", b)
	if err != nil {
		return nil, err
	}
	lo, hi := ua, ub
	if ub.String() < ua.String() {
		lo, hi = ub, ua
	}
	msgs := []social.Message{}
	err = s.db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		msgs = msgs[:0]
		rows, err := q.Query(ctx, `SELECT id, from_user_id, to_user_id, text, created_at FROM (
				SELECT id, from_user_id, to_user_id, text, created_at
				FROM messages
				WHERE user_lo = $1 AND user_hi = $2
				ORDER BY created_at DESC, id DESC
				LIMIT $3
			) newest
			ORDER BY created_at, id`, lo, hi, social.DialogListCap)
		if err != nil {
			return err
		}
		msgs, err = pgx.AppendRows(msgs, rows, func(row pgx.CollectableRow) (social.Message, error) {
			var m social.Message
			var id, from, to uuid.UUID
			err := row.Scan(&id, &from, &to, &m.Text, &m.CreatedAt)
			m.ID, m.From, m.To = id.String(), from.String(), to.String()
			return m, err
		})
		return err
	})
	if err != nil {
		return nil, mapError("dialog", userNotFound, err)
	}
	return msgs, nil
}
