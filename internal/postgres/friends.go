package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/feed"
	"socnet/internal/social"
)

// FriendStore implements social.FriendStore.
type FriendStore struct {
	db *dbroute.DB
}

var _ social.FriendStore = (*FriendStore)(nil)

// NewFriendStore returns a FriendStore over db.
func NewFriendStore(db *dbroute.DB) *FriendStore { return &FriendStore{db: db} }

// SetFriend makes userID follow friendID, with the feed's event in the same
// transaction; setting it twice is a no-op.
// Returns ENOTFOUND when friendID (or userID) does not exist, EINVALID when
// they are the same or an id is not a UUID.
func (s *FriendStore) SetFriend(ctx context.Context, userID, friendID string) error {
	uid, err := parseID("user_id", userID)
	if err != nil {
		return err
	}
	fid, err := parseID("id", friendID)
	if err != nil {
		return err
	}
	if uid == fid {
		return social.Invalid(map[string]string{"id": "cannot follow yourself"})
	}
	err = s.db.Transact(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO friends (user_id, friend_id) VALUES ($1, $2)
			ON CONFLICT (user_id, friend_id) DO NOTHING`, uid, fid)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return feed.EnqueueFriendSet(ctx, tx, uid, fid)
	})
	return mapError("set friend", userNotFound, err)
}

// DeleteFriend stops userID following friendID, with the feed's event in
// the same transaction; a missing friendship is a no-op. Returns EINVALID for an id that is not a UUID.
func (s *FriendStore) DeleteFriend(ctx context.Context, userID, friendID string) error {
	uid, err := parseID("user_id", userID)
	if err != nil {
		return err
	}
	fid, err := parseID("id", friendID)
	if err != nil {
		return err
	}
	err = s.db.Transact(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM friends WHERE user_id = $1 AND friend_id = $2`, uid, fid)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return feed.EnqueueFriendDeleted(ctx, tx, uid, fid)
	})
	return mapError("delete friend", userNotFound, err)
}
