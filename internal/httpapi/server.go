package httpapi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"socnet/internal/auth"
	"socnet/internal/social"
)

// Deps are what the API serves from.
type Deps struct {
	Users   social.UserStore
	Friends social.FriendStore
	Posts   social.PostStore
	Dialogs social.DialogStore
	// Reader marks dialogs read and Unread is the counter service: GET
	// /dialog/unread and PUT /dialog/{user_id}/read answer 503 without them.
	Reader social.DialogReader
	Unread social.UnreadCounter
	// Tokens issues tokens at login and verifies them on bearer routes.
	Tokens *auth.Tokens
	// Registry receives the HTTP metrics; nil means a registry of the
	// server's own. The API does not serve it: metrics are for operators,
	// served on a listener of their own (socnet serve --metrics-addr).
	Registry *prometheus.Registry
	// Limits bound the routes that hash passwords; the zero value sets no
	// limit.
	Limits Limits
	// RequestTimeout ends the context of every request after it; 0 means
	// no deadline. Writes have their own, shorter, bound in dbroute.
	RequestTimeout time.Duration
	// Hasher hashes passwords; the zero value uses bcrypt's default cost.
	Hasher auth.Hasher
	// Now is the clock birthdates are checked against; nil means time.Now.
	Now func() time.Time
}

// NewServer returns the handler of the whole API.
func NewServer(log *slog.Logger, deps Deps) http.Handler {
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	routes := newRouteTable()
	addRoutes(routes, deps, log)
	var h http.Handler = routes.mux
	h = recoverPanics(h)
	h = observe(log, newMetrics(deps.Registry), routes, h)
	h = drainRefusedBody(h)
	h = requestID(newIDSource(), deps.RequestTimeout, h)
	return h
}

// routeTable is a ServeMux that remembers its patterns, so that metrics and
// logs label requests only with routes of the API (the mux makes up
// patterns of its own for redirects).
type routeTable struct {
	mux      *http.ServeMux
	patterns map[string]bool
}

func newRouteTable() *routeTable {
	return &routeTable{mux: http.NewServeMux(), patterns: make(map[string]bool)}
}

// Handle registers h for the ServeMux pattern.
func (t *routeTable) Handle(pattern string, h http.Handler) {
	t.mux.Handle(pattern, h)
	t.patterns[pattern] = true
}

// route returns the API route that served r, or "" if none did.
func (t *routeTable) route(r *http.Request) string {
	if t.patterns[r.Pattern] {
		return r.Pattern
	}
	return ""
}
