package dbroute

import (
	"container/list"
	"context"
	"sync"
	"time"
)

type sessionKeyType struct{}

// WithSession returns a context whose queries belong to the session key (the
// authenticated user's id): after a Transact in the session, ReadReplica in
// the same session reads only from a node that has replayed that write.
// An empty key means no session.
func WithSession(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, sessionKeyType{}, key)
}

// sessionKey returns the session of ctx, "" when none.
func sessionKey(ctx context.Context) string {
	k, _ := ctx.Value(sessionKeyType{}).(string)
	return k
}

// sessions remembers, per session key, the WAL position its last write
// needs, for a bounded time and a bounded number of keys (the least recently
// written go first).
type sessions struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	now   func() time.Time
	byKey map[string]*list.Element
	order *list.List // front = most recently written
}

type sessionEntry struct {
	key     string
	pos     lsn
	expires time.Time
}

func newSessions(ttl time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, max: max, now: now, byKey: map[string]*list.Element{}, order: list.New()}
}

// record notes that key wrote up to pos; positions only move forward.
func (s *sessions) record(key string, pos lsn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp := s.now().Add(s.ttl)
	if el, ok := s.byKey[key]; ok {
		e := el.Value.(*sessionEntry)
		e.pos = max(e.pos, pos)
		e.expires = exp
		s.order.MoveToFront(el)
		return
	}
	s.byKey[key] = s.order.PushFront(&sessionEntry{key: key, pos: pos, expires: exp})
	// Entries are ordered by write time and share one TTL, so the expired
	// ones are all at the back.
	for back := s.order.Back(); back != nil; back = s.order.Back() {
		if s.order.Len() <= s.max && s.now().Before(back.Value.(*sessionEntry).expires) {
			break
		}
		s.remove(back)
	}
}

// need returns the position key's reads need, 0 when none or expired.
func (s *sessions) need(key string) lsn {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.byKey[key]
	if !ok {
		return 0
	}
	e := el.Value.(*sessionEntry)
	if !s.now().Before(e.expires) {
		s.remove(el)
		return 0
	}
	return e.pos
}

func (s *sessions) remove(el *list.Element) {
	s.order.Remove(el)
	delete(s.byKey, el.Value.(*sessionEntry).key)
}
