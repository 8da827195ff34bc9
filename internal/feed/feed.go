package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
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
	// merged at read; 0 means DefaultCelebrityFollowers. A celebrity who
	// falls to 90% of it is fanned out again (Applier.demote).
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

// keyPrefix starts every key of the feed. It names the format of the lists:
// a change of format gets a new prefix, so that no reader ever takes a list
// of another format for its own (the old keys are dropped by
// DropStaleKeys, or vanish with the Redis that held them). v2: post ids are
// their 16 bytes, not their 36-character text.
const keyPrefix = "feed:v2:"

// stalePattern matches the keys of earlier formats (v1: "feed:{...").
const stalePattern = "feed:{*"

// list names the Redis keys of one cached list: a user's timeline or a
// celebrity's own newest posts. All keys of a list share a hash tag, so the
// scripts that touch them work on Redis Cluster too.
//
//   - meta (hash): present exactly when the list is cached; field complete
//     is 1 when the list holds every post it could (fewer than the cap
//     exist), 0 when older posts may exist beyond its last entry.
//   - posts (sorted set): post ids (PostMember) scored by the post's
//     created_at in microseconds, newest highest.
//   - celebs (set, timelines only): the celebrities the user follows (ids
//     as text).
//   - rebuild (string): the token of the rebuild under way, if any.
//   - scratch (sorted set): where a script builds a large list before it
//     becomes posts; it never outlives the script.
//   - promoted (string, author lists only): see Applier.promote.
type list struct{ meta, posts, celebs, rebuild, scratch string }

func timelineKeys(userID string) list { return keysOf("u:" + userID) }
func authorKeys(authorID string) list { return keysOf("a:" + authorID) }

func keysOf(tag string) list {
	p := keyPrefix + "{" + tag + "}:"
	return list{meta: p + "m", posts: p + "t", celebs: p + "c", rebuild: p + "r", scratch: p + "x"}
}

func (l list) all() []string { return []string{l.meta, l.posts, l.celebs, l.rebuild} }

// promoted names the mark that a celebrity's followers' timelines all
// merge the celebrity at read (author lists only).
func (l list) promoted() string { return strings.TrimSuffix(l.meta, "m") + "p" }

// TimelineKey is the sorted set that holds userID's cached timeline, for
// tools and tests that look into Redis; its members are PostMember(id).
func TimelineKey(userID string) string { return timelineKeys(userID).posts }

// AuthorListKey is the sorted set that holds a celebrity's own newest
// posts, for tools and tests.
func AuthorListKey(authorID string) string { return authorKeys(authorID).posts }

// PostMember is how a list stores a post id: its 16 bytes. Redis orders
// members of equal score bytewise, as PostgreSQL orders uuids, so a sorted
// set's order is the SQL feed's ORDER BY created_at DESC, id DESC.
func PostMember(id uuid.UUID) string { return string(id[:]) }

// postOfMember is the post id a list member stores.
func postOfMember(m string) (uuid.UUID, error) {
	id, err := uuid.FromBytes([]byte(m))
	if err != nil {
		return uuid.Nil, fmt.Errorf("cached post id %x: %w", m, err)
	}
	return id, nil
}

// memberText is a member as a post id's text, for reports; a member that is
// not a post id shows as hex.
func memberText(m string) string {
	id, err := uuid.FromBytes([]byte(m))
	if err != nil {
		return fmt.Sprintf("%x", m)
	}
	return id.String()
}

// Memory. A timeline is a sorted set of at most social.FeedCap 16-byte
// members with integer scores. Redis keeps a sorted set of at most
// zset-max-listpack-entries members (128 by default) as one packed
// listpack, about 28 bytes a post, and a larger one as a skiplist with a
// dict, about 120 bytes a post: 29 KB against 119 KB per full timeline.
// RedisSettings raises the limit above the cap; the scripts keep every
// list at most one post over the cap at any moment (a larger sorted set
// turns into a skiplist and never turns back).
//
// An insert into a listpack costs a scan of the list, so the scripts add
// one post at a time only for a few posts; a rebuild or a merge builds the
// list as a skiplist in the scratch key (a member longer than
// zset-max-listpack-value makes ZADD create one) and copies it into place
// with ZUNIONSTORE, which stores a small result as a listpack. Either way
// the content is the same; the encoding only changes the memory and CPU.

// RedisSettings are the redis.conf lines the feed's Redis should have (the
// stack's `up` writes them); without them the feed is as correct, with four
// times the memory.
func RedisSettings() []string {
	return []string{fmt.Sprintf("zset-max-listpack-entries %d", social.FeedCap+64)}
}

// fewPosts is the most posts a script adds one at a time into a list.
const fewPosts = 8

// luaSkiplist is a Lua function for the scripts: skiplist(key, args, from,
// to) makes key a sorted set of the score/member pairs args[from..to],
// encoded as a skiplist (built in O(n log n), where a listpack takes
// O(n^2)): the first ZADD of a member longer than zset-max-listpack-value
// creates one.
var luaSkiplist = `
local function skiplist(key, args, from, to)
  local long = string.rep('~', 128)
  redis.call('DEL', key)
  redis.call('ZADD', key, 0, long)
  local i = from
  while i <= to do
    local j = math.min(i + 999, to)
    redis.call('ZADD', key, unpack(args, i, j))
    i = j + 1
  end
  redis.call('ZREM', key, long)
end
`

// Scripts; each works on one list and is atomic. A change to a list that
// is not cached is dropped, and cancels a rebuild under way (its snapshot
// may predate the change), so that a rebuild never stores a stale list.
// KEYS are list.scriptKeys: meta, posts, rebuild, celebs, scratch.

// addScript adds posts (ARGV: cap, source complete, then score/member
// pairs) to a cached list, keeping it a prefix of the truth: unless the list
// is complete, a post older than its last entry is not added, since posts
// between them may be missing. The list is cut to cap; complete stays 1
// only if the source was complete and nothing was cut.
var addScript = redis.NewScript(luaSkiplist + `
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
  return 0
end
local cap = tonumber(ARGV[1])
local complete = redis.call('HGET', KEYS[1], 'complete') == '1'
local last = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local floor = nil
if not complete then
  if #last == 0 then return 1 end
  floor = tonumber(last[2])
end
-- A post older than the oldest of a full list would be cut at once.
local oldest = nil
if #last > 0 and redis.call('ZCARD', KEYS[2]) >= cap then oldest = tonumber(last[2]) end
local add, cut = {}, false
for i = 3, #ARGV, 2 do
  local s = tonumber(ARGV[i])
  if floor == nil or s >= floor then
    if oldest ~= nil and s < oldest then
      cut = true
    else
      add[#add + 1] = ARGV[i]
      add[#add + 1] = ARGV[i + 1]
    end
  end
end
if #add <= 2 * ` + strconv.Itoa(fewPosts) + ` then
  for i = 1, #add, 2 do
    redis.call('ZADD', KEYS[2], add[i], add[i + 1])
    if redis.call('ZCARD', KEYS[2]) > cap then
      redis.call('ZREMRANGEBYRANK', KEYS[2], 0, 0)
      cut = true
    end
  end
else
  skiplist(KEYS[5], add, 1, #add)
  redis.call('ZUNIONSTORE', KEYS[5], 2, KEYS[5], KEYS[2], 'AGGREGATE', 'MAX')
  local over = redis.call('ZCARD', KEYS[5]) - cap
  if over > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, over - 1)
    cut = true
  end
  redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[5])
  redis.call('DEL', KEYS[5])
end
if complete and (ARGV[2] ~= '1' or cut) then
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

// celebScript adds (ARGV[1] = "+") or removes ("-") a celebrity (ARGV[2])
// from the ones the timeline's user follows.
var celebScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
  return 0
end
if ARGV[1] == '+' then
  redis.call('SADD', KEYS[4], ARGV[2])
else
  redis.call('SREM', KEYS[4], ARGV[2])
end
return 1
`)

// storeScript replaces a list with a rebuilt one if the rebuild's token
// (ARGV[1]) is still the one in the rebuild key. ARGV: token, complete,
// number of celebrities, the celebrities, then score/member pairs.
var storeScript = redis.NewScript(luaSkiplist + `
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  redis.call('SADD', KEYS[4], ARGV[i])
end
local first = 4 + n
if #ARGV - first + 1 > 2 * ` + strconv.Itoa(fewPosts) + ` then
  skiplist(KEYS[5], ARGV, first, #ARGV)
  redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[5])
  redis.call('DEL', KEYS[5])
elseif #ARGV >= first then
  redis.call('ZADD', KEYS[2], unpack(ARGV, first, #ARGV))
end
redis.call('HSET', KEYS[1], 'complete', ARGV[2])
return 1
`)

// scriptKeys are a list's keys in the order the scripts take them.
func (l list) scriptKeys() []string {
	return []string{l.meta, l.posts, l.rebuild, l.celebs, l.scratch}
}

// entry is one post of a list: its score is the post's created_at in
// microseconds, the precision PostgreSQL keeps, exact in a float64 for
// millennia (and a 64-bit integer in a listpack); its member is
// PostMember(id).
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
