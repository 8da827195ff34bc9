package httpapi

import (
	"net/http"

	"socnet/internal/social"
)

// handlePostCreate answers with the new post's id as a bare JSON string.
func handlePostCreate(posts social.PostStore) http.Handler {
	type request struct {
		Text string `json:"text"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := decode(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		if err := social.ValidatePostText(req.Text); err != nil {
			writeError(w, r, err)
			return
		}
		p := social.Post{Text: req.Text, AuthorUserID: userFrom(r)}
		if err := posts.CreatePost(r.Context(), &p); err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, p.ID)
	})
}

func handlePostUpdate(posts social.PostStore) http.Handler {
	type request struct {
		ID   string `json:"id"`
		Text string `json:"text"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := decode(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		if !validID(req.ID) {
			writeError(w, r, social.Invalid(map[string]string{"id": "must be a UUID"}))
			return
		}
		if err := social.ValidatePostText(req.Text); err != nil {
			writeError(w, r, err)
			return
		}
		if err := posts.UpdatePost(r.Context(), userFrom(r), normalID(req.ID), req.Text); err != nil {
			writeError(w, r, err)
			return
		}
		writeEmpty(w)
	})
}

func handlePostDelete(posts social.PostStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := posts.DeletePost(r.Context(), userFrom(r), id); err != nil {
			writeError(w, r, err)
			return
		}
		writeEmpty(w)
	})
}

func handlePostGet(posts social.PostStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		p, err := posts.Post(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, toPostJSON(p))
	})
}

// handlePostFeed pages through the newest social.FeedCap posts of the users
// the caller follows, newest first.
func handlePostFeed(posts social.PostStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		p := make(map[string]string)
		offset := queryInt(q, "offset", 0, p)
		limit := queryInt(q, "limit", social.DefaultFeedLimit, p)
		if len(p) > 0 {
			writeError(w, r, social.Invalid(p))
			return
		}
		if err := social.ValidateFeedPage(offset, limit); err != nil {
			writeError(w, r, err)
			return
		}
		feed, err := posts.Feed(r.Context(), userFrom(r), offset, limit)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out := make([]postJSON, len(feed))
		for i, p := range feed {
			out[i] = toPostJSON(p)
		}
		encode(w, r, out)
	})
}
