package httpapi

import (
	"net/http"

	"socnet/internal/social"
)

func handleFriendSet(friends social.FriendStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		friendID, err := pathID(r, "user_id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := friends.SetFriend(r.Context(), userFrom(r), friendID); err != nil {
			writeError(w, r, err)
			return
		}
		writeEmpty(w)
	})
}

func handleFriendDelete(friends social.FriendStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		friendID, err := pathID(r, "user_id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := friends.DeleteFriend(r.Context(), userFrom(r), friendID); err != nil {
			writeError(w, r, err)
			return
		}
		writeEmpty(w)
	})
}
