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
//     author's current followers, or, when the author is a celebrity, into
//     the author's own list. The author is promoted first when they have
//     more followers than the threshold, and demoted when a celebrity has
//     fallen to the demotion threshold (Config.demoteAt).
//   - post_updated: nothing; timelines hold ids, texts are read at read.
//   - post_deleted: the post leaves the timelines of its author's followers
//     and the author's list.
//   - friend_set: if the user still follows the author, the author's newest
//     posts are merged into the user's timeline (or the celebrity is added
//     to the ones merged at read); if not, as friend_deleted.
//   - friend_deleted: the user's timeline is dropped, to be rebuilt on the
//     next read: taking the author's posts out of a full timeline would
//     leave it without the older posts that were cut to make room for them.
//     A celebrity who has fallen to the demotion threshold is demoted.
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
		if err := a.forget(ctx, e.UserID.String()); err != nil {
			return err
		}
		return a.review(ctx, e.AuthorID)
	}
	a.cfg.Log.Warn("feed event of unknown kind skipped", "id", e.ID, "kind", e.Kind)
	return nil
}

func (a *Applier) postCreated(ctx context.Context, e Event) error {
	var at time.Time
	var celeb bool
	var followers int
	err := a.readPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT p.created_at, `+celebritySQL+`
			FROM posts p LEFT JOIN feed_celebrities c ON c.author_id = p.author_user_id WHERE p.id = $1`,
			e.PostID, a.cfg.demoteAt()+1).Scan(&at, &celeb, &followers)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // deleted since; its post_deleted event cleans up
	}
	if err != nil {
		return err
	}
	if celeb && followers <= a.cfg.demoteAt() {
		if err := a.demote(ctx, e.AuthorID, followers); err != nil {
			return err
		}
		celeb = false
	}
	args := entryArgs([]any{social.FeedCap, "1"}, []entry{{score: at.UnixMicro(), member: PostMember(e.PostID)}})
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

// Celebrity status has hysteresis: an author is promoted with more than
// Config.CelebrityFollowers followers (N) and demoted at demoteAt (90% of N)
// or fewer. Each change costs a pass over the followers' timelines (a
// demotion merges up to social.FeedCap posts into each), so an author whose
// count wavers around N must not flip at every follow: between two changes
// lie at least N/10 follows or unfollows, over which the pass is spread.

// demoteAt is the follower count at or below which a celebrity is demoted.
func (c Config) demoteAt() int { return c.CelebrityFollowers * 9 / 10 }

// celebritySQL selects, for the author c.author_id of a LEFT JOIN of
// feed_celebrities c, whether they are a celebrity and, if so, their
// follower count up to $2 rows (so a celebrity's millions are not counted).
const celebritySQL = `c.author_id IS NOT NULL,
	CASE WHEN c.author_id IS NULL THEN 0
	     ELSE (SELECT count(*) FROM (SELECT 1 FROM friends WHERE friend_id = c.author_id LIMIT $2) f) END`

// review demotes author if they are a celebrity with demoteAt followers or
// fewer.
func (a *Applier) review(ctx context.Context, author uuid.UUID) error {
	var celeb bool
	var followers int
	err := a.readPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT `+celebritySQL+`
			FROM (SELECT $1::uuid AS id) x LEFT JOIN feed_celebrities c ON c.author_id = x.id`,
			author, a.cfg.demoteAt()+1).Scan(&celeb, &followers)
	})
	if err != nil || !celeb || followers > a.cfg.demoteAt() {
		return err
	}
	return a.demote(ctx, author, followers)
}

// testHookDemote, when set (by tests), runs after each step of a demotion.
var testHookDemote func(step string)

func (a *Applier) demoteStep(step string) {
	if testHookDemote != nil {
		testHookDemote(step)
	}
}

// demote stops merging author at read; every step keeps each follower's
// page whole:
//
//  1. The promotion mark goes first: should the rest not finish and the
//     author stay a celebrity, their next post redoes the promotion pass.
//  2. The author's newest posts are merged into the followers' cached
//     timelines, while the author's list is still merged at read.
//  3. The author leaves the followers' merged celebrities; their timelines
//     now hold the author's posts themselves.
//  4. feed_celebrities forgets the author: posts from now on are fanned
//     out, and timelines rebuilt from now on merge nobody.
//  5. The author's list is dropped: nothing keeps it up to date any more.
//
// A worker killed before step 4 leaves the event to be applied again, which
// redoes it all. A timeline rebuilt from a snapshot taken before step 4 may
// keep the author among its celebrities (a change reaching a timeline under
// rebuild cancels the rebuild only up to step 3); merging a list that lacks
// the author's newer posts adds nothing wrong, since those posts are in the
// timeline itself, and a promotion drops any list left over (promote).
func (a *Applier) demote(ctx context.Context, author uuid.UUID, followers int) error {
	al := authorKeys(author.String())
	if err := a.cfg.Redis.Del(ctx, al.promoted()).Err(); err != nil {
		return wrap("demote: clear promotion mark", err)
	}
	a.demoteStep("unmarked")
	var posts []entry
	var fans []uuid.UUID
	err := a.readPrimary(ctx, func(q dbroute.Querier) error {
		var err error
		if posts, err = a.authorPosts(ctx, q, author); err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT user_id FROM friends WHERE friend_id = $1`, author)
		if err != nil {
			return err
		}
		fans, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		return err
	})
	if err != nil {
		return err
	}
	args := entryArgs([]any{social.FeedCap, boolArg(len(posts) < social.FeedCap)}, posts)
	if err := a.eachList(ctx, "demote: merge the author's posts", addScript, fans, timelineKeys, args...); err != nil {
		return err
	}
	a.demoteStep("merged")
	if err := a.eachList(ctx, "demote: stop merging at read", celebScript, fans, timelineKeys, "-", author.String()); err != nil {
		return err
	}
	a.demoteStep("unmerged")
	err = a.cfg.DB.Transact(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM feed_celebrities WHERE author_id = $1`, author)
		return err
	})
	if err != nil {
		return fmt.Errorf("demote %s: %w", author, err)
	}
	a.demoteStep("recorded")
	if err := a.cfg.Redis.Del(ctx, al.meta, al.posts, al.rebuild).Err(); err != nil {
		return wrap("demote: drop the author's list", err)
	}
	a.cfg.Log.Info("author fanned out again", "author", author, "followers", followers,
		"threshold", a.cfg.demoteAt(), "posts_merged", len(posts), "timelines", len(fans))
	return nil
}

// promote makes author a celebrity: recorded in PostgreSQL first, so that
// every rebuild from then on merges the author at read; then the author's
// list is dropped (one left from an earlier promotion lacks the posts
// fanned out since, and would be rebuilt from PostgreSQL on its first
// read), the author is added to the cached timelines of the followers (a
// rebuild under way is cancelled), and finally marked done in Redis. A
// worker that dies in between leaves the mark unset, so the next post of
// the author finishes the job; so does the first post after Redis lost the
// mark.
func (a *Applier) promote(ctx context.Context, author uuid.UUID) error {
	al := authorKeys(author.String())
	n, err := a.cfg.Redis.Exists(ctx, al.promoted()).Result()
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
	if err := a.cfg.Redis.Del(ctx, al.meta, al.posts, al.rebuild).Err(); err != nil {
		return wrap("promote: drop the author's old list", err)
	}
	followers, err := a.followers(ctx, author, 0)
	if err != nil {
		return err
	}
	if err := a.eachList(ctx, "promote celebrity", celebScript, followers, timelineKeys, "+", author.String()); err != nil {
		return err
	}
	if err := a.cfg.Redis.Set(ctx, al.promoted(), "1", 0).Err(); err != nil {
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
	post := PostMember(e.PostID)
	if err := a.eachList(ctx, "remove post", removeScript, followers, timelineKeys, post); err != nil {
		return err
	}
	return a.eachList(ctx, "remove celebrity post", removeScript, []uuid.UUID{e.AuthorID}, authorKeys, post)
}

func (a *Applier) friendSet(ctx context.Context, e Event) error {
	var follows, celeb bool
	var posts []entry
	err := a.readPrimary(ctx, func(q dbroute.Querier) error {
		err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2),
			EXISTS (SELECT 1 FROM feed_celebrities WHERE author_id = $2)`, e.UserID, e.AuthorID).Scan(&follows, &celeb)
		if err != nil || !follows || celeb {
			return err
		}
		posts, err = a.authorPosts(ctx, q, e.AuthorID)
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
		return a.eachList(ctx, "follow celebrity", celebScript, user, timelineKeys, "+", e.AuthorID.String())
	}
	args := entryArgs([]any{social.FeedCap, boolArg(len(posts) < social.FeedCap)}, posts)
	return a.eachList(ctx, "merge followed posts", addScript, user, timelineKeys, args...)
}

// authorPosts reads author's newest social.FeedCap posts.
func (a *Applier) authorPosts(ctx context.Context, q dbroute.Querier, author uuid.UUID) ([]entry, error) {
	rows, err := q.Query(ctx, authorSQL, author, social.FeedCap)
	if err != nil {
		return nil, err
	}
	var posts []entry
	var id uuid.UUID
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		posts = append(posts, entry{score: at.UnixMicro(), member: PostMember(id)})
		return nil
	})
	return posts, err
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
