package feed_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"socnet/internal/feed"
	"socnet/internal/social"
)

// Full timelines stay listpacks (about 28 bytes a post) through a rebuild,
// a single fan-out and a merge of many posts: no script lets a list grow
// past zset-max-listpack-entries, which would turn it into a skiplist for
// good.
func TestTimelinesStayCompact(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 4)
	reader, many, some, one := u[0], u[1], u[2], u[3]
	ctx := testCtx(t, 2*time.Minute)
	for _, q := range []struct {
		author uuid.UUID
		n      int
		age    string
	}{{many, social.FeedCap + 100, "30 days"}, {some, 100, "1 hour"}} {
		if _, err := e.admin.Exec(ctx, `INSERT INTO posts (id, author_user_id, text, created_at)
			SELECT gen_random_uuid(), $1, 'x', now() - random() * $3::interval FROM generate_series(1, $2)`,
			q.author, q.n, q.age); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.admin.Exec(ctx, `INSERT INTO friends (user_id, friend_id) VALUES ($1, $2)`, reader, many); err != nil {
		t.Fatal(err)
	}
	key := feed.TimelineKey(reader.String())
	compact := func(when string) {
		t.Helper()
		enc, err := e.rdb.ObjectEncoding(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		n, err := e.rdb.ZCard(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if enc != "listpack" || n != social.FeedCap {
			t.Fatalf("%s: timeline of %d posts encoded as %s, want %d as listpack", when, n, enc, social.FeedCap)
		}
		e.page(t, reader, 0, 50)
		e.page(t, reader, social.FeedCap-50, 50)
		e.mustCheck(t, u)
	}
	if _, served := e.page(t, reader, 0, 20); served != feed.ServedRebuilt {
		t.Fatalf("first read served from %s, want rebuilt", served)
	}
	compact("rebuilt")
	e.follow(t, reader, one)
	e.drain(t)
	p := e.post(t, one)
	e.drain(t)
	if !contains(e.timeline(t, reader), p) {
		t.Fatal("the new post was not fanned out")
	}
	compact("one post added")
	e.follow(t, reader, some) // 100 posts merged into a full timeline
	e.drain(t)
	compact("100 posts merged")
	usage, err := e.rdb.MemoryUsage(ctx, key, 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	if usage > 40*social.FeedCap {
		t.Errorf("a full timeline takes %d bytes, want at most %d", usage, 40*social.FeedCap)
	}
	t.Logf("a full timeline: %d bytes (MEMORY USAGE)", usage)
}

// The keys of the first format (text ids) are dropped; the current ones
// are left alone.
func TestDropStaleKeys(t *testing.T) {
	e := mustEnv(t, 0)
	ctx := testCtx(t, time.Minute)
	id := uuid.NewString()
	old := []string{"feed:{u:" + id + "}:t", "feed:{u:" + id + "}:m", "feed:{a:" + id + "}:p"}
	for _, k := range old {
		if err := e.rdb.Set(ctx, k, "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	cur := feed.TimelineKey(id)
	if err := e.rdb.ZAdd(ctx, cur, redis.Z{Score: 1, Member: feed.PostMember(uuid.New())}).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := feed.DropStaleKeys(ctx, e.rdb)
	if err != nil || n != len(old) {
		t.Fatalf("DropStaleKeys = %d, %v; want %d", n, err, len(old))
	}
	if left := e.rdb.Exists(ctx, old...).Val(); left != 0 {
		t.Errorf("%d old keys left", left)
	}
	if e.rdb.Exists(ctx, cur).Val() != 1 {
		t.Error("the current timeline was dropped")
	}
}
