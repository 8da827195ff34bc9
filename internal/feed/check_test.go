package feed_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"socnet/internal/feed"
)

// CheckSample draws among the cached timelines only, counts the users it
// drew that were not cached, and finds a post planted in one timeline and
// a post taken out of another, whether it checks them all or draws them
// one at a time.
func TestCheckSampleFindsPlantedDifferences(t *testing.T) {
	e := mustEnv(t, 0)
	u := e.mustUsers(t, 30)
	authors, readers := u[:4], u[4:]
	for i, r := range readers {
		e.follow(t, r, authors[i%len(authors)])
		e.follow(t, r, authors[(i+1)%len(authors)])
	}
	for _, a := range authors {
		for range 3 {
			e.post(t, a)
		}
	}
	e.drain(t)
	cached := readers[:12]
	for _, r := range cached {
		e.page(t, r, 0, 10)
	}
	ctx := testCtx(t, 2*time.Minute)
	sample := func(n int) feed.Report {
		t.Helper()
		rep, err := feed.CheckSample(ctx, e.reader, n)
		if err != nil {
			t.Fatalf("CheckSample(%d): %v", n, err)
		}
		if rep.Checked+rep.Uncached != rep.Drawn {
			t.Fatalf("CheckSample(%d) = %+v: checked and uncached do not add up to drawn", n, rep)
		}
		return rep
	}
	if rep := sample(5); rep.Checked != 5 || len(rep.Differences) != 0 {
		t.Fatalf("CheckSample(5) = %+v, want 5 checked, no difference", rep)
	}
	if rep := sample(0); rep.Checked != len(cached) || rep.Drawn != len(u) || len(rep.Differences) != 0 {
		t.Fatalf("CheckSample(all) = %+v, want %d checked of %d drawn, no difference", rep, len(cached), len(u))
	}

	// A post that does not belong, newer than all, in one timeline; the
	// newest post taken out of another.
	wrong, short := cached[3], cached[7]
	foreign := uuid.New()
	if err := e.rdb.ZAdd(ctx, feed.TimelineKey(wrong.String()),
		redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMicro()), Member: feed.PostMember(foreign)}).Err(); err != nil {
		t.Fatal(err)
	}
	newest := e.timeline(t, short)[0]
	if err := e.rdb.ZRem(ctx, feed.TimelineKey(short.String()), feed.PostMember(uuid.MustParse(newest))).Err(); err != nil {
		t.Fatal(err)
	}
	found := func(rep feed.Report) map[uuid.UUID]feed.Difference {
		out := map[uuid.UUID]feed.Difference{}
		for _, d := range rep.Differences {
			out[uuid.MustParse(d.UserID)] = d
		}
		return out
	}
	for _, n := range []int{0, len(cached)} {
		rep := sample(n)
		diffs := found(rep)
		if len(diffs) != 2 || !slices.Equal(diffs[wrong].Extra, []string{foreign.String()}) ||
			!slices.Equal(diffs[short].Missing, []string{newest}) {
			t.Fatalf("CheckSample(%d) = %+v: want %s with extra %s and %s missing %s", n, rep, wrong, foreign, short, newest)
		}
	}
	// One at a time: each draw is a cached timeline; both are drawn sooner
	// or later (missing one in 200 draws of 12: p < 1e-7).
	seen := map[uuid.UUID]bool{}
	for i := 0; i < 200 && !(seen[wrong] && seen[short]); i++ {
		rep := sample(1)
		if rep.Checked != 1 {
			t.Fatalf("CheckSample(1) = %+v, want one timeline checked", rep)
		}
		for id := range found(rep) {
			seen[id] = true
		}
	}
	if !seen[wrong] || !seen[short] {
		t.Fatalf("200 draws of one timeline never drew both planted ones: %v", seen)
	}
}
