package postgres_test

import (
	"context"
	"testing"
	"time"

	"socnet/internal/pgtest"
	"socnet/internal/social"
)

// TestUnavailableDatabase kills the server under the stores: every call
// answers EUNAVAILABLE (the API's 503) with a message fit for a client, and
// the stores work again once the server is back.
func TestUnavailableDatabase(t *testing.T) {
	node := pgtest.MustNode(t, "errors", nil)
	e := mustEnvAt(t, node.DSN(""))
	ctx := context.Background()
	a, b := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков")
	if err := node.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	calls := map[string]func() error{
		"CreateUser": func() error {
			u := social.User{FirstName: "В", SecondName: "В", Birthdate: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}
			return e.users.CreateUser(ctx, &u, []byte("h"))
		},
		"User":         func() error { _, err := e.users.User(ctx, a.ID); return err },
		"PasswordHash": func() error { _, err := e.users.PasswordHash(ctx, a.ID); return err },
		"SearchUsers": func() error {
			_, err := e.users.SearchUsers(ctx, social.UserSearch{FirstNamePrefix: "А", SecondNamePrefix: "Б"})
			return err
		},
		"SetFriend":    func() error { return e.friends.SetFriend(ctx, a.ID, b.ID) },
		"DeleteFriend": func() error { return e.friends.DeleteFriend(ctx, a.ID, b.ID) },
		"CreatePost":   func() error { return e.posts.CreatePost(ctx, &social.Post{AuthorUserID: a.ID, Text: "т"}) },
		"UpdatePost":   func() error { return e.posts.UpdatePost(ctx, a.ID, unknownID, "т") },
		"Feed":         func() error { _, err := e.posts.Feed(ctx, a.ID, 0, 10); return err },
		"SendMessage": func() error {
			return e.dialogs.SendMessage(ctx, &social.Message{From: a.ID, To: b.ID, Text: "т"})
		},
		"Dialog": func() error { _, err := e.dialogs.Dialog(ctx, a.ID, b.ID); return err },
	}
	for name, call := range calls {
		err := call()
		if social.ErrorCode(err) != social.EUNAVAILABLE || social.ErrorMessage(err) == "internal error" {
			t.Errorf("%s with the server down: %v (code %q, message %q), want EUNAVAILABLE",
				name, err, social.ErrorCode(err), social.ErrorMessage(err))
		}
	}

	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := node.Start(startCtx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := waitFor(startCtx, func() error { _, err := e.users.User(ctx, a.ID); return err }); err != nil {
		t.Fatalf("the stores did not recover: %v", err)
	}
	if err := e.friends.SetFriend(ctx, a.ID, b.ID); err != nil {
		t.Errorf("SetFriend after the restart: %v", err)
	}
}

// waitFor polls fn until it succeeds or ctx ends, returning the last error.
func waitFor(ctx context.Context, fn func() error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}
