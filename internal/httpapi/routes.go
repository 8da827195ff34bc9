package httpapi

import (
	"log/slog"
	"net/http"
)

// addRoutes lists the whole API.
func addRoutes(mux *routeTable, deps Deps, log *slog.Logger) {
	bearer := func(h http.Handler) http.Handler { return requireUser(deps.Tokens, h) }
	limits := newAuthLimits(deps.Limits, deps.Now, log)

	mux.Handle("POST /user/register", handleUserRegister(deps.Users, deps.Hasher, limits, deps.Now))
	mux.Handle("POST /login", handleLogin(deps.Users, deps.Hasher, deps.Tokens, limits))
	mux.Handle("GET /user/get/{id}", handleUserGet(deps.Users))
	mux.Handle("GET /user/search", handleUserSearch(deps.Users))

	mux.Handle("PUT /friend/set/{user_id}", bearer(handleFriendSet(deps.Friends)))
	mux.Handle("PUT /friend/delete/{user_id}", bearer(handleFriendDelete(deps.Friends)))

	mux.Handle("POST /post/create", bearer(handlePostCreate(deps.Posts)))
	mux.Handle("PUT /post/update", bearer(handlePostUpdate(deps.Posts)))
	mux.Handle("PUT /post/delete/{id}", bearer(handlePostDelete(deps.Posts)))
	mux.Handle("GET /post/get/{id}", handlePostGet(deps.Posts))
	mux.Handle("GET /post/feed", bearer(handlePostFeed(deps.Posts)))

	mux.Handle("POST /dialog/{user_id}/send", bearer(handleDialogSend(deps.Dialogs)))
	mux.Handle("GET /dialog/{user_id}/list", bearer(handleDialogList(deps.Dialogs)))
	mux.Handle("GET /dialog/unread", bearer(handleDialogUnread(deps.Unread)))
	mux.Handle("PUT /dialog/{user_id}/read", bearer(handleDialogRead(deps.Reader, deps.Unread)))

	mux.Handle("GET /healthz", handleHealthz())
}
