package feed

import (
	"context"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"socnet/internal/social"
)

// SetDemoteHook makes fn run after each step of a demotion, for tests that
// look at the timelines between the steps; it returns the undo.
func SetDemoteHook(fn func(step string)) (undo func()) {
	old := testHookDemote
	testHookDemote = fn
	return func() { testHookDemote = old }
}

// StoreTimeline stores userID's timeline of posts (scores in microseconds)
// as a rebuild does, and marks it complete.
func StoreTimeline(ctx context.Context, rdb redis.UniversalClient, userID string, scores []int64, ids []uuid.UUID) error {
	l := timelineKeys(userID)
	if err := rdb.Set(ctx, l.rebuild, "t", 0).Err(); err != nil {
		return err
	}
	args := entryArgs([]any{"t", "1", 0}, entries(scores, ids))
	return storeScript.Run(ctx, rdb, l.scriptKeys(), args...).Err()
}

// AddToTimeline adds posts to userID's cached timeline as the worker does.
func AddToTimeline(ctx context.Context, rdb redis.UniversalClient, userID string, scores []int64, ids []uuid.UUID) error {
	args := entryArgs([]any{social.FeedCap, "1"}, entries(scores, ids))
	return addScript.Run(ctx, rdb, timelineKeys(userID).scriptKeys(), args...).Err()
}

func entries(scores []int64, ids []uuid.UUID) []entry {
	es := make([]entry, len(ids))
	for i := range ids {
		es[i] = entry{score: scores[i], member: PostMember(ids[i])}
	}
	return es
}
