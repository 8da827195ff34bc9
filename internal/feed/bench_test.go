package feed_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"socnet/internal/feed"
	"socnet/internal/feed/feedtest"
	"socnet/internal/social"
)

// BenchmarkFeedPage compares a page of 20 for a user following 3,000
// authors (3 posts each): from the cached timeline, from the SQL fan-in
// (postgres.PostStore.Feed) that serves the feed without the cache, and
// rebuilding the timeline. B/timeline is Redis's MEMORY USAGE of the full
// timeline (social.FeedCap ids).
//
//	go test -run '^$' -bench BenchmarkFeedPage -benchtime 3s ./internal/feed/
func BenchmarkFeedPage(b *testing.B) {
	const authors, perAuthor, page = 3000, 3, 20
	e := mustEnv(b, 0)
	users := e.mustUsers(b, authors+1)
	reader := users[0]
	ctx := testCtx(b, 10*time.Minute)
	if _, err := e.admin.Exec(ctx, `INSERT INTO friends (user_id, friend_id) SELECT $1, unnest($2::uuid[])`,
		reader, users[1:]); err != nil {
		b.Fatal(err)
	}
	if _, err := e.admin.Exec(ctx, `INSERT INTO posts (id, author_user_id, text, created_at)
		SELECT gen_random_uuid(), u, repeat('x', 200), now() - random() * interval '30 days'
		FROM unnest($1::uuid[]) u, generate_series(1, $2)`, users[1:], perAuthor); err != nil {
		b.Fatal(err)
	}
	for _, q := range []string{`VACUUM ANALYZE posts`, `VACUUM ANALYZE friends`} {
		if _, err := e.admin.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	if _, served := e.page(b, reader, 0, page); served != feed.ServedRebuilt {
		b.Fatalf("first read served from %s", served)
	}
	usage, err := e.rdb.MemoryUsage(ctx, feed.TimelineKey(reader.String())).Result()
	if err != nil {
		b.Fatal(err)
	}
	id := reader.String()
	run := func(name string, fn func(ctx context.Context) error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := fn(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if name == "redis" {
				b.ReportMetric(float64(usage), "B/timeline")
			}
		})
	}
	run("redis", func(ctx context.Context) error {
		posts, served, err := e.reader.Page(ctx, id, 0, page)
		if err == nil && (served != feed.ServedRedis || len(posts) != page) {
			b.Fatalf("%d posts from %s", len(posts), served)
		}
		return err
	})
	run("sql", func(ctx context.Context) error {
		posts, err := e.posts.Feed(ctx, id, 0, page)
		if err == nil && len(posts) != page {
			b.Fatalf("%d posts", len(posts))
		}
		return err
	})
	run("rebuild", func(ctx context.Context) error {
		if err := e.reader.Forget(ctx, id); err != nil {
			return err
		}
		_, served, err := e.reader.Page(ctx, id, 0, page)
		if err == nil && served != feed.ServedRebuilt {
			b.Fatalf("served from %s", served)
		}
		return err
	})
}

// BenchmarkTimelineWrites measures Redis's side of writing a full timeline
// (social.FeedCap posts) with the feed's Redis settings (listpack) and with
// Redis's default zset-max-listpack-entries (skiplist): storing a rebuilt
// one (and, for comparison, a plain ZADD of its posts), adding one post (a
// fan-out), and merging 100 newer posts (a follow).
// B/timeline is the MEMORY USAGE of the sorted set.
//
//	go test -run '^$' -bench BenchmarkTimelineWrites ./internal/feed/
func BenchmarkTimelineWrites(b *testing.B) {
	r := feedtest.MustRedis(b)
	rdb := r.Client(b)
	ctx := testCtx(b, 10*time.Minute)
	now := time.Now().UnixMicro()
	posts := func(n int, newest int64) ([]int64, []uuid.UUID) {
		scores, ids := make([]int64, n), make([]uuid.UUID, n)
		for i := range ids {
			scores[i], ids[i] = newest-int64(i)*1_000_003, uuid.New()
		}
		return scores, ids
	}
	for _, c := range []struct{ name, entries string }{
		{"listpack", strconv.Itoa(social.FeedCap + 64)}, {"skiplist", "128"},
	} {
		if err := rdb.ConfigSet(ctx, "zset-max-listpack-entries", c.entries).Err(); err != nil {
			b.Fatal(err)
		}
		user := uuid.NewString()
		full := func(b *testing.B) {
			s, ids := posts(social.FeedCap, now)
			if err := feed.StoreTimeline(ctx, rdb, user, s, ids); err != nil {
				b.Fatal(err)
			}
		}
		report := func(b *testing.B) {
			enc := rdb.ObjectEncoding(ctx, feed.TimelineKey(user)).Val()
			if enc != c.name {
				b.Fatalf("timeline encoded as %s, want %s", enc, c.name)
			}
			b.ReportMetric(float64(rdb.MemoryUsage(ctx, feed.TimelineKey(user), 0).Val()), "B/timeline")
		}
		b.Run(c.name+"/store", func(b *testing.B) {
			for b.Loop() {
				full(b)
			}
			report(b)
		})
		// What the store would cost without building a skiplist first: one
		// ZADD of the posts into the key.
		b.Run(c.name+"/zadd", func(b *testing.B) {
			key := feed.TimelineKey(user)
			s, ids := posts(social.FeedCap, now)
			zs := make([]redis.Z, len(ids))
			for i := range ids {
				zs[i] = redis.Z{Score: float64(s[i]), Member: feed.PostMember(ids[i])}
			}
			for b.Loop() {
				if err := rdb.Del(ctx, key).Err(); err != nil {
					b.Fatal(err)
				}
				if err := rdb.ZAdd(ctx, key, zs...).Err(); err != nil {
					b.Fatal(err)
				}
			}
			report(b)
		})
		b.Run(c.name+"/add1", func(b *testing.B) {
			full(b)
			i := int64(0)
			for b.Loop() {
				i++
				s, ids := posts(1, now+i)
				if err := feed.AddToTimeline(ctx, rdb, user, s, ids); err != nil {
					b.Fatal(err)
				}
			}
			report(b)
		})
		b.Run(c.name+"/merge100", func(b *testing.B) {
			i := int64(0)
			for b.Loop() {
				b.StopTimer()
				full(b)
				b.StartTimer()
				i++
				s, ids := posts(100, now+i*1_000_000_000)
				if err := feed.AddToTimeline(ctx, rdb, user, s, ids); err != nil {
					b.Fatal(err)
				}
			}
			report(b)
		})
	}
}
