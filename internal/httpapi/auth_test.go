package httpapi_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"socnet/internal/auth"
	"socnet/internal/social"
)

func TestBearerAuth(t *testing.T) {
	e := mustEnv(t)
	me, token := e.mustUser(t, "Ivan", "Petrov")
	friend := e.mustRegister(t, validUser("Anna", "Sidorova"))
	post := e.mustPost(t, token, "mine")

	expired, err := auth.NewTokens(e.key, time.Hour, func() time.Time { return time.Now().Add(-2 * time.Hour) }).Issue(me)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := auth.NewTokens(bytes.Repeat([]byte{9}, auth.KeyLen), time.Hour, nil).Issue(me)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	tampered := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))

	routes := []request{
		{method: "PUT", path: "/friend/set/" + friend},
		{method: "PUT", path: "/friend/delete/" + friend},
		{method: "POST", path: "/post/create", body: map[string]string{"text": "x"}},
		{method: "PUT", path: "/post/update", body: map[string]string{"id": post, "text": "x"}},
		{method: "PUT", path: "/post/delete/" + post},
		{method: "GET", path: "/post/feed"},
		{method: "POST", path: "/dialog/" + friend + "/send", body: map[string]string{"text": "x"}},
		{method: "GET", path: "/dialog/" + friend + "/list"},
	}
	auths := []struct {
		name, header, message string
	}{
		{"no header", "", "missing bearer token"},
		{"basic", "Basic aXZhbjpzZWNyZXQ=", "missing bearer token"},
		{"scheme only", "Bearer", "missing bearer token"},
		{"scheme and space", "Bearer   ", "missing bearer token"},
		{"garbage", "Bearer not-a-token", "invalid token"},
		{"expired", "Bearer " + expired, "token expired"},
		{"other key", "Bearer " + forged, "invalid token"},
		{"tampered signature", "Bearer " + tampered, "invalid token"},
		{"token without scheme", token, "missing bearer token"},
	}
	for _, rt := range routes {
		for _, a := range auths {
			t.Run(fmt.Sprintf("%s %s/%s", rt.method, strings.SplitN(rt.path[1:], "/", 3)[:2], a.name), func(t *testing.T) {
				before := e.mustCounts(t)
				req := rt
				if a.header != "" {
					req.header = map[string]string{"Authorization": a.header}
				}
				r := e.do(t, req).wantStatus(t, 401)
				if got := r.error(t); got.Kind != social.EUNAUTHORIZED || got.Message != a.message {
					t.Errorf("error %+v; want code %s, message %q", got, social.EUNAUTHORIZED, a.message)
				}
				if got := r.Header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate %q; want Bearer", got)
				}
				if after := e.mustCounts(t); after != before {
					t.Errorf("rows changed from %+v to %+v", before, after)
				}
			})
		}
	}

	// The scheme is case-insensitive.
	e.do(t, request{method: "GET", path: "/post/feed", header: map[string]string{"Authorization": "bearer " + token}}).wantStatus(t, 200)
	// Bearer routes check the token before the input.
	e.do(t, request{method: "PUT", path: "/post/delete/not-a-uuid"}).wantStatus(t, 401)
	e.do(t, request{method: "POST", path: "/post/create", body: "{"}).wantStatus(t, 401)
}
