package seed_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/seed"
)

// Graph gives every person the asked number of follows and posts, the
// followers pile up on a few authors (a power law), and a second run
// writes nothing.
func TestGraphPowerLawOnceAndOnlyOnce(t *testing.T) {
	db, admin := mustDB(t, "")
	ctx := context.Background()
	const users, friends, posts = 2000, 10, 2
	if _, err := seed.Run(ctx, db, seed.Options{Users: users, Seed: 7, BatchSize: 500}, io.Discard); err != nil {
		t.Fatal(err)
	}
	opts := seed.GraphOptions{Users: users, Seed: 7, Friends: friends, Posts: posts, Skew: 1.2, SkewShift: 5, BatchSize: 300}
	res, err := seed.Graph(ctx, db, opts, nil)
	if err != nil {
		t.Fatalf("Graph: %v", err)
	}
	type counts struct{ Friends, Posts int64 }
	if diff := cmp.Diff(counts{users * friends, users * posts}, counts{res.Friends, res.Posts}); diff != "" {
		t.Errorf("Graph wrote (-want +got):\n%s", diff)
	}
	var rows counts
	var minFollows, maxFollows, selfFollows, topFollowers, medianFollowers int
	err = admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM friends), (SELECT count(*) FROM posts),
		(SELECT min(n) FROM (SELECT count(*) n FROM friends GROUP BY user_id) x),
		(SELECT max(n) FROM (SELECT count(*) n FROM friends GROUP BY user_id) x),
		(SELECT count(*) FROM friends WHERE user_id = friend_id),
		(SELECT max(n) FROM (SELECT count(*) n FROM friends GROUP BY friend_id) x),
		(SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM
			(SELECT count(f.user_id) n FROM users u LEFT JOIN friends f ON f.friend_id = u.id GROUP BY u.id) x)`).
		Scan(&rows.Friends, &rows.Posts, &minFollows, &maxFollows, &selfFollows, &topFollowers, &medianFollowers)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(counts{users * friends, users * posts}, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if minFollows != friends || maxFollows != friends || selfFollows != 0 {
		t.Errorf("follows per person %d..%d, self-follows %d; want %d each and none", minFollows, maxFollows, selfFollows, friends)
	}
	// A power law: the most followed author has far more followers than
	// the median one (the mean is friends).
	if topFollowers < 20*max(medianFollowers, 1) {
		t.Errorf("most followed author has %d followers, the median %d: not skewed", topFollowers, medianFollowers)
	}
	t.Logf("followers: top %d, median %d", topFollowers, medianFollowers)
	var newest time.Time
	if err := admin.QueryRow(ctx, `SELECT max(created_at) FROM posts`).Scan(&newest); err != nil || newest.After(time.Now()) {
		t.Errorf("newest post at %v (%v), want in the past", newest, err)
	}

	again, err := seed.Graph(ctx, db, opts, nil)
	if err != nil || again.Friends != 0 || again.Posts != 0 {
		t.Errorf("second Graph: %+v, %v; want nothing written", again, err)
	}
}
