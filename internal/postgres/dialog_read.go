package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/social"
)

var _ social.DialogReader = (*DialogStore)(nil)

// Outbox kinds of the unread counter besides OutboxMessageSent. Every such
// event is stamped by the database (migration 0003) with the direction of
// the dialog it changes and that direction's state after it: payload keys
// user_id (the reader), peer_id (the sender), seq and unread.
const (
	// OutboxDialogRead is written by MarkRead; its payload adds event_id,
	// count (messages that went unread -> read) and read_at.
	OutboxDialogRead = "dialog_read"
	// OutboxUnreadReset is written by reconciliation to set a direction's
	// unread count to the truth; its payload adds event_id and seq_floor.
	OutboxUnreadReset = "unread_reset"
)

// MarkRead marks every message from peerID to userID as read and, in the
// same transaction, writes an outbox event of kind OutboxDialogRead with the
// exact number of messages that went from unread to read and the direction's
// new state. It is idempotent: a second call marks nothing and records a
// state with zero unread again. Returns EINVALID for an id that is not a UUID
// or when the two are the same user, ENOTFOUND when either user does not
// exist, EUNAVAILABLE when the database cannot take the write.
func (s *DialogStore) MarkRead(ctx context.Context, userID, peerID string) (social.ReadReceipt, error) {
	user, err := parseID("user_id", userID)
	if err != nil {
		return social.ReadReceipt{}, err
	}
	peer, err := parseID("user_id", peerID)
	if err != nil {
		return social.ReadReceipt{}, err
	}
	if user == peer {
		return social.ReadReceipt{}, social.Invalid(map[string]string{"user_id": "cannot read a dialog with yourself"})
	}
	eventID, err := newID()
	if err != nil {
		return social.ReadReceipt{}, err
	}
	r := social.ReadReceipt{EventID: eventID.String(), UserID: user.String(), PeerID: peer.String()}
	err = s.db.Transact(ctx, func(tx pgx.Tx) error {
		// The UPDATE finishes before the event's row is built from its
		// count; the outbox trigger then takes the direction's row lock and
		// stamps the event with the new state.
		return tx.QueryRow(ctx, `WITH marked AS (
				UPDATE messages SET read_at = now()
				WHERE to_user_id = $1 AND from_user_id = $2 AND read_at IS NULL
				RETURNING 1
			), event AS (
				INSERT INTO outbox (aggregate, kind, payload)
				SELECT $3, $4, jsonb_build_object('event_id', $5::uuid, 'user_id', $1::uuid, 'peer_id', $2::uuid,
					'count', (SELECT count(*) FROM marked),
					'read_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
				RETURNING id, payload, created_at
			)
			SELECT id, (payload->>'count')::integer, (payload->>'seq')::bigint, (payload->>'unread')::integer, created_at
			FROM event`,
			user, peer, DialogKey(r.UserID, r.PeerID), OutboxDialogRead, eventID).
			Scan(&r.OutboxID, &r.Count, &r.Seq, &r.Unread, &r.At)
	})
	if err != nil {
		return social.ReadReceipt{}, mapError("mark dialog read", userNotFound, err)
	}
	r.At = r.At.UTC().Truncate(time.Microsecond)
	return r, nil
}
