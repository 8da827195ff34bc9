package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"socnet/internal/social"
)

// RateLimit is a token bucket: Burst attempts at once, refilled at Rate
// attempts per second. A zero Rate turns the limit off.
type RateLimit struct {
	Rate  float64
	Burst int
}

// Defaults of Limits, for a server whose password hashes cost tens of
// milliseconds of CPU each.
var (
	// DefaultAddrLimit bounds POST /login and POST /user/register per client
	// address: 50 at once (a client starting up logs in a few sessions), then 5
	// per second.
	DefaultAddrLimit = RateLimit{Rate: 5, Burst: 50}
	// DefaultUserLimit bounds POST /login per target user: 10 at once, then
	// one every 10 seconds, whatever the addresses the attempts come from.
	DefaultUserLimit = RateLimit{Rate: 0.1, Burst: 10}
)

// DefaultMaxLimitKeys is how many addresses or users each limit remembers
// when Limits.MaxKeys is 0.
const DefaultMaxLimitKeys = 100_000

// Limits bound the requests that make the server hash a password, the
// costliest thing a client can ask for without an account.
type Limits struct {
	// PerAddr bounds POST /login and POST /user/register per client address
	// (an IPv6 client by its /64).
	PerAddr RateLimit
	// PerUser bounds POST /login per target user id.
	PerUser RateLimit
	// MaxKeys bounds the memory of each limit: past it, the addresses or
	// users not seen for longest are forgotten (and start again with a full
	// bucket). 0 means DefaultMaxLimitKeys.
	MaxKeys int
	// TrustedProxies are the peers whose X-Forwarded-For and X-Real-IP
	// headers name the client. Empty: the headers are ignored and the
	// client is the TCP peer.
	TrustedProxies []netip.Prefix
	// Shared, when set, keeps the buckets in that Redis, so that every API
	// server using it spends from one bucket per client address and one
	// per user: behind a balancer, servers with buckets of their own would
	// each allow the whole budget. While Redis does not answer, each server
	// falls back to its own buckets, so the limits hold per server and are
	// never off. MaxKeys does not apply there: a Redis bucket expires once
	// it would be full again.
	Shared redis.Scripter
}

// ParseTrustedProxies parses a comma- or space-separated list of CIDRs or
// single addresses, as --trusted-proxies takes it.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want a CIDR or an address", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// limiter keeps one token bucket per key in two generations: when the
// current one holds half the allowed keys it becomes the previous one and
// the old previous one is dropped, so memory stays under maxKeys and a key
// in use is never forgotten.
type limiter struct {
	limit    RateLimit
	now      func() time.Time
	half     int
	mu       sync.Mutex
	cur, old map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(l RateLimit, maxKeys int, now func() time.Time) *limiter {
	if l.Rate <= 0 {
		return nil
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxLimitKeys
	}
	return &limiter{limit: l, now: now, half: max(1, maxKeys/2),
		cur: make(map[string]*bucket), old: make(map[string]*bucket)}
}

// take spends one token of key's bucket. When the bucket is empty it
// returns false and how long until a token is back. A nil limiter allows
// everything.
func (l *limiter) take(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	burst := float64(max(1, l.limit.Burst))
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.cur[key]
	if !ok {
		if b, ok = l.old[key]; ok {
			delete(l.old, key)
		} else {
			b = &bucket{tokens: burst, last: now}
		}
		if len(l.cur) >= l.half {
			l.old, l.cur = l.cur, make(map[string]*bucket, l.half)
		}
		l.cur[key] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = math.Min(burst, b.tokens+elapsed*l.limit.Rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.limit.Rate * float64(time.Second))
	return false, wait
}

// authLimits are the limits of the routes that hash passwords.
type authLimits struct {
	addr, user *limiter
	trusted    []netip.Prefix
	shared     *sharedBuckets
}

func newAuthLimits(l Limits, now func() time.Time, log *slog.Logger) *authLimits {
	a := &authLimits{
		addr:    newLimiter(l.PerAddr, l.MaxKeys, now),
		user:    newLimiter(l.PerUser, l.MaxKeys, now),
		trusted: l.TrustedProxies,
	}
	if l.Shared != nil {
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		a.shared = &sharedBuckets{rdb: l.Shared, log: log}
	}
	return a
}

// allow spends a token of r's client address and, when userID is not
// empty, one of that user; it returns an ETOOMANY error when either is
// spent. The address is checked first, so that one client's flood does not
// also lock its targets out.
func (a *authLimits) allow(r *http.Request, userID string) error {
	if ok, wait := a.take(r.Context(), "addr", a.addr, addrKey(clientAddr(r, a.trusted))); !ok {
		return &retryLater{after: wait, err: social.Errorf(social.ETOOMANY, "too many attempts from your address; retry later")}
	}
	if userID == "" {
		return nil
	}
	if ok, wait := a.take(r.Context(), "user", a.user, userID); !ok {
		return &retryLater{after: wait, err: social.Errorf(social.ETOOMANY, "too many login attempts for this user; retry later")}
	}
	return nil
}

// take spends a token of key in the shared bucket of that kind when there
// is one and Redis answers, else in this server's own (l).
func (a *authLimits) take(ctx context.Context, kind string, l *limiter, key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	if a.shared != nil {
		if ok, wait, err := a.shared.take(ctx, kind, l.limit, key); err == nil {
			return ok, wait
		}
	}
	return l.take(key)
}

// sharedBuckets are token buckets in Redis, one hash per key (tokens, and
// the time of the last take in microseconds of Redis's clock, which every
// server shares), updated by one script so that concurrent takes from
// several servers never spend a token twice.
type sharedBuckets struct {
	rdb redis.Scripter
	log *slog.Logger
	// warned is when the last failure was logged (Unix nanoseconds), so
	// that an outage logs a line per sharedWarnEvery, not per request.
	warned atomic.Int64
}

// sharedKeyPrefix names the buckets' keys in Redis: ratelimit:v1:KIND:KEY.
const sharedKeyPrefix = "ratelimit:v1:"

// sharedWarnEvery bounds how often a Redis failure of the limits is logged.
const sharedWarnEvery = 10 * time.Second

var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(b[1])
local last = tonumber(b[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = math.min(burst, tokens + (now - last) / 1000000 * rate)
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(math.max(now, last)))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, wait}
`)

// take spends a token of key's bucket of kind under limit l; it returns
// Redis's error, after logging it (at most every sharedWarnEvery), when
// the bucket could not be read.
func (s *sharedBuckets) take(ctx context.Context, kind string, l RateLimit, key string) (bool, time.Duration, error) {
	res, err := takeScript.Run(ctx, s.rdb, []string{sharedKeyPrefix + kind + ":" + key},
		strconv.FormatFloat(l.Rate, 'g', -1, 64), max(1, l.Burst)).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("rate limit script returned %d values, want 2", len(res))
	}
	if err != nil {
		now := time.Now().UnixNano()
		if last := s.warned.Load(); now-last >= int64(sharedWarnEvery) && s.warned.CompareAndSwap(last, now) {
			s.log.Warn("shared rate limits unavailable: this server limits with its own buckets", "err", err)
		}
		return false, 0, err
	}
	return res[0] == 1, time.Duration(res[1]) * time.Millisecond, nil
}

// retryLater is an error the client may retry after a while, which the
// answer's Retry-After says.
type retryLater struct {
	after time.Duration
	err   *social.Error
}

func (e *retryLater) Error() string { return e.err.Error() }
func (e *retryLater) Unwrap() error { return e.err }

// retryAfterSeconds is the Retry-After of err: whole seconds, at least 1.
func retryAfterSeconds(err error) string {
	var rl *retryLater
	if errors.As(err, &rl) {
		return strconv.Itoa(max(1, int(math.Ceil(rl.after.Seconds()))))
	}
	return "1"
}

// clientAddr returns the address of the client of r: the TCP peer, or, when
// the peer is a trusted proxy, the last address of X-Forwarded-For that is
// not a trusted proxy (X-Real-IP when there is no X-Forwarded-For). The
// headers of an untrusted peer are ignored: anyone can send them.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := peerAddr(r.RemoteAddr)
	if len(trusted) == 0 || !isTrusted(peer, trusted) {
		return peer
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(strings.Join(xff, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				return peer // a malformed chain names no one we can trust
			}
			a = a.Unmap()
			if !isTrusted(a, trusted) || i == 0 {
				return a
			}
		}
	}
	if a, err := netip.ParseAddr(strings.TrimSpace(r.Header.Get("X-Real-IP"))); err == nil {
		return a.Unmap()
	}
	return peer
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addrKey is the key of a client address: an IPv6 client is limited by its
// /64, the block one subscriber usually holds.
func addrKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
