package feed

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// Difference is how one user's cached timeline departs from the SQL feed.
type Difference struct {
	UserID string
	// Missing are posts of the SQL feed the cache lacks; Extra are posts
	// the cache has and the SQL feed does not, within the part of the
	// timeline the cache vouches for.
	Missing, Extra []string
	// Misordered says that the same posts come in another order.
	Misordered bool
}

// Report is the outcome of Check.
type Report struct {
	// Drawn counts the users looked at: the ones given to Check, or drawn
	// from PostgreSQL by CheckSample.
	Drawn int
	// Checked counts the users whose cached timeline was compared.
	Checked int
	// Uncached counts the users with no cached timeline (nothing to check:
	// a read rebuilds it).
	Uncached int
	// Differences are the timelines that differ, in the order checked.
	Differences []Difference
	// Backlog counts the events waiting in feed_outbox when the check
	// began: with a backlog, differences may be changes not applied yet.
	Backlog int
}

// Check compares the cached timelines of userIDs with the SQL feed
// (Config.SQL, its first social.FeedCap posts): the posts the cache vouches
// for, in order, must be the SQL feed's first ones. It changes no timeline;
// it may build a missing celebrity list. Run it when the worker has caught
// up and the SQL feed's replicas have replayed the writes, or a write in
// flight shows as a difference (Report.Backlog tells).
func Check(ctx context.Context, r *Reader, userIDs []string) (Report, error) {
	var rep Report
	if err := backlog(ctx, r, &rep); err != nil {
		return rep, err
	}
	err := check(ctx, r, userIDs, &rep)
	return rep, err
}

func backlog(ctx context.Context, r *Reader, rep *Report) error {
	err := r.cfg.DB.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT count(*) FROM feed_outbox`).Scan(&rep.Backlog)
	})
	if err != nil {
		return fmt.Errorf("check: feed_outbox backlog: %w", err)
	}
	return nil
}

func check(ctx context.Context, r *Reader, userIDs []string, rep *Report) error {
	for _, u := range userIDs {
		rep.Drawn++
		v, err := r.view(ctx, u, social.FeedCap)
		if errors.Is(err, errNotCached) {
			rep.Uncached++
			continue
		}
		if err != nil {
			return fmt.Errorf("check %s: %w", u, err)
		}
		truth, err := r.cfg.SQL.Feed(ctx, u, 0, social.FeedCap)
		if err != nil {
			return fmt.Errorf("check %s: SQL feed: %w", u, err)
		}
		want := make([]string, 0, len(truth))
		for _, p := range truth {
			want = append(want, p.ID)
		}
		got := make([]string, 0, v.trusted)
		for _, e := range v.posts[:v.trusted] {
			got = append(got, memberText(e.member))
		}
		if !v.exact {
			want = want[:min(len(want), len(got))]
		}
		rep.Checked++
		if d, ok := compare(u, want, got); !ok {
			rep.Differences = append(rep.Differences, d)
		}
	}
	return nil
}

// CheckSample is Check over n users drawn uniformly among the users with a
// cached timeline (n <= 0: all of them). SCAN from a random cursor would
// favour keys after long gaps in Redis's table; instead users are drawn
// from PostgreSQL (a replica) in a random order, and the ones with a cached
// timeline are kept until there are n: each cached timeline is equally
// likely to be checked. Report.Drawn counts the users drawn and
// Report.Uncached the ones not cached.
func CheckSample(ctx context.Context, r *Reader, n int) (Report, error) {
	var rep Report
	if err := backlog(ctx, r, &rep); err != nil {
		return rep, err
	}
	query := `SELECT id FROM users ORDER BY random()`
	if n <= 0 {
		query = `SELECT id FROM users`
	}
	var sample []string
	drawn := 0
	err := r.cfg.DB.ReadReplica(ctx, func(q dbroute.Querier) error {
		sample, drawn = sample[:0], 0
		rows, err := q.Query(ctx, query)
		if err != nil {
			return err
		}
		defer rows.Close()
		batch := make([]string, 0, pipeChunk)
		keep := func() error {
			cached, err := r.cached(ctx, batch)
			if err != nil {
				return err
			}
			for i, u := range batch {
				if n > 0 && len(sample) == n {
					break
				}
				drawn++
				if cached[i] {
					sample = append(sample, u)
				}
			}
			batch = batch[:0]
			return nil
		}
		var id uuid.UUID
		for rows.Next() && (n <= 0 || len(sample) < n) {
			if err := rows.Scan(&id); err != nil {
				return err
			}
			if batch = append(batch, id.String()); len(batch) == cap(batch) {
				if err := keep(); err != nil {
					return err
				}
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return keep()
	})
	if err != nil {
		return rep, fmt.Errorf("check: sample users: %w", err)
	}
	err = check(ctx, r, sample, &rep)
	rep.Drawn, rep.Uncached = drawn, rep.Uncached+drawn-len(sample)
	return rep, err
}

// cached reports which of userIDs have a cached timeline.
func (r *Reader) cached(ctx context.Context, userIDs []string) ([]bool, error) {
	pipe := r.cfg.Redis.Pipeline()
	cmds := make([]*redis.IntCmd, len(userIDs))
	for i, u := range userIDs {
		cmds[i] = pipe.Exists(ctx, timelineKeys(u).meta)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("read which timelines are cached", err)
	}
	out := make([]bool, len(userIDs))
	for i, c := range cmds {
		out[i] = c.Val() == 1
	}
	return out, nil
}
func compare(user string, want, got []string) (Difference, bool) {
	if slices.Equal(want, got) {
		return Difference{}, true
	}
	d := Difference{UserID: user}
	in := func(s []string) map[string]bool {
		m := make(map[string]bool, len(s))
		for _, x := range s {
			m[x] = true
		}
		return m
	}
	w, g := in(want), in(got)
	for _, x := range want {
		if !g[x] {
			d.Missing = append(d.Missing, x)
		}
	}
	for _, x := range got {
		if !w[x] {
			d.Extra = append(d.Extra, x)
		}
	}
	d.Misordered = len(d.Missing) == 0 && len(d.Extra) == 0
	return d, false
}
