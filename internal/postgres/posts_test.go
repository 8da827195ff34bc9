package postgres_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"socnet/internal/social"
)

func TestPostLifecycle(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	author, other := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков")
	before := time.Now()
	p := social.Post{AuthorUserID: author.ID, Text: "Первый пост"}
	if err := e.posts.CreatePost(ctx, &p); err != nil {
		t.Fatalf("CreatePost: %v", err)
	}
	if _, err := uuid.Parse(p.ID); err != nil || p.CreatedAt.Before(before.Add(-time.Minute)) {
		t.Fatalf("CreatePost set ID %q, CreatedAt %v", p.ID, p.CreatedAt)
	}
	got, err := e.posts.Post(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("Post (-want +got):\n%s", diff)
	}

	// Only the author may change it.
	wantCode(t, e.posts.UpdatePost(ctx, other.ID, p.ID, "чужой текст"), social.EFORBIDDEN)
	wantCode(t, e.posts.DeletePost(ctx, other.ID, p.ID), social.EFORBIDDEN)
	if got, _ := e.posts.Post(ctx, p.ID); got.Text != "Первый пост" {
		t.Fatalf("text %q after a refused update", got.Text)
	}
	// A refused text changes nothing, and another author's post with a bad
	// text is still forbidden, not invalid.
	wantField(t, e.posts.UpdatePost(ctx, author.ID, p.ID, ""), "text")
	wantField(t, e.posts.UpdatePost(ctx, author.ID, p.ID, strings.Repeat("ы", social.MaxPostLen+1)), "text")
	wantCode(t, e.posts.UpdatePost(ctx, other.ID, p.ID, ""), social.EFORBIDDEN)

	if err := e.posts.UpdatePost(ctx, author.ID, p.ID, "Исправленный пост"); err != nil {
		t.Fatalf("UpdatePost: %v", err)
	}
	if got, _ := e.posts.Post(ctx, p.ID); got.Text != "Исправленный пост" || !got.CreatedAt.Equal(p.CreatedAt) {
		t.Fatalf("after update: %+v", got)
	}
	if err := e.posts.DeletePost(ctx, author.ID, p.ID); err != nil {
		t.Fatalf("DeletePost: %v", err)
	}
	_, err = e.posts.Post(ctx, p.ID)
	wantCode(t, err, social.ENOTFOUND)
	wantCode(t, e.posts.UpdatePost(ctx, author.ID, p.ID, "снова"), social.ENOTFOUND)
	wantCode(t, e.posts.DeletePost(ctx, author.ID, p.ID), social.ENOTFOUND)
	wantCode(t, e.posts.DeletePost(ctx, other.ID, p.ID), social.ENOTFOUND)
}

func TestPostErrors(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	author := e.mustUser(t, "Анна", "Белова")
	tests := []struct {
		name  string
		post  social.Post
		code  string
		field string
	}{
		{"empty text", social.Post{AuthorUserID: author.ID}, social.EINVALID, "text"},
		{"long text", social.Post{AuthorUserID: author.ID, Text: strings.Repeat("ы", social.MaxPostLen+1)}, social.EINVALID, "text"},
		{"NUL in text", social.Post{AuthorUserID: author.ID, Text: "a\x00b"}, social.EINVALID, ""},
		{"unknown author", social.Post{AuthorUserID: unknownID, Text: "текст"}, social.ENOTFOUND, ""},
		{"malformed author", social.Post{AuthorUserID: "x", Text: "текст"}, social.EINVALID, "author_user_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.post
			err := e.posts.CreatePost(ctx, &p)
			if tt.field != "" {
				wantField(t, err, tt.field)
			} else {
				wantCode(t, err, tt.code)
			}
			if p.ID != "" {
				t.Errorf("ID set to %q on failure", p.ID)
			}
		})
	}
	if n := e.count(t, `SELECT count(*) FROM posts`); n != 0 {
		t.Errorf("%d posts stored by refused calls", n)
	}
	long := social.Post{AuthorUserID: author.ID, Text: strings.Repeat("ы", social.MaxPostLen)}
	if err := e.posts.CreatePost(ctx, &long); err != nil {
		t.Errorf("a post of MaxPostLen: %v", err)
	}
	_, err := e.posts.Post(ctx, unknownID)
	wantCode(t, err, social.ENOTFOUND)
	_, err = e.posts.Post(ctx, "x")
	wantField(t, err, "id")
	wantField(t, e.posts.UpdatePost(ctx, author.ID, "x", "t"), "id")
	wantField(t, e.posts.DeletePost(ctx, "x", long.ID), "author_user_id")
}

func TestFeed(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	reader := e.mustUser(t, "Читатель", "Лентин")
	b, c, d := e.mustUser(t, "Борис", "Б"), e.mustUser(t, "Вера", "В"), e.mustUser(t, "Даша", "Д")
	for _, f := range []social.User{b, c} {
		if err := e.friends.SetFriend(ctx, reader.ID, f.ID); err != nil {
			t.Fatal(err)
		}
	}
	// d follows reader: that must not bring d's posts into reader's feed.
	if err := e.friends.SetFriend(ctx, d.ID, reader.ID); err != nil {
		t.Fatal(err)
	}
	var want []social.Post // newest first
	for i, author := range []social.User{b, c, d, b, c, b} {
		p := social.Post{AuthorUserID: author.ID, Text: "пост " + author.FirstName + " " + string(rune('0'+i))}
		if err := e.posts.CreatePost(ctx, &p); err != nil {
			t.Fatal(err)
		}
		if author.ID != d.ID {
			want = append([]social.Post{p}, want...)
		}
	}
	tests := []struct {
		name          string
		offset, limit int
		want          []social.Post
	}{
		{"all", 0, 100, want},
		{"default limit", 0, 0, want},
		{"a page", 1, 2, want[1:3]},
		{"past the end", 10, 5, []social.Post{}},
		{"past the cap", social.FeedCap, 5, []social.Post{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.posts.Feed(ctx, reader.ID, tt.offset, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Feed(%d, %d) (-want +got):\n%s", tt.offset, tt.limit, diff)
			}
		})
	}
	if got, err := e.posts.Feed(ctx, d.ID, 0, 10); err != nil || len(got) != 0 {
		t.Errorf("feed of a user whose followee never posted: %v, %v", got, err)
	}
	_, err := e.posts.Feed(ctx, reader.ID, -1, 10)
	wantField(t, err, "offset")
	_, err = e.posts.Feed(ctx, "x", 0, 10)
	wantField(t, err, "user_id")
}

func TestFeedIsTheNewestFeedCap(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	reader := e.mustUser(t, "Читатель", "Лентин")
	authors := []social.User{e.mustUser(t, "Борис", "Б"), e.mustUser(t, "Вера", "В"), e.mustUser(t, "Глеб", "Г")}
	for _, a := range authors {
		if err := e.friends.SetFriend(ctx, reader.ID, a.ID); err != nil {
			t.Fatal(err)
		}
	}
	// 1,500 posts spread over the three authors, one second apart.
	_, err := e.admin.Exec(ctx, `INSERT INTO posts (id, author_user_id, text, created_at)
		SELECT gen_random_uuid(), ($1::uuid[])[1 + i % 3], 'пост ' || i, timestamptz '2024-01-01' + i * interval '1 second'
		FROM generate_series(1, 1500) i`, []string{authors[0].ID, authors[1].ID, authors[2].ID})
	if err != nil {
		t.Fatal(err)
	}
	var all []social.Post
	for offset := 0; ; offset += 300 {
		page, err := e.posts.Feed(ctx, reader.ID, offset, 300)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
	}
	if len(all) != social.FeedCap {
		t.Fatalf("paged through %d posts, want FeedCap=%d", len(all), social.FeedCap)
	}
	for i, p := range all {
		if want := "пост " + strconv.Itoa(1500-i); p.Text != want {
			t.Fatalf("post %d is %q, want %q", i, p.Text, want)
		}
	}
	got, err := e.posts.Feed(ctx, reader.ID, social.FeedCap-3, 10)
	if err != nil || len(got) != 3 {
		t.Errorf("the page across the cap: %d posts, %v; want 3", len(got), err)
	}
}
