package feed_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"socnet/internal/feed"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

// A user's timeline follows posts, deletes, follows and unfollows through
// the outbox, and every page equals the SQL feed's.
func TestTimelineFollowsChanges(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 4)
	reader, b, c, d := u[0], u[1], u[2], u[3]
	e.follow(t, reader, b)
	e.follow(t, reader, c)
	bOld, cOld := e.post(t, b), e.post(t, c)
	e.post(t, d)
	e.drain(t)

	if _, served := e.page(t, reader, 0, 10); served != feed.ServedRebuilt {
		t.Fatalf("first read served from %s, want %s", served, feed.ServedRebuilt)
	}
	type step struct {
		name   string
		do     func()
		served feed.Served // of the read after the worker applied the change
		in     func() []uuid.UUID
		out    func() []uuid.UUID
	}
	var bNew, dPost uuid.UUID
	steps := []step{
		{name: "post of a followed author is fanned out", do: func() { bNew = e.post(t, b) },
			served: feed.ServedRedis, in: func() []uuid.UUID { return []uuid.UUID{bNew, bOld, cOld} }},
		{name: "deleted post leaves", do: func() { e.deletePost(t, b, bOld) },
			served: feed.ServedRedis, out: func() []uuid.UUID { return []uuid.UUID{bOld} }},
		{name: "follow merges the author's posts", do: func() { e.follow(t, reader, d); dPost = e.post(t, d) },
			served: feed.ServedRedis, in: func() []uuid.UUID { return []uuid.UUID{dPost, bNew, cOld} }},
		{name: "unfollow drops the author's posts", do: func() { e.unfollow(t, reader, c) },
			served: feed.ServedRebuilt, out: func() []uuid.UUID { return []uuid.UUID{cOld} }},
	}
	for _, s := range steps {
		s.do()
		e.drain(t)
		got, served := e.page(t, reader, 0, 10)
		if served != s.served {
			t.Errorf("%s: read served from %s, want %s", s.name, served, s.served)
		}
		tl := e.timeline(t, reader)
		if s.in != nil {
			for _, id := range s.in() {
				if !contains(got, id) || !contains(tl, id) {
					t.Errorf("%s: post %s missing: page %v, timeline %v", s.name, id, got, tl)
				}
			}
		}
		if s.out != nil {
			for _, id := range s.out() {
				if contains(got, id) || contains(tl, id) {
					t.Errorf("%s: post %s still there: page %v, timeline %v", s.name, id, got, tl)
				}
			}
		}
		e.mustCheck(t, u)
	}
}

// A deleted post is never served, even before the worker applied its
// delete, and the read takes it out of the timeline.
func TestDeletedPostNotServedBeforeApplied(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 2)
	e.follow(t, u[0], u[1])
	p1, p2 := e.post(t, u[1]), e.post(t, u[1])
	e.drain(t)
	e.page(t, u[0], 0, 10) // cached
	e.deletePost(t, u[1], p1)
	got, served := e.page(t, u[0], 0, 10)
	if contains(got, p1) || !contains(got, p2) {
		t.Fatalf("page %v (from %s): want %s and not the deleted %s", got, served, p2, p1)
	}
	if contains(e.timeline(t, u[0]), p1) {
		t.Errorf("the read left the deleted post in the timeline")
	}
	if _, served := e.page(t, u[0], 0, 10); served != feed.ServedRedis {
		t.Errorf("read after the repair served from %s, want redis", served)
	}
}

// Read-your-writes: after Forget, the user's own follow shows in the next
// read though the worker has not applied it.
func TestForgetShowsOwnFollow(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 2)
	p := e.post(t, u[1])
	e.drain(t)
	if got, _ := e.page(t, u[0], 0, 10); len(got) != 0 {
		t.Fatalf("feed of a user who follows nobody: %v", got)
	}
	e.follow(t, u[0], u[1]) // not applied by any worker
	if err := e.reader.Forget(testCtx(t, 10*time.Second), u[0].String()); err != nil {
		t.Fatal(err)
	}
	got, served := e.page(t, u[0], 0, 10)
	if !contains(got, p) || served != feed.ServedRebuilt {
		t.Fatalf("after own follow: page %v from %s, want %s rebuilt", got, served, p)
	}
}

// An author with more followers than the threshold is not fanned out; the
// post reaches the followers' pages from the author's own list.
func TestCelebrityMergedAtRead(t *testing.T) {
	const threshold = 3
	e := mustEnv(t, threshold)
	u := e.mustUsers(t, 7)
	celeb, plain, extra, late := u[0], u[1], u[5], u[6]
	fans := u[2:5]
	for _, f := range fans {
		e.follow(t, f, celeb)
		e.follow(t, f, plain)
	}
	e.follow(t, extra, celeb)
	old := e.post(t, celeb)
	e.drain(t)
	for _, f := range fans {
		e.page(t, f, 0, 10) // cache the timelines
	}
	p := e.post(t, celeb) // four followers > 3: promoted
	q := e.post(t, plain)
	e.drain(t)
	var n int
	if err := e.admin.QueryRow(testCtx(t, 10*time.Second), `SELECT count(*) FROM feed_celebrities WHERE author_id = $1`, celeb).Scan(&n); err != nil || n != 1 {
		t.Fatalf("celebrity recorded %d times (err %v), want once", n, err)
	}
	for _, f := range fans {
		tl := e.timeline(t, f)
		if contains(tl, p) || !contains(tl, q) || !contains(tl, old) {
			t.Errorf("timeline of %s = %v: want the plain post %s and the old %s, not the celebrity's %s", f, tl, q, old, p)
		}
		got, served := e.page(t, f, 0, 10)
		if !contains(got, p) || served != feed.ServedRedis {
			t.Errorf("page of %s = %v from %s: want the celebrity's post from redis", f, got, served)
		}
	}
	e.page(t, late, 0, 10)
	e.follow(t, late, celeb)
	p2 := e.post(t, celeb)
	e.deletePost(t, celeb, p)
	e.drain(t)
	for _, f := range append(fans, late) {
		got, served := e.page(t, f, 0, 10)
		if !contains(got, p2) || contains(got, p) || served != feed.ServedRedis {
			t.Errorf("page of %s = %v from %s: want %s, not the deleted %s, from redis", f, got, served, p2, p)
		}
	}
	e.mustCheck(t, u)
}

// Flushing Redis loses nothing: timelines are rebuilt on read.
func TestRebuildAfterFlush(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 5)
	for i, a := range u {
		for _, b := range u[i+1:] {
			e.follow(t, a, b)
			e.follow(t, b, a)
		}
		for range 3 {
			e.post(t, a)
		}
	}
	e.drain(t)
	for _, a := range u {
		e.page(t, a, 0, 20)
	}
	if err := e.rdb.FlushAll(testCtx(t, 10*time.Second)).Err(); err != nil {
		t.Fatal(err)
	}
	if rep := e.mustCheck(t, u); rep.Uncached != len(u) {
		t.Fatalf("after FLUSHALL: %d of %d timelines uncached", rep.Uncached, len(u))
	}
	for _, a := range u {
		if _, served := e.page(t, a, 0, 20); served != feed.ServedRebuilt {
			t.Errorf("first read after flush served from %s, want rebuilt", served)
		}
		if _, served := e.page(t, a, 3, 5); served != feed.ServedRedis {
			t.Errorf("second read served from %s, want redis", served)
		}
	}
	if rep := e.mustCheck(t, u); rep.Checked != len(u) {
		t.Fatalf("checked %d of %d", rep.Checked, len(u))
	}
}

// Pages keep the SQL feed's paging rules: the default limit, the cap, and
// errors for bad input.
func TestPagingRules(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 2)
	e.follow(t, u[0], u[1])
	for range 12 {
		e.post(t, u[1])
	}
	e.drain(t)
	for _, c := range []struct{ offset, limit, want int }{
		{0, 0, social.DefaultFeedLimit}, {0, 5, 5}, {10, 5, 2}, {12, 5, 0}, {social.FeedCap - 1, 5, 0}, {social.FeedCap, 5, 0},
	} {
		if got, _ := e.page(t, u[0], c.offset, c.limit); len(got) != c.want {
			t.Errorf("Page(offset %d, limit %d) has %d posts, want %d", c.offset, c.limit, len(got), c.want)
		}
	}
	ctx := testCtx(t, 10*time.Second)
	if _, _, err := e.reader.Page(ctx, u[0].String(), -1, 5); social.ErrorCode(err) != social.EINVALID {
		t.Errorf("negative offset: err %v, want EINVALID", err)
	}
	if _, _, err := e.reader.Page(ctx, "not-a-uuid", 0, 5); social.ErrorCode(err) != social.EINVALID {
		t.Errorf("bad user id: err %v, want EINVALID", err)
	}
}

// A worker that died after recording a promotion but before telling the
// followers' timelines leaves the job to the author's next post.
func TestPromotionFinishedAfterCrash(t *testing.T) {
	e := mustEnv(t, 2)
	u := e.mustUsers(t, 4)
	celeb, fans := u[0], u[1:]
	for _, f := range fans {
		e.follow(t, f, celeb)
	}
	e.drain(t)
	for _, f := range fans {
		e.page(t, f, 0, 10)
	}
	// What the killed worker committed.
	if _, err := e.admin.Exec(testCtx(t, 10*time.Second), `INSERT INTO feed_celebrities (author_id) VALUES ($1)`, celeb); err != nil {
		t.Fatal(err)
	}
	p := e.post(t, celeb)
	e.drain(t)
	for _, f := range fans {
		got, served := e.page(t, f, 0, 10)
		if !contains(got, p) || served != feed.ServedRedis {
			t.Errorf("page of %s = %v from %s, want the celebrity's post %s from redis", f, got, served, p)
		}
	}
	e.mustCheck(t, u)
}

// A change that reaches a timeline while it is being rebuilt cancels the
// rebuild's store: the rebuild's snapshot may predate the change.
func TestChangeCancelsRebuildUnderWay(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 2)
	e.follow(t, u[0], u[1])
	e.drain(t)
	ctx := testCtx(t, 10*time.Second)
	mark := strings.TrimSuffix(feed.TimelineKey(u[0].String()), "t") + "r"
	// A rebuild under way: its token is set, its timeline not stored yet.
	if err := e.rdb.Set(ctx, mark, "token", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	e.post(t, u[1])
	e.drain(t)
	if n := e.rdb.Exists(ctx, mark).Val(); n != 0 {
		t.Fatalf("the post's fan-out left the rebuild token in place")
	}
	if _, served := e.page(t, u[0], 0, 10); served != feed.ServedRebuilt {
		t.Fatalf("read served from %s, want rebuilt", served)
	}
}

// The stores the API uses: Feed comes from the cache, and a user's own
// follow and unfollow show in their next read without the worker.
func TestStoresServeFeedWithReadYourWrites(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 3)
	posts := feed.NewPostStore(e.posts, e.reader)
	friends := feed.NewFriendStore(postgres.NewFriendStore(e.db), e.reader)
	p1, p2 := e.post(t, u[1]), e.post(t, u[2])
	e.drain(t)
	ctx := testCtx(t, 30*time.Second)
	feedOf := func() []string {
		got, err := posts.Feed(ctx, u[0].String(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		want, err := e.posts.Feed(ctx, u[0].String(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Feed differs from the SQL feed (-want +got):\n%s", diff)
		}
		return ids(got)
	}
	feedOf() // cached, empty
	for _, step := range []struct {
		do   func() error
		want []uuid.UUID
	}{
		{func() error { return friends.SetFriend(ctx, u[0].String(), u[1].String()) }, []uuid.UUID{p1}},
		{func() error { return friends.SetFriend(ctx, u[0].String(), u[2].String()) }, []uuid.UUID{p2, p1}},
		{func() error { return friends.DeleteFriend(ctx, u[0].String(), u[1].String()) }, []uuid.UUID{p2}},
	} {
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		got := feedOf()
		want := make([]string, len(step.want))
		for i, id := range step.want {
			want[i] = id.String()
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("feed after own change (-want +got):\n%s", diff)
		}
	}
	if err := friends.SetFriend(ctx, u[0].String(), u[0].String()); social.ErrorCode(err) != social.EINVALID {
		t.Errorf("following oneself: %v, want the store's EINVALID", err)
	}
}
