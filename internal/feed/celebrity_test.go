package feed_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"socnet/internal/feed"
)

// An author crosses the celebrity threshold up, down (with hysteresis),
// and up again, through follows, unfollows and follows deleted without an
// event; every follower's page equals the SQL feed at each step, and
// between the steps of a demotion.
func TestCelebrityDemotedAndPromotedAgain(t *testing.T) {
	const threshold = 4 // promoted with 5 followers, demoted with 3 or fewer
	e := mustEnv(t, threshold)
	u := e.mustUsers(t, 10)
	celeb, plain, late, late2 := u[0], u[1], u[7], u[8]
	fans := u[2:7] // five
	ctx := testCtx(t, 5*time.Minute)
	isCeleb := func() bool {
		var n int
		if err := e.admin.QueryRow(ctx, `SELECT count(*) FROM feed_celebrities WHERE author_id = $1`, celeb).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	following := func() []uuid.UUID {
		var out []uuid.UUID
		for _, f := range append(slices.Clone(fans), late, late2) {
			var n int
			if err := e.admin.QueryRow(ctx, `SELECT count(*) FROM friends WHERE user_id = $1 AND friend_id = $2`, f, celeb).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				out = append(out, f)
			}
		}
		return out
	}
	// pages reads every follower's first page (equal to the SQL feed, or
	// e.page fails) and checks that it holds want.
	pages := func(when string, want ...uuid.UUID) {
		t.Helper()
		for _, f := range following() {
			got, _ := e.page(t, f, 0, 20)
			for _, p := range want {
				if !contains(got, p) {
					t.Fatalf("%s: page of %s = %v lacks %s", when, f, got, p)
				}
			}
		}
	}
	merged := func(user uuid.UUID) bool { // the celebrity is in the user's merged-at-read set
		key := strings.TrimSuffix(feed.TimelineKey(user.String()), "t") + "c"
		ok, err := e.rdb.SIsMember(ctx, key, celeb.String()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	for _, f := range append(slices.Clone(fans), late, late2) {
		e.follow(t, f, plain)
	}
	for _, f := range fans {
		e.follow(t, f, celeb)
	}
	c0, p0 := e.post(t, celeb), e.post(t, plain)
	e.drain(t)
	for _, f := range append(slices.Clone(fans[:4]), late, late2) {
		e.page(t, f, 0, 20) // cached; fans[4] stays uncached
	}

	// Up: five followers > 4.
	c1 := e.post(t, celeb)
	e.drain(t)
	if !isCeleb() {
		t.Fatal("five followers: not promoted")
	}
	if contains(e.timeline(t, fans[0]), c1) || !merged(fans[0]) {
		t.Fatalf("after promotion: the post was fanned out, or the celebrity is not merged at read")
	}
	pages("promoted", c0, c1, p0)
	e.follow(t, late, celeb) // follows a celebrity: merged at read only
	e.drain(t)
	pages("late follower", c0, c1)
	e.mustCheck(t, u)

	// Hysteresis: down to four followers (of six), still a celebrity.
	e.unfollow(t, fans[4], celeb)
	e.unfollow(t, fans[3], celeb)
	c2 := e.post(t, celeb)
	e.drain(t)
	if !isCeleb() {
		t.Fatal("demoted with four followers: the threshold has no hysteresis")
	}
	pages("four followers", c0, c1, c2)
	e.mustCheck(t, u)

	// Down: three followers. Every step of the demotion keeps the pages.
	var steps []string
	undo := feed.SetDemoteHook(func(step string) {
		steps = append(steps, step)
		pages("demotion step "+step, c0, c1, c2)
	})
	e.unfollow(t, fans[2], celeb)
	e.drain(t)
	undo()
	if want := []string{"unmarked", "merged", "unmerged", "recorded"}; !slices.Equal(steps, want) {
		t.Fatalf("demotion steps %v, want %v", steps, want)
	}
	if isCeleb() {
		t.Fatal("three followers: still a celebrity")
	}
	for _, f := range following() {
		tl := e.timeline(t, f)
		if !contains(tl, c1) || !contains(tl, c2) || merged(f) {
			t.Errorf("after demotion, timeline of %s = %v (merged at read %t): want %s and %s in it, not merged",
				f, tl, merged(f), c1, c2)
		}
	}
	if n := e.rdb.Exists(ctx, feed.AuthorListKey(celeb.String())).Val(); n != 0 {
		t.Error("the demoted author's list is still in Redis")
	}
	e.mustCheck(t, u)

	// A timeline rebuilt from a snapshot taken before the demotion keeps
	// the author merged at read; its author list, rebuilt on that read,
	// goes stale as the author's posts are fanned out again. Harmless, and
	// dropped by the next promotion.
	stale := following()[0]
	if err := e.rdb.SAdd(ctx, strings.TrimSuffix(feed.TimelineKey(stale.String()), "t")+"c", celeb.String()).Err(); err != nil {
		t.Fatal(err)
	}
	pages("stale merge", c0, c1, c2)
	c3 := e.post(t, celeb)
	e.drain(t)
	if !contains(e.timeline(t, following()[1]), c3) {
		t.Fatalf("a post after the demotion was not fanned out")
	}
	pages("fanned out again", c0, c1, c2, c3)
	e.mustCheck(t, u)

	// Up again: six followers. A follower who comes after the promotion
	// reads the author's list only: it must hold c3 (a list kept from
	// before would not).
	e.follow(t, fans[2], celeb)
	e.follow(t, fans[3], celeb)
	e.follow(t, fans[4], celeb)
	c4 := e.post(t, celeb)
	e.drain(t)
	if !isCeleb() {
		t.Fatal("six followers: not promoted again")
	}
	e.follow(t, late2, celeb)
	e.drain(t)
	if !merged(late2) || contains(e.timeline(t, late2), c3) {
		t.Fatalf("late follower after the second promotion: not merged at read, or c3 fanned into its timeline")
	}
	pages("promoted again", c0, c1, c2, c3, c4)
	e.mustCheck(t, u)

	// Followers deleted, their follows with them by the cascade, without an
	// event: the next post finds three followers left, demotes, and is
	// fanned out.
	gone := []uuid.UUID{fans[2], fans[3], fans[4], late2}
	if _, err := e.admin.Exec(ctx, `DELETE FROM users WHERE id = ANY($1)`, gone); err != nil {
		t.Fatal(err)
	}
	u = slices.DeleteFunc(u, func(id uuid.UUID) bool { return slices.Contains(gone, id) })
	c5 := e.post(t, celeb)
	e.drain(t)
	if isCeleb() {
		t.Fatal("a post with three followers left did not demote")
	}
	for _, f := range following() {
		if tl := e.timeline(t, f); !contains(tl, c5) || !contains(tl, c4) {
			t.Errorf("timeline of %s = %v: want the post of the demoting event %s and %s", f, tl, c5, c4)
		}
	}
	pages("demoted by a post", c0, c1, c2, c3, c4, c5)
	e.mustCheck(t, u)
}
