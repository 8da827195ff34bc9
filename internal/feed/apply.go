package feed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// Applier applies feed events to the timelines in Redis. Applying an event
// brings what it is about up to the current state in PostgreSQL rather than
// replaying the change, so applying an event twice, late, or after a later
// one leaves the timelines as applying them in order once does:
//
//   - post_created: a post that still exists goes into the timelines of its
//     author's current followers, or, when the author has more followers
//     than the threshold, into the author's own list (promoting the author
//     to celebrity first if needed).
//   - post_updated: nothing; timelines hold ids, texts are read at read.
//   - post_deleted: the post leaves the timelines of its author's followers
//     and the author's list.
//   - friend_set: if the user still follows the author, the author's newest
//     posts are merged into the user's timeline (or the celebrity is added
//     to the ones merged at read); if not, as friend_deleted.
//   - friend_deleted: the user's timeline is dropped, to be rebuilt on the
//     next read: taking the author's posts out of a full timeline would
//     leave it without the older posts that were cut to make room for them.
//
// Only cached lists change; a list that is not cached is built from
// PostgreSQL when read.
type Applier struct{ core }

// NewApplier returns an applier over cfg.
func NewApplier(cfg Config) (*Applier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Applier{core: core{cfg: cfg}}, nil
}

// Apply applies events in order. It stops at the first error; applying the
// events again later is safe.
func (a *Applier) Apply(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	if err := a.loadScripts(ctx); err != nil {
		return err
	}
	for _, e := range events {
		if err := a.apply(ctx, e); err != nil {
			return fmt.Errorf("apply feed event %d (%s): %w", e.ID, e.Kind, err)
		}
	}
	return nil
}

func (a *Applier) apply(ctx context.Context, e Event) error {
	switch e.Kind {
	case KindPostCreated:
		return a.postCreated(ctx, e)
	case KindPostUpdated:
		return nil
	case KindPostDeleted:
		return a.postDeleted(ctx, e)
	case KindFriendSet:
		return a.friendSet(ctx, e)
	case KindFriendDeleted:
		return a.forget(ctx, e.UserID.String())
	}
	a.cfg.Log.Warn("feed event of unknown kind skipped", "id", e.ID, "kind", e.Kind)
	return nil
}

func (a *Applier) postCreated(ctx context.Context, e Event) error {
	var at time.Time
	var celeb bool
	err := a.readPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT p.created_at, EXISTS (SELECT 1 FROM feed_celebrities WHERE author_id = p.author_user_id)
			FROM posts p WHERE p.id = $1`, e.PostID).Scan(&at, &celeb)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // deleted since; its post_deleted event cleans up
	}
	if err != nil {
		return err
	}
	args := entryArgs([]any{social.FeedCap, "1"}, []entry{{score: at.UnixMicro(), member: e.PostID.String()}})
	if !celeb {
		followers, err := a.followers(ctx, e.AuthorID, a.cfg.CelebrityFollowers+1)
		if err != nil {
			return err
		}
		if len(followers) <= a.cfg.CelebrityFollowers {
			return a.eachList(ctx, "fan out post", addScript, followers, timelineKeys, args...)
		}
	}
	if err := a.promote(ctx, e.AuthorID); err != nil {
		return err
	}
	return a.eachList(ctx, "add celebrity post", addScript, []uuid.UUID{e.AuthorID}, authorKeys, args...)
}

// promote makes author a celebrity: recorded in PostgreSQL first, so that
// every rebuild from then on merges the author at read, then added to the
// cached timelines of the followers (a rebuild under way is cancelled), and
// finally marked done in Redis. A worker that dies in between leaves the
// mark unset, so the next post of the author finishes the job; so does the
// first post after Redis lost the mark.
func (a *Applier) promote(ctx context.Context, author uuid.UUID) error {
	done := authorKeys(author.String()).promoted()
	n, err := a.cfg.Redis.Exists(ctx, done).Result()
	if err != nil {
		return wrap("read promotion mark", err)
	}
	if n == 1 {
		return nil
	}
	err = a.cfg.DB.Transact(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO feed_celebrities (author_id) VALUES ($1) ON CONFLICT DO NOTHING`, author)
		return err
	})
	if err != nil {
		return fmt.Errorf("promote %s to celebrity: %w", author, err)
	}
	followers, err := a.followers(ctx, author, 0)
	if err != nil {
		return err
	}
	if err := a.eachList(ctx, "promote celebrity", addCelebScript, followers, timelineKeys, author.String()); err != nil {
		return err
	}
	if err := a.cfg.Redis.Set(ctx, done, "1", 0).Err(); err != nil {
		return wrap("mark promotion", err)
	}
	a.cfg.Log.Info("author merged at read from now on", "author", author, "threshold", a.cfg.CelebrityFollowers,
		"followers", len(followers))
	return nil
}

func (a *Applier) postDeleted(ctx context.Context, e Event) error {
	followers, err := a.followers(ctx, e.AuthorID, 0)
	if err != nil {
		return err
	}
	post := e.PostID.String()
	if err := a.eachList(ctx, "remove post", removeScript, followers, timelineKeys, post); err != nil {
		return err
	}
	return a.eachList(ctx, "remove celebrity post", removeScript, []uuid.UUID{e.AuthorID}, authorKeys, post)
}

func (a *Applier) friendSet(ctx context.Context, e Event) error {
	var follows, celeb bool
	var posts []entry
	err := a.readPrimary(ctx, func(q dbroute.Querier) error {
		posts = posts[:0]
		err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2),
			EXISTS (SELECT 1 FROM feed_celebrities WHERE author_id = $2)`, e.UserID, e.AuthorID).Scan(&follows, &celeb)
		if err != nil || !follows || celeb {
			return err
		}
		rows, err := q.Query(ctx, authorSQL, e.AuthorID, social.FeedCap)
		if err != nil {
			return err
		}
		var id uuid.UUID
		var at time.Time
		_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error {
			posts = append(posts, entry{score: at.UnixMicro(), member: id.String()})
			return nil
		})
		return err
	})
	if err != nil {
		return err
	}
	user := []uuid.UUID{e.UserID}
	switch {
	case !follows:
		return a.forget(ctx, e.UserID.String())
	case celeb:
		return a.eachList(ctx, "follow celebrity", addCelebScript, user, timelineKeys, e.AuthorID.String())
	}
	args := entryArgs([]any{social.FeedCap, boolArg(len(posts) < social.FeedCap)}, posts)
	return a.eachList(ctx, "merge followed posts", addScript, user, timelineKeys, args...)
}

// followers returns the users following author, at most limit of them
// (0: all).
func (a *Applier) followers(ctx context.Context, author uuid.UUID, limit int) ([]uuid.UUID, error) {
	var out []uuid.UUID
	err := a.readPrimary(ctx, func(q dbroute.Querier) error {
		q1 := `SELECT user_id FROM friends WHERE friend_id = $1`
		args := []any{author}
		if limit > 0 {
			q1 += ` LIMIT $2`
			args = append(args, limit)
		}
		rows, err := q.Query(ctx, q1, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		return err
	})
	return out, err
}

// readPrimary reads from the primary: the state an event is brought up to
// must include the event's own transaction.
func (a *Applier) readPrimary(ctx context.Context, fn func(dbroute.Querier) error) error {
	if err := a.cfg.DB.ReadPrimary(ctx, fn); err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	return nil
}
