package postgres_test

import (
	"context"
	"testing"

	"socnet/internal/social"
)

func TestSetAndDeleteFriend(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a, b := e.mustUser(t, "Анна", "Белова"), e.mustUser(t, "Борис", "Волков")
	follows := func(x, y social.User) bool {
		return e.count(t, `SELECT count(*) FROM friends WHERE user_id = $1 AND friend_id = $2`, x.ID, y.ID) == 1
	}
	for range 2 { // the second time is a no-op
		if err := e.friends.SetFriend(ctx, a.ID, b.ID); err != nil {
			t.Fatalf("SetFriend: %v", err)
		}
	}
	if !follows(a, b) || follows(b, a) {
		t.Fatalf("after a follows b: a->b %v, b->a %v", follows(a, b), follows(b, a))
	}
	for range 2 { // deleting a missing friendship is a no-op
		if err := e.friends.DeleteFriend(ctx, a.ID, b.ID); err != nil {
			t.Fatalf("DeleteFriend: %v", err)
		}
	}
	if follows(a, b) {
		t.Fatal("a still follows b")
	}
}

func TestSetFriendErrors(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	a := e.mustUser(t, "Анна", "Белова")
	tests := []struct {
		name, user, friend, code, field string
	}{
		{"unknown friend", a.ID, unknownID, social.ENOTFOUND, ""},
		{"unknown follower", unknownID, a.ID, social.ENOTFOUND, ""},
		{"oneself", a.ID, a.ID, social.EINVALID, "id"},
		{"malformed friend", a.ID, "nope", social.EINVALID, "id"},
		{"malformed follower", "nope", a.ID, social.EINVALID, "user_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.friends.SetFriend(ctx, tt.user, tt.friend)
			if tt.field != "" {
				wantField(t, err, tt.field)
			} else {
				wantCode(t, err, tt.code)
			}
		})
	}
	if n := e.count(t, `SELECT count(*) FROM friends`); n != 0 {
		t.Errorf("%d friendships stored by refused calls", n)
	}
	wantField(t, e.friends.DeleteFriend(ctx, a.ID, "nope"), "id")
}
