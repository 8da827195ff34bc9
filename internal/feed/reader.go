package feed

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// Served says where a page came from.
type Served string

// Where pages come from.
const (
	// ServedRedis: the cached timeline.
	ServedRedis Served = "redis"
	// ServedRebuilt: the timeline was not cached; it was rebuilt from
	// PostgreSQL, stored, and the page read from it.
	ServedRebuilt Served = "rebuilt"
	// ServedPostgres: the SQL feed, because Redis failed, a rebuild raced a
	// change, or the cache could not answer the page exactly.
	ServedPostgres Served = "postgres"
)

// Reader serves feed pages from Redis.
type Reader struct {
	core
	m *readerMetrics
}

// NewReader returns a reader over cfg.
func NewReader(cfg Config) (*Reader, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newReaderMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Reader{core: core{cfg: cfg}, m: m}, nil
}

// errFallback says that the cache cannot serve a page exactly.
var errFallback = errors.New("cache cannot serve the page")

// Page returns the page [offset, offset+limit) of userID's feed, exactly as
// the SQL feed would (Config.SQL, whose paging rules it keeps: a limit of 0
// or less is social.DefaultFeedLimit, the page ends at social.FeedCap), and
// where it came from. A timeline that is not cached is rebuilt from the
// primary and stored. Whenever Redis fails, or cannot answer exactly (a
// post deleted since it was cached, a list cut short), the page comes from
// the SQL feed instead, without an error. Returns EINVALID for an id that
// is not a UUID or a negative offset, and the SQL feed's errors.
func (r *Reader) Page(ctx context.Context, userID string, offset, limit int) ([]social.Post, Served, error) {
	if _, err := uuid.Parse(userID); err != nil || len(userID) != 36 {
		return nil, "", social.Invalid(map[string]string{"user_id": "must be a UUID"})
	}
	if offset < 0 {
		return nil, "", social.Invalid(map[string]string{"offset": "must not be negative"})
	}
	if limit <= 0 {
		limit = social.DefaultFeedLimit
	}
	limit = min(limit, social.MaxFeedLimit, social.FeedCap-offset)
	if limit > 0 {
		posts, served, err := r.fromCache(ctx, userID, offset, limit)
		if err == nil {
			r.m.pages.WithLabelValues(string(served)).Inc()
			return posts, served, nil
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		r.cfg.Log.Debug("feed page from PostgreSQL", "reason", err)
	}
	posts, err := r.cfg.SQL.Feed(ctx, userID, offset, limit)
	if err != nil {
		return nil, "", err
	}
	r.m.pages.WithLabelValues(string(ServedPostgres)).Inc()
	return posts, ServedPostgres, nil
}

// Forget drops userID's cached timeline, so that the next read rebuilds it
// from the primary: call it after the user's own follow or unfollow for
// read-your-writes.
func (r *Reader) Forget(ctx context.Context, userID string) error {
	return r.forget(ctx, userID)
}

func (r *Reader) fromCache(ctx context.Context, userID string, offset, limit int) ([]social.Post, Served, error) {
	need := offset + limit
	served := ServedRedis
	v, err := r.view(ctx, userID, need)
	if errors.Is(err, errNotCached) {
		stored, rerr := r.rebuild(ctx, timelineKeys(userID), timelineSQL, uuid.MustParse(userID))
		if rerr != nil {
			return nil, "", rerr
		}
		if !stored {
			return nil, "", fmt.Errorf("rebuild raced a change: %w", errFallback)
		}
		served = ServedRebuilt
		v, err = r.view(ctx, userID, need)
	}
	if err != nil {
		return nil, "", err
	}
	if v.trusted < need && !v.exact {
		return nil, "", fmt.Errorf("cached timeline too short: %w", errFallback)
	}
	page := v.posts[min(offset, len(v.posts)):min(need, len(v.posts))]
	posts, gone, err := r.bodies(ctx, page)
	if err != nil {
		return nil, "", err
	}
	if len(gone) > 0 {
		r.repair(ctx, v.lists, gone)
		return nil, "", fmt.Errorf("%d cached posts deleted: %w", len(gone), errFallback)
	}
	return posts, served, nil
}

// bodies reads the posts of page, in its order, from a replica; posts the
// replica lacks are looked for on the primary (the replica may lag behind
// the fan-out). It returns the ids that exist on neither.
func (r *Reader) bodies(ctx context.Context, page []entry) ([]social.Post, []string, error) {
	if len(page) == 0 {
		return []social.Post{}, nil, nil
	}
	ids := make([]uuid.UUID, len(page))
	for i, e := range page {
		// A member that is no post id (uuid.Nil) is found nowhere, so it
		// is served from SQL and repaired like a deleted post.
		ids[i], _ = postOfMember(e.member)
	}
	found := make(map[uuid.UUID]social.Post, len(page))
	var missing []uuid.UUID
	read := func(q dbroute.Querier, ids []uuid.UUID) error {
		rows, err := q.Query(ctx, `SELECT id, text, author_user_id, created_at FROM posts WHERE id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		var p social.Post
		var id, author uuid.UUID
		_, err = pgx.ForEachRow(rows, []any{&id, &p.Text, &author, &p.CreatedAt}, func() error {
			p.ID, p.AuthorUserID = id.String(), author.String()
			found[id] = p
			return nil
		})
		return err
	}
	err := r.cfg.DB.ReadReplica(ctx, func(q dbroute.Querier) error { return read(q, ids) })
	if err != nil {
		return nil, nil, fmt.Errorf("read feed posts: %w", err)
	}
	for _, id := range ids {
		if _, ok := found[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		if err := r.cfg.DB.ReadPrimary(ctx, func(q dbroute.Querier) error { return read(q, missing) }); err != nil {
			return nil, nil, fmt.Errorf("read feed posts: %w", err)
		}
	}
	posts := make([]social.Post, 0, len(page))
	var gone []string
	for i, e := range page {
		if p, ok := found[ids[i]]; ok {
			posts = append(posts, p)
		} else {
			gone = append(gone, e.member)
		}
	}
	return posts, gone, nil
}

// repair removes deleted posts from the lists a page came from; their
// post_deleted events would, later.
func (r *Reader) repair(ctx context.Context, lists []list, gone []string) {
	args := make([]any, len(gone))
	for i, g := range gone {
		args[i] = g
	}
	for _, l := range lists {
		if err := removeScript.Run(ctx, r.cfg.Redis, l.scriptKeys(), args...).Err(); err != nil {
			r.cfg.Log.Debug("remove deleted posts from the cache", "err", err)
			return
		}
	}
}
