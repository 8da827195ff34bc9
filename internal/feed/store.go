package feed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// core is what the reader, the worker and Check share: the configuration
// and the operations on cached lists.
type core struct{ cfg Config }

// pipeChunk bounds the script calls sent in one pipeline.
const pipeChunk = 500

// loadScripts makes the scripts known to Redis, so that pipelines can call
// them by hash (Redis forgets them when it restarts).
func (c *core) loadScripts(ctx context.Context) error {
	for _, s := range []*redis.Script{addScript, removeScript, celebScript, storeScript} {
		if err := s.Load(ctx, c.cfg.Redis).Err(); err != nil {
			return wrap("load feed scripts", err)
		}
	}
	return nil
}

// eachList runs script on the lists of ids (user ids or author ids, per
// keys) with the same arguments, pipelined. The scripts must be loaded.
func (c *core) eachList(ctx context.Context, op string, script *redis.Script, ids []uuid.UUID,
	keys func(string) list, args ...any) error {
	for chunk := range slices.Chunk(ids, pipeChunk) {
		pipe := c.cfg.Redis.Pipeline()
		for _, id := range chunk {
			script.EvalSha(ctx, pipe, keys(id.String()).scriptKeys(), args...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}

// forget drops a user's cached timeline; the next read rebuilds it.
func (c *core) forget(ctx context.Context, userID string) error {
	return wrap("forget timeline", c.cfg.Redis.Del(ctx, timelineKeys(userID).all()...).Err())
}

// timelineSQL is the feed's SQL (postgres.PostStore.Feed) for the whole
// timeline, ids and order only, plus the celebrities the user follows, in
// one statement and so one snapshot.
const timelineSQL = `(SELECT newest.id, newest.created_at
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
	LIMIT $2)
UNION ALL
(SELECT c.author_id, NULL FROM friends f JOIN feed_celebrities c ON c.author_id = f.friend_id
	WHERE f.user_id = $1)`

// authorSQL is one author's newest posts.
const authorSQL = `SELECT id, created_at FROM posts WHERE author_user_id = $1
	ORDER BY created_at DESC, id DESC LIMIT $2`

// rebuild reads a list from the primary and stores it unless a change
// reached the list meanwhile (then the next read tries again). It reports
// whether it stored the list. The primary, not a replica: a lagging replica
// could miss a post whose event the worker already applied.
func (c *core) rebuild(ctx context.Context, l list, query string, id uuid.UUID) (bool, error) {
	token, err := randomToken()
	if err != nil {
		return false, err
	}
	if err := c.cfg.Redis.Set(ctx, l.rebuild, token, rebuildMarkTTL).Err(); err != nil {
		return false, wrap("mark rebuild", err)
	}
	var posts []entry
	var celebs []any
	err = c.cfg.DB.ReadPrimary(ctx, func(q dbroute.Querier) error {
		posts, celebs = posts[:0], celebs[:0]
		rows, err := q.Query(ctx, query, id, social.FeedCap)
		if err != nil {
			return err
		}
		var pid uuid.UUID
		var at *time.Time
		_, err = pgx.ForEachRow(rows, []any{&pid, &at}, func() error {
			if at == nil {
				celebs = append(celebs, pid.String())
			} else {
				posts = append(posts, entry{score: at.UnixMicro(), member: PostMember(pid)})
			}
			return nil
		})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("rebuild %s: %w", l.meta, err)
	}
	args := []any{token, boolArg(len(posts) < social.FeedCap), len(celebs)}
	args = entryArgs(append(args, celebs...), posts)
	stored, err := storeScript.Run(ctx, c.cfg.Redis, l.scriptKeys(), args...).Int()
	if err != nil {
		return false, wrap("store rebuilt "+l.meta, err)
	}
	return stored == 1, nil
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("rebuild token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// cached is one list as read from Redis.
type cached struct {
	complete bool
	posts    []entry // newest first
}

// floor is the oldest order key down to which a list, read up to its
// newest n posts, is known to hold every post it should: a list read in
// full that is not complete may lack posts older than its last entry (ok
// true). A complete list, or one with n posts read, has no floor.
func (l cached) floor(n int) (int64, bool) {
	if l.complete || len(l.posts) >= n {
		return 0, false
	}
	if len(l.posts) == 0 {
		return int64(^uint64(0) >> 1), true // nothing is known
	}
	return l.posts[len(l.posts)-1].score, true
}

// readLists reads the newest n posts of each list in one round trip; a
// list that is not cached is nil. celebs, when not nil, receives the
// celebrities of the first list (a timeline).
func (c *core) readLists(ctx context.Context, ls []list, n int, celebs *[]string) ([]*cached, error) {
	pipe := c.cfg.Redis.Pipeline()
	metas := make([]*redis.StringCmd, len(ls))
	ranges := make([]*redis.ZSliceCmd, len(ls))
	for i, l := range ls {
		metas[i] = pipe.HGet(ctx, l.meta, "complete")
		ranges[i] = pipe.ZRevRangeWithScores(ctx, l.posts, 0, int64(n-1))
	}
	var members *redis.StringSliceCmd
	if celebs != nil {
		members = pipe.SMembers(ctx, ls[0].celebs)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrap("read timeline", err)
	}
	out := make([]*cached, len(ls))
	for i := range ls {
		complete, err := metas[i].Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, wrap("read timeline", err)
		}
		zs := ranges[i].Val()
		l := &cached{complete: complete == "1", posts: make([]entry, 0, len(zs))}
		for _, z := range zs {
			l.posts = append(l.posts, entry{score: int64(z.Score), member: z.Member.(string)})
		}
		out[i] = l
	}
	if celebs != nil {
		*celebs = members.Val()
	}
	return out, nil
}

// view is a user's merged timeline as Redis holds it: the timeline and the
// lists of the celebrities the user follows, newest first, without
// duplicates, cut to the newest n.
type view struct {
	posts []entry
	// trusted is how many of posts are known to equal the SQL feed's first
	// ones: beyond it, an incomplete list may lack posts.
	trusted int
	// exact says that posts is the whole SQL feed up to n: no list lacks
	// posts, so a shorter one means the feed ends there.
	exact bool
	// lists are the keys the posts came from.
	lists []list
}

// errNotCached says that a user's timeline is not in Redis.
var errNotCached = errors.New("timeline not cached")

// view reads the newest n posts of userID's merged timeline. It rebuilds
// celebrity lists that are missing or too short, but not the timeline
// itself (errNotCached).
func (c *core) view(ctx context.Context, userID string, n int) (*view, error) {
	tl := timelineKeys(userID)
	var celebs []string
	got, err := c.readLists(ctx, []list{tl}, n, &celebs)
	if err != nil {
		return nil, err
	}
	if got[0] == nil {
		return nil, errNotCached
	}
	lists := []list{tl}
	all := []*cached{got[0]}
	if len(celebs) > 0 {
		als := make([]list, len(celebs))
		for i, a := range celebs {
			als[i] = authorKeys(a)
		}
		cl, err := c.readLists(ctx, als, n, nil)
		if err != nil {
			return nil, err
		}
		for i, l := range cl {
			if l == nil || (!l.complete && len(l.posts) < n) {
				if l, err = c.rebuildAuthor(ctx, celebs[i], n); err != nil {
					return nil, err
				}
			}
			lists = append(lists, als[i])
			all = append(all, l)
		}
	}
	v := &view{lists: lists}
	floor, bounded := int64(0), false
	for _, l := range all {
		v.posts = append(v.posts, l.posts...)
		if f, ok := l.floor(n); ok && (!bounded || f > floor) {
			floor, bounded = f, true
		}
	}
	slices.SortFunc(v.posts, newer)
	v.posts = slices.CompactFunc(v.posts, func(a, b entry) bool { return a.member == b.member })
	v.posts = v.posts[:min(len(v.posts), n)]
	v.trusted, v.exact = len(v.posts), !bounded
	if bounded {
		v.trusted = 0
		for v.trusted < len(v.posts) && v.posts[v.trusted].score >= floor {
			v.trusted++
		}
	}
	return v, nil
}

// rebuildAuthor rebuilds a celebrity's list and reads its newest n posts.
func (c *core) rebuildAuthor(ctx context.Context, authorID string, n int) (*cached, error) {
	id, err := uuid.Parse(authorID)
	if err != nil {
		return nil, fmt.Errorf("celebrity %q: %w", authorID, err)
	}
	al := authorKeys(authorID)
	stored, err := c.rebuild(ctx, al, authorSQL, id)
	if err != nil {
		return nil, err
	}
	if !stored {
		return nil, fmt.Errorf("celebrity %s changed while rebuilt: %w", authorID, errNotCached)
	}
	got, err := c.readLists(ctx, []list{al}, n, nil)
	if err != nil {
		return nil, err
	}
	if got[0] == nil {
		return nil, fmt.Errorf("celebrity %s: %w", authorID, errNotCached)
	}
	return got[0], nil
}
