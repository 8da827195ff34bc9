package counter

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// Store is the counter database: counters and the inbox.
type Store struct {
	db  *dbroute.DB
	m   *storeMetrics
	now func() time.Time
}

// NewStore returns a Store over the counter database db, registering its
// metrics on reg (nil: none).
func NewStore(db *dbroute.DB, reg prometheus.Registerer) (*Store, error) {
	m, err := newStoreMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Store{db: db, m: m, now: time.Now}, nil
}

// applySQL applies a batch of first-time events in one statement: per
// direction the event with the highest seq replaces the counter if its seq is
// higher than the stored one, and every event goes into the inbox, marked
// applied or stale. Events already in the inbox are left out: duplicates.
// Rows are locked in key order (DISTINCT ON sorts), so concurrent batches
// cannot deadlock.
const applySQL = `WITH ev AS (
	SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::uuid[], $6::bigint[], $7::integer[],
			$8::timestamptz[])
		AS e(event_id, outbox_id, kind, user_id, peer_id, seq, unread, committed_at)
), fresh AS (
	SELECT ev.* FROM ev WHERE NOT EXISTS (SELECT 1 FROM inbox i WHERE i.event_id = ev.event_id)
), best AS (
	SELECT DISTINCT ON (user_id, peer_id) * FROM fresh ORDER BY user_id, peer_id, seq DESC, event_id
), up AS (
	INSERT INTO counters AS c (user_id, peer_id, unread, seq)
	SELECT user_id, peer_id, unread, seq FROM best
	ON CONFLICT (user_id, peer_id) DO UPDATE
		SET unread = EXCLUDED.unread, seq = EXCLUDED.seq, updated_at = now()
		WHERE c.seq < EXCLUDED.seq
	RETURNING user_id, peer_id
), won AS (
	SELECT b.event_id FROM best b JOIN up USING (user_id, peer_id)
), ins AS (
	INSERT INTO inbox (event_id, outbox_id, kind, user_id, peer_id, seq, committed_at, outcome)
	SELECT f.event_id, f.outbox_id, f.kind, f.user_id, f.peer_id, f.seq, f.committed_at,
		CASE WHEN f.event_id IN (SELECT event_id FROM won) THEN 'applied' ELSE 'stale' END
	FROM fresh f
	ON CONFLICT (event_id) DO NOTHING
	RETURNING event_id, outcome
)
SELECT event_id, outcome FROM ins`

// Apply applies the events of b exactly once in effect and says what became
// of each, in order. Invalid events are rejected and the rest applied; an
// event seen before (in the inbox, or earlier in b) is a duplicate; an event
// whose seq is not above its direction's stored seq is stale. The inbox rows
// and the counter changes commit together, so a crash either keeps both or
// neither. When b.Session is set the write is recorded under that dbroute
// session. Returns an EUNAVAILABLE error, having applied nothing, when the
// database cannot take the batch.
func (s *Store) Apply(ctx context.Context, b Batch) (BatchResult, error) {
	start := s.now()
	res := BatchResult{Results: make([]Result, len(b.Events))}
	seen := make(map[string]int, len(b.Events))
	var todo []int // indexes of valid, first-in-batch events
	for i, e := range b.Events {
		res.Results[i].ID = e.ID
		if reason := e.Validate(); reason != "" {
			res.Results[i].Outcome, res.Results[i].Reason = OutcomeRejected, reason
			continue
		}
		if _, dup := seen[e.ID]; dup {
			res.Results[i].Outcome = OutcomeDuplicate
			continue
		}
		seen[e.ID] = i
		todo = append(todo, i)
	}
	if len(todo) > 0 {
		if b.Session != "" {
			ctx = dbroute.WithSession(ctx, b.Session)
		}
		outcomes, err := s.apply(ctx, b.Events, todo)
		if err != nil && !dbroute.IsUnavailable(err) && ctx.Err() == nil {
			// Something in the batch the database refuses: find it by
			// applying one event at a time, so the others go through.
			outcomes, err = s.applyOneByOne(ctx, b.Events, todo, res.Results)
		}
		if err != nil {
			return BatchResult{}, unavailable("apply events", err)
		}
		now := s.now()
		for _, i := range todo {
			r := &res.Results[i]
			if r.Outcome == OutcomeFailed {
				continue
			}
			o, ok := outcomes[b.Events[i].ID]
			if !ok {
				r.Outcome = OutcomeDuplicate
				continue
			}
			r.Outcome = o
			if c := b.Events[i].CommittedAt; !c.IsZero() {
				s.m.latency.Observe(max(now.Sub(c), 0).Seconds())
			}
		}
	}
	for _, r := range res.Results {
		s.m.events.WithLabelValues(r.Outcome).Inc()
	}
	s.m.apply.Observe(s.now().Sub(start).Seconds())
	return res, nil
}

// apply runs applySQL for events[idx] and returns the outcome of each event
// that was new (applied or stale).
func (s *Store) apply(ctx context.Context, events []Event, idx []int) (map[string]string, error) {
	n := len(idx)
	ids, users, peers := make([]uuid.UUID, n), make([]uuid.UUID, n), make([]uuid.UUID, n)
	outboxIDs, seqs := make([]int64, n), make([]int64, n)
	kinds, unread := make([]string, n), make([]int32, n)
	committed := make([]*time.Time, n)
	for j, i := range idx {
		e := events[i]
		ids[j], users[j], peers[j] = uuid.MustParse(e.ID), uuid.MustParse(e.UserID), uuid.MustParse(e.PeerID)
		outboxIDs[j], seqs[j], kinds[j], unread[j] = e.OutboxID, e.Seq, e.Kind, int32(e.Unread)
		if !e.CommittedAt.IsZero() {
			committed[j] = &events[i].CommittedAt
		}
	}
	out := make(map[string]string, n)
	err := s.db.Transact(ctx, func(tx pgx.Tx) error {
		clear(out)
		rows, err := tx.Query(ctx, applySQL, ids, outboxIDs, kinds, users, peers, seqs, unread, committed)
		if err != nil {
			return err
		}
		var id uuid.UUID
		var outcome string
		_, err = pgx.ForEachRow(rows, []any{&id, &outcome}, func() error {
			out[id.String()] = outcome
			return nil
		})
		return err
	})
	return out, err
}

// applyOneByOne applies each event of idx in its own transaction, marking
// those the database refuses as failed in results. It stops with an error
// when the database becomes unavailable.
func (s *Store) applyOneByOne(ctx context.Context, events []Event, idx []int, results []Result) (map[string]string, error) {
	out := make(map[string]string, len(idx))
	for _, i := range idx {
		o, err := s.apply(ctx, events, []int{i})
		if err != nil && dbroute.IsUnavailable(err) {
			return nil, err
		}
		if err != nil {
			results[i].Outcome, results[i].Reason = OutcomeFailed, err.Error()
			continue
		}
		maps.Copy(out, o)
	}
	return out, nil
}

// Unread returns userID's counters: every direction the counter knows with
// userID as the reader, most unread first and at most
// social.MaxUnreadDialogs of them, and the total over all. It reads from a
// replica that has replayed userID's own last apply (dbroute session), else
// from the primary. Returns EINVALID for an id that is not a UUID,
// EUNAVAILABLE when no node can answer.
func (s *Store) Unread(ctx context.Context, userID string) (social.Unread, error) {
	if !isUUID(userID) {
		return social.Unread{}, social.Invalid(map[string]string{"user_id": "must be a UUID"})
	}
	u := social.Unread{Dialogs: []social.DialogUnread{}}
	err := s.db.ReadReplica(dbroute.WithSession(ctx, userID), func(q dbroute.Querier) error {
		u.Total, u.Dialogs = 0, u.Dialogs[:0]
		rows, err := q.Query(ctx, `SELECT peer_id, unread, sum(unread) OVER ()
			FROM counters WHERE user_id = $1
			ORDER BY unread DESC, peer_id
			LIMIT $2`, userID, social.MaxUnreadDialogs)
		if err != nil {
			return err
		}
		var peer uuid.UUID
		var n int
		var total int64
		_, err = pgx.ForEachRow(rows, []any{&peer, &n, &total}, func() error {
			u.Dialogs = append(u.Dialogs, social.DialogUnread{PeerID: peer.String(), Unread: n})
			u.Total = int(total)
			return nil
		})
		return err
	})
	if err != nil {
		return social.Unread{}, unavailable("read counters", err)
	}
	return u, nil
}

// PruneInbox deletes inbox rows received before the cutoff, in bounded
// chunks, and returns how many went. A redelivery of a pruned event is then
// no longer recognized as a duplicate, but it is stale (its seq is not above
// the stored one), so it still changes nothing.
func (s *Store) PruneInbox(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for range 1000 {
		var n int64
		err := s.db.Transact(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM inbox WHERE event_id IN (
				SELECT event_id FROM inbox WHERE received_at < $1 LIMIT 5000)`, before)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("prune inbox: %w", err)
		}
		total += n
		if n < 5000 {
			break
		}
	}
	return total, nil
}

// unavailable wraps err of op as EUNAVAILABLE when the database could not
// serve, else with op alone.
func unavailable(op string, err error) error {
	if dbroute.IsUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, &social.Error{Code: social.EUNAVAILABLE, Message: "counter database unavailable"}, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
