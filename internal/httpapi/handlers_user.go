package httpapi

import (
	"net/http"
	"time"

	"socnet/internal/auth"
	"socnet/internal/social"
)

// handleUserRegister registers a user; the client's address is limited
// before the password is hashed.
func handleUserRegister(users social.UserStore, hasher auth.Hasher, limits *authLimits, now func() time.Time) http.Handler {
	type request struct {
		FirstName  string `json:"first_name"`
		SecondName string `json:"second_name"`
		Birthdate  string `json:"birthdate"`
		Biography  string `json:"biography"`
		City       string `json:"city"`
		Password   string `json:"password"`
	}
	type response struct {
		UserID string `json:"user_id"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := decode(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		u, err := social.Registration(req).Validate(now())
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := limits.allow(r, ""); err != nil {
			writeError(w, r, err)
			return
		}
		hash, err := hasher.Hash(req.Password)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := users.CreateUser(r.Context(), &u, hash); err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, response{UserID: u.ID})
	})
}

// handleLogin answers a wrong password with 401 and an unknown user with 404
// (the course lists 404; 401 is an extension, docs/API.md). Attempts are
// limited per client address and per target user before any hashing.
func handleLogin(users social.UserStore, hasher auth.Hasher, tokens *auth.Tokens, limits *authLimits) http.Handler {
	type request struct {
		ID       string `json:"id"`
		Password string `json:"password"`
	}
	type response struct {
		Token string `json:"token"`
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
		if err := social.ValidateLoginPassword(req.Password); err != nil {
			writeError(w, r, err)
			return
		}
		id := normalID(req.ID)
		if err := limits.allow(r, id); err != nil {
			writeError(w, r, err)
			return
		}
		hash, err := users.PasswordHash(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := hasher.Compare(hash, req.Password); err != nil {
			writeError(w, r, err)
			return
		}
		token, err := tokens.Issue(id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, response{Token: token})
	})
}

func handleUserGet(users social.UserStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "id")
		if err != nil {
			writeError(w, r, err)
			return
		}
		u, err := users.User(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, toUserJSON(u))
	})
}

func handleUserSearch(users social.UserStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		p := make(map[string]string)
		search := social.UserSearch{
			FirstNamePrefix:  q.Get("first_name"),
			SecondNamePrefix: q.Get("last_name"),
			Limit:            queryInt(q, "limit", social.DefaultSearchLimit, p),
			Offset:           queryInt(q, "offset", 0, p),
		}
		if len(p) > 0 {
			writeError(w, r, social.Invalid(p))
			return
		}
		if err := search.Validate(); err != nil {
			writeError(w, r, err)
			return
		}
		found, err := users.SearchUsers(r.Context(), search)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out := make([]userJSON, len(found))
		for i, u := range found {
			out[i] = toUserJSON(u)
		}
		encode(w, r, out)
	})
}

func handleHealthz() http.Handler {
	type response struct {
		Status string `json:"status"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		encode(w, r, response{Status: "ok"})
	})
}
