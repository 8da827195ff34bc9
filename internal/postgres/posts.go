package postgres

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/feed"
	"socnet/internal/social"
)

// PostStore implements social.PostStore.
type PostStore struct {
	db *dbroute.DB
}

var _ social.PostStore = (*PostStore)(nil)

// NewPostStore returns a PostStore over db.
func NewPostStore(db *dbroute.DB) *PostStore { return &PostStore{db: db} }

const postNotFound = "post not found"

// CreatePost stores p as written by p.AuthorUserID and sets p.ID and
// p.CreatedAt, with the feed's event in the same transaction. Returns EINVALID for a text the schema refuses, ENOTFOUND
// when the author does not exist.
func (s *PostStore) CreatePost(ctx context.Context, p *social.Post) error {
	author, err := parseID("author_user_id", p.AuthorUserID)
	if err != nil {
		return err
	}
	id, err := newID()
	if err != nil {
		return err
	}
	var created = p.CreatedAt
	err = s.db.Transact(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO posts (id, author_user_id, text) VALUES ($1, $2, $3)
			RETURNING created_at`, id, author, p.Text).Scan(&created)
		if err != nil {
			return err
		}
		return feed.EnqueuePostCreated(ctx, tx, id, author)
	})
	if err != nil {
		return mapError("create post", userNotFound, err)
	}
	p.ID, p.CreatedAt = id.String(), created
	return nil
}

// ownPost is the outcome of a change to a post only its author may make,
// found in one round trip: the author of the post as it was (NULL when
// there is none) and whether the change happened.
const ownPostOutcome = `SELECT (SELECT author_user_id FROM target), EXISTS (SELECT 1 FROM changed)`

// UpdatePost replaces the text of the author's post, with the feed's event
// in the same transaction when it changed. Returns ENOTFOUND when
// there is no such post, EFORBIDDEN when it is someone else's, EINVALID for
// a text the schema refuses.
func (s *PostStore) UpdatePost(ctx context.Context, authorID, postID, text string) error {
	return s.changeOwnPost(ctx, "update post", feed.EnqueuePostUpdated, authorID, postID, `WITH
		target AS (SELECT author_user_id FROM posts WHERE id = $1),
		changed AS (UPDATE posts SET text = $3, updated_at = now()
			WHERE id = $1 AND author_user_id = $2 RETURNING 1)
		`+ownPostOutcome, text)
}

// DeletePost deletes the author's post, with the feed's event in the same
// transaction when it was deleted. Returns ENOTFOUND when there is no such
// post, EFORBIDDEN when it is someone else's.
func (s *PostStore) DeletePost(ctx context.Context, authorID, postID string) error {
	return s.changeOwnPost(ctx, "delete post", feed.EnqueuePostDeleted, authorID, postID, `WITH
		target AS (SELECT author_user_id FROM posts WHERE id = $1),
		changed AS (DELETE FROM posts WHERE id = $1 AND author_user_id = $2 RETURNING 1)
		`+ownPostOutcome)
}

// changeOwnPost runs query, which takes the post id, the author id and the
// extra arguments and reports ownPostOutcome, calls event in the same
// transaction when the change happened, and turns the outcome into an
// error.
func (s *PostStore) changeOwnPost(ctx context.Context, op string, event postEvent, authorID, postID, query string, extra ...any) error {
	author, err := parseID("author_user_id", authorID)
	if err != nil {
		return err
	}
	post, err := parseID("id", postID)
	if err != nil {
		return err
	}
	var owner *uuid.UUID
	var changed bool
	err = s.db.Transact(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, query, append([]any{post, author}, extra...)...).Scan(&owner, &changed); err != nil || !changed {
			return err
		}
		return event(ctx, tx, post, author)
	})
	switch {
	case err != nil:
		return mapError(op, postNotFound, err)
	case changed:
		return nil
	case owner != nil && *owner != author:
		return social.Errorf(social.EFORBIDDEN, "post belongs to another user")
	default: // no such post, or deleted while we looked
		return social.Errorf(social.ENOTFOUND, postNotFound)
	}
}

// postEvent writes the feed's event of a change to a post (feed.Enqueue*).
type postEvent func(ctx context.Context, tx pgx.Tx, postID, authorID uuid.UUID) error

// Post returns a post, from a replica. Returns ENOTFOUND, and EINVALID for
// an id that is not a UUID.
func (s *PostStore) Post(ctx context.Context, id string) (social.Post, error) {
	pid, err := parseID("id", id)
	if err != nil {
		return social.Post{}, err
	}
	var p social.Post
	err = s.db.ReadReplica(ctx, func(q dbroute.Querier) error {
		rows, err := q.Query(ctx, `SELECT id, text, author_user_id, created_at FROM posts WHERE id = $1`, pid)
		if err != nil {
			return err
		}
		p, err = pgx.CollectExactlyOneRow(rows, scanPost)
		return err
	})
	if err != nil {
		return social.Post{}, mapError("get post", postNotFound, err)
	}
	return p, nil
}

// Feed returns posts of the users userID follows, newest first, from a
// replica: the page [offset, offset+limit) of their newest social.FeedCap
// posts. A limit of 0 or less means social.DefaultFeedLimit and one above
// social.MaxFeedLimit is cut to it; a negative offset is EINVALID. The
// result is never nil.
//
// Each followed author contributes at most offset+limit of its newest
// posts, read from posts_author_created_idx alone (an index-only scan), and
// only the page's posts are fetched from the table: the cost grows with the
// number of followed authors times the page end, not with all their posts.
func (s *PostStore) Feed(ctx context.Context, userID string, offset, limit int) ([]social.Post, error) {
	uid, err := parseID("user_id", userID)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, social.Invalid(map[string]string{"offset": "must not be negative"})
	}
	if limit <= 0 {
		limit = social.DefaultFeedLimit
	}
	limit = min(limit, social.MaxFeedLimit, social.FeedCap-offset)
	posts := []social.Post{}
	if limit <= 0 {
		return posts, nil
	}
	err = s.db.ReadReplica(ctx, func(q dbroute.Querier) error {
		posts = posts[:0] // a retry on another node starts over
		rows, err := q.Query(ctx, `SELECT p.id, p.text, p.author_user_id, p.created_at
			FROM (
				SELECT newest.id, newest.created_at
				FROM friends f
				CROSS JOIN LATERAL (
					SELECT id, created_at
					FROM posts
					WHERE author_user_id = f.friend_id
					ORDER BY created_at DESC, id DESC
					LIMIT $2
				) newest
				WHERE f.user_id = $1
				ORDER BY newest.created_at DESC, newest.id DESC
				LIMIT $3 OFFSET $4
			) page
			JOIN posts p USING (id)
			ORDER BY page.created_at DESC, page.id DESC`, uid, offset+limit, limit, offset)
		if err != nil {
			return err
		}
		posts, err = pgx.AppendRows(posts, rows, scanPost)
		return err
	})
	if err != nil {
		return nil, mapError("feed", userNotFound, err)
	}
	return posts, nil
}

func scanPost(row pgx.CollectableRow) (social.Post, error) {
	var p social.Post
	var id, author uuid.UUID
	err := row.Scan(&id, &p.Text, &author, &p.CreatedAt)
	p.ID, p.AuthorUserID = id.String(), author.String()
	return p, err
}
