package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// DefaultCelebrityFollowers is the follower count above which an author's
// posts are merged at read instead of fanned out.
const DefaultCelebrityFollowers = 10000

// rebuildMarkTTL bounds how long a rebuild may take before its result is
// no longer stored.
const rebuildMarkTTL = 30 * time.Second

// Source is the SQL feed that serves pages while Redis cannot and that
// Check compares timelines with; *postgres.PostStore is one.
type Source interface {
	// Feed returns the page [offset, offset+limit) of the newest
	// social.FeedCap posts of the users userID follows, newest first.
	Feed(ctx context.Context, userID string, offset, limit int) ([]social.Post, error)
}

// Config is what readers and the worker share.
type Config struct {
	// DB is the main database: posts, friends, feed_outbox.
	DB *dbroute.DB
	// Redis holds the timelines.
	Redis redis.UniversalClient
	// SQL serves pages without Redis and is the truth for Check.
	SQL Source
	// CelebrityFollowers is the follower count above which an author is
	// merged at read; 0 means DefaultCelebrityFollowers.
	CelebrityFollowers int
	// Log receives warnings; nil discards them.
	Log *slog.Logger
	// Registry receives the metrics of each Reader and Worker built from
	// the Config (nil: none); build one of each per registry.
	Registry prometheus.Registerer
}

func (c Config) withDefaults() (Config, error) {
	if c.DB == nil || c.Redis == nil || c.SQL == nil {
		return c, errors.New("feed: need the database, Redis and the SQL feed")
	}
	if c.CelebrityFollowers <= 0 {
		c.CelebrityFollowers = DefaultCelebrityFollowers
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// list names the Redis keys of one cached list: a user's timeline or a
// celebrity's own newest posts. All keys of a list share a hash tag, so the
// scripts that touch them work on Redis Cluster too.
//
//   - meta (hash): present exactly when the list is cached; field complete
//     is 1 when the list holds every post it could (fewer than the cap
//     exist), 0 when older posts may exist beyond its last entry.
//   - posts (sorted set): post ids scored by orderKey, newest highest.
//   - celebs (set, timelines only): the celebrities the user follows.
//   - rebuild (string): the token of the rebuild under way, if any.
//   - promoted (string, author lists only): see Applier.promote.
type list struct{ meta, posts, celebs, rebuild string }

func timelineKeys(userID string) list { return keysOf("u:" + userID) }
func authorKeys(authorID string) list { return keysOf("a:" + authorID) }

func keysOf(tag string) list {
	p := "feed:{" + tag + "}:"
	return list{meta: p + "m", posts: p + "t", celebs: p + "c", rebuild: p + "r"}
}

func (l list) all() []string { return []string{l.meta, l.posts, l.celebs, l.rebuild} }

// promoted names the mark that a celebrity's followers' timelines all
// merge the celebrity at read (author lists only).
func (l list) promoted() string { return strings.TrimSuffix(l.meta, "m") + "p" }

// Scripts; each works on one list and is atomic. A change to a list that
// is not cached is dropped, and cancels a rebuild under way (its snapshot
// may predate the change), so that a rebuild never stores a stale list.

// addScript adds posts (ARGV: cap, source complete, then score/member pairs)
// to a cached list, keeping it a prefix of the truth: unless the list is
// complete, a post older than its last entry is not added, since posts
// between them may be missing. The list is cut to cap; complete stays 1
// only if the source was complete and nothing was cut.
var addScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
  return 0
end
local cap = tonumber(ARGV[1])
local complete = redis.call('HGET', KEYS[1], 'complete') == '1'
local floor = nil
if not complete then
  local last = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #last == 0 then return 1 end
  floor = tonumber(last[2])
end
for i = 3, #ARGV, 2 do
  if floor == nil or tonumber(ARGV[i]) >= floor then
    redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i+1])
  end
end
local over = redis.call('ZCARD', KEYS[2]) - cap
if over > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
if complete and (ARGV[2] ~= '1' or over > 0) then
  redis.call('HSET', KEYS[1], 'complete', '0')
end
return 1
`)

// removeScript removes posts (ARGV) from a cached list.
var removeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
  return 0
end
redis.call('ZREM', KEYS[2], unpack(ARGV))
return 1
`)

// addCelebScript records that the timeline's user follows a celebrity
// (ARGV[1]).
var addCelebScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
  return 0
end
redis.call('SADD', KEYS[4], ARGV[1])
return 1
`)

// storeScript replaces a list with a rebuilt one if the rebuild's token
// (ARGV[1]) is still the one in the rebuild key. ARGV: token, complete,
// number of celebrities, the celebrities, then score/member pairs.
var storeScript = redis.NewScript(`
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  redis.call('SADD', KEYS[3], ARGV[i])
end
local i = 4 + n
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  redis.call('ZADD', KEYS[2], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('HSET', KEYS[1], 'complete', ARGV[2])
return 1
`)

// scriptKeys are a list's keys in the order the scripts take them.
func (l list) scriptKeys() []string { return []string{l.meta, l.posts, l.rebuild, l.celebs} }

// storeKeys are a list's keys in the order storeScript takes them.
func (l list) storeKeys() []string { return []string{l.meta, l.posts, l.celebs, l.rebuild} }

// entry is one post of a list.
// Its score is the post's created_at in microseconds, the precision
// PostgreSQL keeps, exact in a float64 for millennia. Ties are broken by the
// member (the id's text, which sorts as the uuid does), so a sorted set's
// order is the SQL feed's ORDER BY created_at DESC, id DESC.
type entry struct {
	score  int64
	member string
}

// newer orders entries as the feed does: newest first, ties by id.
func newer(a, b entry) int {
	switch {
	case a.score != b.score:
		if a.score > b.score {
			return -1
		}
		return 1
	case a.member > b.member:
		return -1
	case a.member < b.member:
		return 1
	}
	return 0
}

// entryArgs flattens entries into score/member script arguments.
func entryArgs(args []any, es []entry) []any {
	for _, e := range es {
		args = append(args, strconv.FormatInt(e.score, 10), e.member)
	}
	return args
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// wrap names the operation of a Redis error.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}
