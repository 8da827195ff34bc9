package feed

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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
	// Checked counts the users whose cached timeline was compared.
	Checked int
	// Uncached counts the users with no cached timeline (nothing to check:
	// a read rebuilds it).
	Uncached    int
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
	err := r.cfg.DB.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT count(*) FROM feed_outbox`).Scan(&rep.Backlog)
	})
	if err != nil {
		return rep, fmt.Errorf("check: feed_outbox backlog: %w", err)
	}
	for _, u := range userIDs {
		v, err := r.view(ctx, u, social.FeedCap)
		if errors.Is(err, errNotCached) {
			rep.Uncached++
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("check %s: %w", u, err)
		}
		truth, err := r.cfg.SQL.Feed(ctx, u, 0, social.FeedCap)
		if err != nil {
			return rep, fmt.Errorf("check %s: SQL feed: %w", u, err)
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
	return rep, nil
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

// SampleUsers returns up to n random user ids, from a replica.
func SampleUsers(ctx context.Context, db *dbroute.DB, n int) ([]string, error) {
	var out []string
	err := db.ReadReplica(ctx, func(q dbroute.Querier) error {
		rows, err := q.Query(ctx, `SELECT id FROM users ORDER BY random() LIMIT $1`, n)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		out = out[:0]
		for _, id := range ids {
			out = append(out, id.String())
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sample users: %w", err)
	}
	return out, nil
}
