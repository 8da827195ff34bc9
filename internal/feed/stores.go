package feed

import (
	"context"

	"socnet/internal/social"
)

// PostStore is a social.PostStore whose Feed is served by a Reader; the
// other methods are the wrapped store's. It lets the API switch to cached
// timelines without changing a handler.
type PostStore struct {
	social.PostStore
	reader *Reader
}

var _ social.PostStore = (*PostStore)(nil)

// NewPostStore returns posts with Feed served by reader.
func NewPostStore(posts social.PostStore, reader *Reader) *PostStore {
	return &PostStore{PostStore: posts, reader: reader}
}

// Feed returns a page of userID's feed from the Reader (see Reader.Page for
// its errors).
func (s *PostStore) Feed(ctx context.Context, userID string, offset, limit int) ([]social.Post, error) {
	posts, _, err := s.reader.Page(ctx, userID, offset, limit)
	return posts, err
}

// FriendStore is a social.FriendStore that drops a user's cached timeline
// after the user's own follow or unfollow, so that their next feed read
// shows it (read-your-writes) before the worker applies the event.
type FriendStore struct {
	social.FriendStore
	reader *Reader
}

var _ social.FriendStore = (*FriendStore)(nil)

// NewFriendStore returns friends with each change followed by
// Reader.Forget for the user who made it.
func NewFriendStore(friends social.FriendStore, reader *Reader) *FriendStore {
	return &FriendStore{FriendStore: friends, reader: reader}
}

// SetFriend makes userID follow friendID (errors as the wrapped store's).
func (s *FriendStore) SetFriend(ctx context.Context, userID, friendID string) error {
	if err := s.FriendStore.SetFriend(ctx, userID, friendID); err != nil {
		return err
	}
	s.forget(ctx, userID)
	return nil
}

// DeleteFriend stops userID following friendID (errors as the wrapped
// store's).
func (s *FriendStore) DeleteFriend(ctx context.Context, userID, friendID string) error {
	if err := s.FriendStore.DeleteFriend(ctx, userID, friendID); err != nil {
		return err
	}
	s.forget(ctx, userID)
	return nil
}

// forget drops the timeline; a failure does not fail the committed change:
// while Redis fails, pages come from PostgreSQL, and the worker applies the
// change when Redis is back.
func (s *FriendStore) forget(ctx context.Context, userID string) {
	if err := s.reader.Forget(ctx, userID); err != nil {
		s.reader.cfg.Log.Warn("feed: timeline not dropped after the user's own follow change", "err", err)
	}
}
