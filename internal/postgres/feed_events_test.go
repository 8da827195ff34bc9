package postgres_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"socnet/internal/feed"
	"socnet/internal/social"
)

// feedEvent is the part of a feed_outbox row a write decides.
type feedEvent struct {
	Kind, Author, Post, User string
}

// feedEvents returns the feed_outbox rows in order and deletes them.
func (e *env) feedEvents(tb testing.TB) []feedEvent {
	tb.Helper()
	ctx := context.Background()
	rows, err := e.admin.Query(ctx, `DELETE FROM feed_outbox RETURNING id, kind, author_id::text,
		coalesce(post_id::text, ''), coalesce(user_id::text, '')`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	type row struct {
		id int64
		ev feedEvent
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.ev.Kind, &r.ev.Author, &r.ev.Post, &r.ev.User); err != nil {
			tb.Fatal(err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	out := []feedEvent{}
	for len(got) > 0 { // RETURNING has no order: take the smallest id each time
		min := 0
		for i := range got {
			if got[i].id < got[min].id {
				min = i
			}
		}
		out = append(out, got[min].ev)
		got = append(got[:min], got[min+1:]...)
	}
	return out
}

// Every write that changes a timeline records the feed's event in its own
// transaction, and a write that changes nothing records none.
func TestWritesRecordFeedEvents(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	author, reader, other := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков"), e.mustUser(t, "Вера", "Глебова")
	p := social.Post{AuthorUserID: author.ID, Text: "пост"}
	missing := uuid.NewString()

	steps := []struct {
		name string
		do   func() error
		want []feedEvent
	}{
		{"create", func() error { return e.posts.CreatePost(ctx, &p) },
			[]feedEvent{{Kind: feed.KindPostCreated, Author: author.ID, Post: "POST"}}},
		{"update", func() error { return e.posts.UpdatePost(ctx, author.ID, p.ID, "новый текст") },
			[]feedEvent{{Kind: feed.KindPostUpdated, Author: author.ID, Post: "POST"}}},
		{"update by another", func() error { _ = e.posts.UpdatePost(ctx, other.ID, p.ID, "x"); return nil }, []feedEvent{}},
		{"follow", func() error { return e.friends.SetFriend(ctx, reader.ID, author.ID) },
			[]feedEvent{{Kind: feed.KindFriendSet, Author: author.ID, User: reader.ID}}},
		{"follow again", func() error { return e.friends.SetFriend(ctx, reader.ID, author.ID) }, []feedEvent{}},
		{"follow a missing user", func() error { _ = e.friends.SetFriend(ctx, reader.ID, missing); return nil }, []feedEvent{}},
		{"unfollow", func() error { return e.friends.DeleteFriend(ctx, reader.ID, author.ID) },
			[]feedEvent{{Kind: feed.KindFriendDeleted, Author: author.ID, User: reader.ID}}},
		{"unfollow again", func() error { return e.friends.DeleteFriend(ctx, reader.ID, author.ID) }, []feedEvent{}},
		{"delete by another", func() error { _ = e.posts.DeletePost(ctx, other.ID, p.ID); return nil }, []feedEvent{}},
		{"delete", func() error { return e.posts.DeletePost(ctx, author.ID, p.ID) },
			[]feedEvent{{Kind: feed.KindPostDeleted, Author: author.ID, Post: "POST"}}},
		{"delete again", func() error { _ = e.posts.DeletePost(ctx, author.ID, p.ID); return nil }, []feedEvent{}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for i := range s.want {
			if s.want[i].Post == "POST" {
				s.want[i].Post = p.ID
			}
		}
		if diff := cmp.Diff(s.want, e.feedEvents(t)); diff != "" {
			t.Errorf("%s: feed events (-want +got):\n%s", s.name, diff)
		}
	}
}
