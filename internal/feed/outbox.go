package feed

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Kinds of feed events, as stored in feed_outbox.kind.
const (
	KindPostCreated   = "post_created"
	KindPostUpdated   = "post_updated"
	KindPostDeleted   = "post_deleted"
	KindFriendSet     = "friend_set"
	KindFriendDeleted = "friend_deleted"
)

// Event is one row of feed_outbox.
type Event struct {
	// ID is the outbox id; it grows with each event written.
	ID   int64
	Kind string
	// AuthorID is the post's author (post events) or the followed user
	// (friend events).
	AuthorID uuid.UUID
	// PostID is the post of a post event.
	PostID uuid.UUID
	// UserID is the follower of a friend event.
	UserID uuid.UUID
	// CreatedAt is when the event's transaction wrote it.
	CreatedAt time.Time
}

// Call the Enqueue functions inside the transaction that makes the change,
// after the statement that made it: the event then commits with the change
// or not at all.

// EnqueuePostCreated records that authorID published postID.
func EnqueuePostCreated(ctx context.Context, tx pgx.Tx, postID, authorID uuid.UUID) error {
	return enqueue(ctx, tx, Event{Kind: KindPostCreated, AuthorID: authorID, PostID: postID})
}

// EnqueuePostUpdated records that authorID changed the text of postID.
func EnqueuePostUpdated(ctx context.Context, tx pgx.Tx, postID, authorID uuid.UUID) error {
	return enqueue(ctx, tx, Event{Kind: KindPostUpdated, AuthorID: authorID, PostID: postID})
}

// EnqueuePostDeleted records that authorID deleted postID.
func EnqueuePostDeleted(ctx context.Context, tx pgx.Tx, postID, authorID uuid.UUID) error {
	return enqueue(ctx, tx, Event{Kind: KindPostDeleted, AuthorID: authorID, PostID: postID})
}

// EnqueueFriendSet records that userID now follows friendID.
func EnqueueFriendSet(ctx context.Context, tx pgx.Tx, userID, friendID uuid.UUID) error {
	return enqueue(ctx, tx, Event{Kind: KindFriendSet, AuthorID: friendID, UserID: userID})
}

// EnqueueFriendDeleted records that userID no longer follows friendID.
func EnqueueFriendDeleted(ctx context.Context, tx pgx.Tx, userID, friendID uuid.UUID) error {
	return enqueue(ctx, tx, Event{Kind: KindFriendDeleted, AuthorID: friendID, UserID: userID})
}

func enqueue(ctx context.Context, tx pgx.Tx, e Event) error {
	_, err := tx.Exec(ctx, `INSERT INTO feed_outbox (kind, author_id, post_id, user_id) VALUES ($1, $2, $3, $4)`,
		e.Kind, e.AuthorID, nullID(e.PostID), nullID(e.UserID))
	if err != nil {
		return fmt.Errorf("enqueue feed event %s: %w", e.Kind, err)
	}
	return nil
}

func nullID(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

// claimSQL locks the oldest events that no other worker holds.
const claimSQL = `SELECT id, kind, author_id, post_id, user_id, created_at FROM feed_outbox
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`

func claim(ctx context.Context, tx pgx.Tx, limit int) ([]Event, error) {
	rows, err := tx.Query(ctx, claimSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("claim feed events: %w", err)
	}
	var out []Event
	var e Event
	var post, user *uuid.UUID
	_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.Kind, &e.AuthorID, &post, &user, &e.CreatedAt}, func() error {
		ev := e
		if post != nil {
			ev.PostID = *post
		}
		if user != nil {
			ev.UserID = *user
		}
		out = append(out, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim feed events: %w", err)
	}
	return out, nil
}
