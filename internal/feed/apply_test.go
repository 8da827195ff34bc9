package feed_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"socnet/internal/feed"
)

// Applying the events of a random history in any order, with duplicates,
// leaves every cached timeline equal to the SQL feed.
func TestApplyIsOrderAndDuplicateSafe(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run("", func(t *testing.T) { checkPermutations(t, seed) })
	}
}

func checkPermutations(t *testing.T, seed uint64) {
	const threshold = 3 // a few authors become celebrities on the way
	e := mustEnv(t, threshold)
	ctx := testCtx(t, 2*time.Minute)
	rng := rand.New(rand.NewPCG(seed, seed*7+1))
	users := e.mustUsers(t, 5)
	pick := func() (uuid.UUID, uuid.UUID) {
		i := rng.IntN(len(users))
		return users[i], users[(i+1+rng.IntN(len(users)-1))%len(users)]
	}
	type post struct{ id, author uuid.UUID }
	var posts []post
	newPost := func() {
		_, a := pick()
		posts = append(posts, post{e.post(t, a), a})
	}
	type edge struct{ user, author uuid.UUID }
	var edges []edge
	follow := func() {
		u, a := pick()
		e.follow(t, u, a)
		edges = append(edges, edge{u, a})
	}
	for range 12 {
		follow()
	}
	for range 10 {
		newPost()
	}
	e.drain(t)
	for _, u := range users {
		e.page(t, u, 0, 50) // cache every timeline
	}

	// The history whose events are replayed.
	for range 40 {
		switch r := rng.IntN(100); {
		case r < 40:
			newPost()
		case r < 55 && len(posts) > 0:
			i := rng.IntN(len(posts))
			e.deletePost(t, posts[i].author, posts[i].id)
			posts = append(posts[:i], posts[i+1:]...)
		case r < 80:
			follow()
		case len(edges) > 0:
			i := rng.IntN(len(edges))
			e.unfollow(t, edges[i].user, edges[i].author)
			edges = append(edges[:i], edges[i+1:]...)
		}
	}
	events := outboxEvents(t, e) // replayed below by hand
	if _, err := e.admin.Exec(ctx, `DELETE FROM feed_outbox`); err != nil {
		t.Fatal(err)
	}
	before := dumpRedis(t, e)
	rows, err := e.admin.Query(ctx, `SELECT author_id FROM feed_celebrities`)
	if err != nil {
		t.Fatal(err)
	}
	celebs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	app, err := feed.NewApplier(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for trial := range 10 {
		// Back to the state before the history: the cache and the
		// celebrities as they were.
		restoreRedis(t, e, before)
		if _, err := e.admin.Exec(ctx, `DELETE FROM feed_celebrities WHERE author_id <> ALL($1)`, celebs); err != nil {
			t.Fatal(err)
		}
		order := append([]feed.Event(nil), events...)
		if trial > 0 { // trial 0 applies them in order, once
			for _, ev := range events {
				if rng.IntN(3) == 0 {
					order = append(order, ev)
				}
			}
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		for _, ev := range order {
			if err := app.Apply(ctx, []feed.Event{ev}); err != nil {
				t.Fatalf("trial %d: %v", trial, err)
			}
		}
		rep := e.mustCheck(t, users)
		checked += rep.Checked
	}
	if checked == 0 {
		t.Fatalf("no trial left a cached timeline to check")
	}
	// Negative control: Check sees a post that does not belong.
	for _, u := range users {
		if tl := e.timeline(t, u); len(tl) > 0 {
			if err := e.rdb.ZAdd(ctx, feed.TimelineKey(u.String()), redis.Z{Score: 1, Member: feed.PostMember(uuid.New())}).Err(); err != nil {
				t.Fatal(err)
			}
			rep, err := feed.Check(ctx, e.reader, []string{u.String()})
			if err != nil || len(rep.Differences) != 1 {
				t.Fatalf("Check of a corrupted timeline: %+v, %v; want one difference", rep, err)
			}
			break
		}
	}
	t.Logf("%d events, %d timelines checked over 10 trials", len(events), checked)
}

func outboxEvents(t *testing.T, e *env) []feed.Event {
	t.Helper()
	rows, err := e.admin.Query(testCtx(t, 10*time.Second), `SELECT id, kind, author_id, post_id, user_id FROM feed_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var out []feed.Event
	var ev feed.Event
	var post, user *uuid.UUID
	_, err = pgx.ForEachRow(rows, []any{&ev.ID, &ev.Kind, &ev.AuthorID, &post, &user}, func() error {
		x := ev
		if post != nil {
			x.PostID = *post
		}
		if user != nil {
			x.UserID = *user
		}
		out = append(out, x)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dumpRedis(t *testing.T, e *env) map[string]string {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	keys, err := e.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if out[k], err = e.rdb.Dump(ctx, k).Result(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func restoreRedis(t *testing.T, e *env, dump map[string]string) {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for k, v := range dump {
		if err := e.rdb.Restore(ctx, k, 0, v).Err(); err != nil {
			t.Fatal(err)
		}
	}
}
