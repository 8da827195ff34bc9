package feed_test

import (
	"context"
	"testing"
	"time"

	"socnet/internal/feed"
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
