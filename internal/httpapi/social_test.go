package httpapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/social"
)

const missingID = "0195b1d2-7c3e-7a41-9f6b-3c2d1e0f9a8b"

// postJSON is a post as the API returns it.
type postJSON struct {
	ID           string `json:"id"`
	Text         string `json:"text"`
	AuthorUserID string `json:"author_user_id"`
}

// messageJSON is a dialog message as the API returns it.
type messageJSON struct {
	From string `json:"from"`
	To   string `json:"to"`
	Text string `json:"text"`
}

func TestFriends(t *testing.T) {
	e := mustEnv(t)
	me, token := e.mustUser(t, "Ivan", "Petrov")
	friend := e.mustRegister(t, validUser("Anna", "Sidorova"))
	put := func(path string) reply {
		return e.do(t, request{method: "PUT", path: path, token: token})
	}

	put("/friend/set/"+friend).wantStatus(t, 200)
	put("/friend/set/"+friend).wantStatus(t, 200) // twice is a no-op
	put("/friend/set/"+strings.ToUpper(friend)).wantStatus(t, 200)
	if c := e.mustCounts(t); c.Friends != 1 {
		t.Errorf("%d friendships; want 1", c.Friends)
	}

	// The friendship feeds me the friend's posts.
	friendToken := e.mustLogin(t, friend)
	e.do(t, request{method: "POST", path: "/post/create", token: friendToken, body: map[string]string{"text": "hello"}}).wantStatus(t, 200)
	if feed := e.mustFeed(t, token, ""); len(feed) != 1 {
		t.Errorf("feed has %d posts; want 1", len(feed))
	}

	before := e.mustCounts(t)
	r := put("/friend/set/"+missingID).wantStatus(t, 404)
	if r.error(t).Kind != social.ENOTFOUND {
		t.Errorf("code %q; want %q", r.error(t).Kind, social.ENOTFOUND)
	}
	put("/friend/set/"+me).wantStatus(t, 400)
	r = put("/friend/set/not-a-uuid").wantStatus(t, 400)
	if diff := cmp.Diff(map[string]string{"user_id": "must be a UUID"}, r.error(t).Fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	put("/friend/delete/not-a-uuid").wantStatus(t, 400)
	if after := e.mustCounts(t); after != before {
		t.Errorf("refused requests changed rows from %+v to %+v", before, after)
	}

	put("/friend/delete/"+friend).wantStatus(t, 200)
	put("/friend/delete/"+friend).wantStatus(t, 200)    // not a friend any more: a no-op
	put("/friend/delete/"+missingID).wantStatus(t, 200) // no such user: a no-op
	if c := e.mustCounts(t); c.Friends != 0 {
		t.Errorf("%d friendships after delete; want 0", c.Friends)
	}
	if feed := e.mustFeed(t, token, ""); len(feed) != 0 {
		t.Errorf("feed has %d posts after unfriending; want 0", len(feed))
	}
}

// mustFeed returns the bearer's feed with the query.
func (c *client) mustFeed(tb testing.TB, token, query string) []postJSON {
	tb.Helper()
	var feed []postJSON
	c.do(tb, request{method: "GET", path: "/post/feed" + query, token: token}).wantStatus(tb, 200).json(tb, &feed)
	return feed
}

// mustPost creates a post and returns its id.
func (c *client) mustPost(tb testing.TB, token, text string) string {
	tb.Helper()
	var id string
	c.do(tb, request{method: "POST", path: "/post/create", token: token, body: map[string]string{"text": text}}).
		wantStatus(tb, 200).json(tb, &id)
	return id
}

func TestPosts(t *testing.T) {
	e := mustEnv(t)
	author, token := e.mustUser(t, "Ivan", "Petrov")
	_, otherToken := e.mustUser(t, "Anna", "Sidorova")
	get := func(id string) reply { return e.do(t, request{method: "GET", path: "/post/get/" + id}) }

	text := "Привет, мир! <script>\n" + strings.Repeat("ж", 100)
	id := e.mustPost(t, token, text)
	var got postJSON
	get(id).wantStatus(t, 200).json(t, &got)
	if diff := cmp.Diff(postJSON{ID: id, Text: text, AuthorUserID: author}, got); diff != "" {
		t.Errorf("post (-want +got):\n%s", diff)
	}
	longest := strings.Repeat("ж", social.MaxPostLen)
	e.mustPost(t, token, longest)

	update := func(token string, body any) reply {
		return e.do(t, request{method: "PUT", path: "/post/update", token: token, body: body})
	}
	update(token, map[string]string{"id": id, "text": "edited"}).wantStatus(t, 200)
	get(id).wantStatus(t, 200).json(t, &got)
	if got.Text != "edited" {
		t.Errorf("text after update %q; want %q", got.Text, "edited")
	}

	before := e.mustCounts(t)
	r := update(otherToken, map[string]string{"id": id, "text": "hijacked"}).wantStatus(t, 403)
	if r.error(t).Kind != social.EFORBIDDEN {
		t.Errorf("code %q; want %q", r.error(t).Kind, social.EFORBIDDEN)
	}
	update(token, map[string]string{"id": missingID, "text": "x"}).wantStatus(t, 404)
	e.do(t, request{method: "PUT", path: "/post/delete/" + id, token: otherToken}).wantStatus(t, 403)
	e.do(t, request{method: "PUT", path: "/post/delete/" + missingID, token: token}).wantStatus(t, 404)
	e.do(t, request{method: "PUT", path: "/post/delete/xyz", token: token}).wantStatus(t, 400)
	get(id).wantStatus(t, 200).json(t, &got)
	if got.Text != "edited" {
		t.Errorf("text after refused changes %q; want %q", got.Text, "edited")
	}
	if after := e.mustCounts(t); after != before {
		t.Errorf("refused requests changed rows from %+v to %+v", before, after)
	}

	e.do(t, request{method: "PUT", path: "/post/delete/" + id, token: token}).wantStatus(t, 200)
	get(id).wantStatus(t, 404)
	e.do(t, request{method: "PUT", path: "/post/delete/" + id, token: token}).wantStatus(t, 404)
	get(missingID).wantStatus(t, 404)
	r = get("12345").wantStatus(t, 400)
	if diff := cmp.Diff(map[string]string{"id": "must be a UUID"}, r.error(t).Fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
}

// textBadBodies are refused by routes whose body holds a text of at most max
// characters.
func textBadBodies(max int) []badBody {
	return append(commonBadBodies(),
		badBody{"empty object", `{}`, 400, map[string]string{"text": "is required"}},
		badBody{"empty text", `{"text":""}`, 400, map[string]string{"text": "is required"}},
		badBody{"blank text", `{"text":" \n\t "}`, 400, map[string]string{"text": "is required"}},
		badBody{"null text", `{"text":null}`, 400, map[string]string{"text": "is required"}},
		badBody{"number text", `{"text":5}`, 400, map[string]string{"text": "must be a string"}},
		badBody{"array text", `{"text":["a"]}`, 400, map[string]string{"text": "must be a string"}},
		badBody{"long text", map[string]string{"text": strings.Repeat("ж", max+1)}, 400,
			map[string]string{"text": fmt.Sprintf("must be at most %d characters", max)}},
		badBody{"nul", `{"text":"a\u0000b"}`, 400, map[string]string{"text": "must not contain NUL characters"}},
		badBody{"upper-case key", `{"TEXT":"a","text":""}`, 400, map[string]string{"text": "is required"}},
	)
}

func TestPostBadInput(t *testing.T) {
	e := mustEnv(t)
	_, token := e.mustUser(t, "Ivan", "Petrov")
	id := e.mustPost(t, token, "original")

	t.Run("create", func(t *testing.T) {
		checkBadBodies(t, e, "POST", "/post/create", token, append(textBadBodies(social.MaxPostLen),
			badBody{"unknown id", map[string]string{"text": "a", "id": missingID}, 400, map[string]string{"id": "is not a known field"}},
			badBody{"author", map[string]string{"text": "a", "author_user_id": missingID}, 400,
				map[string]string{"author_user_id": "is not a known field"}},
		))
	})
	t.Run("update", func(t *testing.T) {
		withID := func(body string) string { return `{"id":"` + id + `",` + body[1:] }
		cases := []badBody{}
		for _, b := range textBadBodies(social.MaxPostLen) {
			if s, ok := b.body.(string); ok && (strings.HasPrefix(s, `{"text"`) || strings.HasPrefix(s, `{"TEXT"`)) {
				b.body = withID(s)
			}
			if b.name == "syntax error" { // moved by the id put in front
				b.fields = map[string]string{"body": fmt.Sprintf("is malformed JSON near byte %d", 9+len(`"id":"`+id+`",`))}
			}
			if m, ok := b.body.(map[string]string); ok {
				m["id"] = id
			}
			if b.name == "empty object" {
				b.fields = map[string]string{"id": "must be a UUID"}
			}
			cases = append(cases, b)
		}
		cases = append(cases,
			badBody{"missing id", map[string]string{"text": "a"}, 400, map[string]string{"id": "must be a UUID"}},
			badBody{"bad id", map[string]string{"id": "x", "text": "a"}, 400, map[string]string{"id": "must be a UUID"}},
			badBody{"number id", `{"id":7,"text":"a"}`, 400, map[string]string{"id": "must be a string"}},
		)
		checkBadBodies(t, e, "PUT", "/post/update", token, cases)
	})
	var got postJSON
	e.do(t, request{method: "GET", path: "/post/get/" + id}).wantStatus(t, 200).json(t, &got)
	if got.Text != "original" {
		t.Errorf("text after refused updates %q; want %q", got.Text, "original")
	}
}

func TestFeed(t *testing.T) {
	e := mustEnv(t)
	_, token := e.mustUser(t, "Reader", "One")
	a, aToken := e.mustUser(t, "Author", "A")
	b, bToken := e.mustUser(t, "Author", "B")
	_, strangerToken := e.mustUser(t, "Stranger", "S")

	if feed := e.mustFeed(t, token, ""); len(feed) != 0 {
		t.Fatalf("feed without friends has %d posts", len(feed))
	}
	for _, f := range []string{a, b} {
		e.do(t, request{method: "PUT", path: "/friend/set/" + f, token: token}).wantStatus(t, 200)
	}
	// Interleaved posts of both authors, and one of a stranger.
	var want []postJSON
	for i := range 15 {
		tok, author := aToken, a
		if i%3 == 0 {
			tok, author = bToken, b
		}
		text := fmt.Sprintf("post %d", i)
		want = append([]postJSON{{ID: e.mustPost(t, tok, text), Text: text, AuthorUserID: author}}, want...)
	}
	e.mustPost(t, strangerToken, "not in the feed")

	tests := []struct {
		query string
		want  []postJSON
	}{
		{"", want[:10]},
		{"?offset=0&limit=10", want[:10]},
		{"?limit=3", want[:3]},
		{"?offset=3&limit=4", want[3:7]},
		{"?offset=10", want[10:]},
		{"?offset=15", []postJSON{}},
		{"?offset=1000", []postJSON{}},
		{"?offset=2147483647", []postJSON{}},
		{"?limit=1000", want},
		{"?offset=&limit=", want[:10]},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, e.mustFeed(t, token, tt.query)); diff != "" {
				t.Errorf("feed (-want +got):\n%s", diff)
			}
		})
	}

	bad := []struct {
		query  string
		fields map[string]string
	}{
		{"?offset=-1", map[string]string{"offset": "must not be negative"}},
		{"?limit=0", map[string]string{"limit": "must be from 1 to 1000"}},
		{"?limit=-5", map[string]string{"limit": "must be from 1 to 1000"}},
		{"?limit=1001", map[string]string{"limit": "must be from 1 to 1000"}},
		{"?limit=abc", map[string]string{"limit": "must be an integer"}},
		{"?offset=1e3", map[string]string{"offset": "must be an integer"}},
		{"?offset=2147483648", map[string]string{"offset": "must be an integer"}},
		{"?offset=%20", map[string]string{"offset": "must be an integer"}},
		{"?offset=x&limit=0", map[string]string{"offset": "must be an integer"}},
	}
	for _, tt := range bad {
		t.Run("bad"+tt.query, func(t *testing.T) {
			r := e.do(t, request{method: "GET", path: "/post/feed" + tt.query, token: token}).wantStatus(t, 400)
			if diff := cmp.Diff(tt.fields, r.error(t).Fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDialogs(t *testing.T) {
	e := mustEnv(t)
	me, token := e.mustUser(t, "Ivan", "Petrov")
	you, yourToken := e.mustUser(t, "Anna", "Sidorova")
	third, _ := e.mustUser(t, "Third", "Party")
	send := func(token, to, text string) reply {
		return e.do(t, request{method: "POST", path: "/dialog/" + to + "/send", token: token, body: map[string]string{"text": text}})
	}
	list := func(token, with string) []messageJSON {
		var msgs []messageJSON
		e.do(t, request{method: "GET", path: "/dialog/" + with + "/list", token: token}).wantStatus(t, 200).json(t, &msgs)
		return msgs
	}

	if msgs := list(token, you); len(msgs) != 0 {
		t.Fatalf("empty dialog lists %d messages", len(msgs))
	}
	send(token, you, "hi").wantStatus(t, 200)
	send(yourToken, me, "hello!\nhow are you?").wantStatus(t, 200)
	send(token, you, strings.Repeat("ж", social.MaxMessageLen)).wantStatus(t, 200)
	send(token, third, "elsewhere").wantStatus(t, 200)

	want := []messageJSON{
		{From: me, To: you, Text: "hi"},
		{From: you, To: me, Text: "hello!\nhow are you?"},
		{From: me, To: you, Text: strings.Repeat("ж", social.MaxMessageLen)},
	}
	if diff := cmp.Diff(want, list(token, you)); diff != "" {
		t.Errorf("my dialog (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, list(yourToken, strings.ToUpper(me))); diff != "" {
		t.Errorf("your dialog (-want +got):\n%s", diff)
	}

	before := e.mustCounts(t)
	r := send(token, missingID, "anyone?").wantStatus(t, 404)
	if r.error(t).Kind != social.ENOTFOUND {
		t.Errorf("code %q; want %q", r.error(t).Kind, social.ENOTFOUND)
	}
	send(token, me, "note to self").wantStatus(t, 400)
	r = send(token, "nobody", "x").wantStatus(t, 400)
	if diff := cmp.Diff(map[string]string{"user_id": "must be a UUID"}, r.error(t).Fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	e.do(t, request{method: "GET", path: "/dialog/nobody/list", token: token}).wantStatus(t, 400)
	if after := e.mustCounts(t); after != before {
		t.Errorf("refused sends changed rows from %+v to %+v", before, after)
	}
	if msgs := list(token, missingID); len(msgs) != 0 {
		t.Errorf("dialog with a missing user lists %d messages", len(msgs))
	}

	checkBadBodies(t, e, "POST", "/dialog/"+you+"/send", token, textBadBodies(social.MaxMessageLen))
}
