package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"socnet/internal/auth"
	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// requestInfo is what the middleware and handlers of one request share.
// Only the request's own goroutine touches it.
type requestInfo struct {
	id     string
	userID string // the bearer's user id, on authenticated routes
	err    error  // what a 5xx answer hid from the client, for the log
	drain  bool   // the body was refused unread: drain it before closing
}

type infoKey struct{}

// infoFrom returns the request's info; outside the middleware, an empty one.
func infoFrom(ctx context.Context) *requestInfo {
	if info, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a request id taken from the client.
const maxRequestIDLen = 64

// idSource makes request ids: a random prefix per server and a counter, cheap
// and unique without a random read per request.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func newIDSource() *idSource {
	var b [5]byte
	rand.Read(b[:])
	return &idSource{prefix: strings.ToLower(base32.StdEncoding.EncodeToString(b[:])) + "-"}
}

func (s *idSource) next() string {
	return s.prefix + strconv.FormatUint(s.n.Add(1), 36)
}

// requestID gives every request an id, the client's own when it is a sane
// token, and echoes it in the response. It also ends the request's context
// after timeout (none when 0), so that no read waits longer for the
// database than the request may take; one context serves both.
func requestID(ids *idSource, timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !saneRequestID(id) {
			id = ids.next()
		}
		w.Header()[RequestIDHeader] = []string{id}
		ctx := context.WithValue(r.Context(), infoKey{}, &requestInfo{id: id})
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// saneRequestID reports whether id is 1 to 64 characters of [A-Za-z0-9._-].
func saneRequestID(id string) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// recoverPanics answers a panicking handler with a 500 and keeps the panic
// and its stack for the log.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { // the server's own way to drop a connection
				panic(v)
			}
			err := fmt.Errorf("panic: %v\n%s", v, debug.Stack())
			infoFrom(r.Context()).err = err
			if rw, ok := w.(*responseWriter); ok && rw.status != 0 {
				return // the status is out; the log still gets the panic
			}
			writeError(w, r, err)
		}()
		next.ServeHTTP(w, r)
	})
}

// observe counts and times every request by route and status, logs it
// (failures at error level, the rest at debug), and turns the mux's own
// plain-text 400/404/405 answers into JSON errors.
func observe(log *slog.Logger, m *metrics, routes *routeTable, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &responseWriter{ResponseWriter: w, req: r, routes: routes}
		next.ServeHTTP(rw, r)
		elapsed := time.Since(start)
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		route := routes.route(r)
		m.observe(route, rw.status, elapsed)

		ctx := r.Context()
		info := infoFrom(ctx)
		level := slog.LevelDebug
		switch {
		case rw.status == http.StatusServiceUnavailable:
			level = slog.LevelWarn
		case rw.status >= 500 || info.err != nil:
			level = slog.LevelError
		}
		if !log.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("request_id", info.id),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("route", route),
			slog.Int("status", rw.status),
			slog.Int64("bytes", rw.written),
			slog.Duration("duration", elapsed),
		}
		if info.err != nil {
			attrs = append(attrs, slog.String("err", info.err.Error()))
		}
		log.LogAttrs(ctx, level, "http request", attrs...)
	})
}

// responseWriter records the status and size of a response.
type responseWriter struct {
	http.ResponseWriter
	req     *http.Request
	routes  *routeTable
	status  int
	written int64
	// replaced is set when the mux's own text error was answered with a
	// JSON one: the text is then dropped.
	replaced bool
}

func (w *responseWriter) WriteHeader(status int) {
	if w.status != 0 {
		return
	}
	w.status = status
	if w.routes.route(w.req) == "" {
		var err error
		switch status {
		case http.StatusNotFound:
			err = social.Errorf(social.ENOTFOUND, "no such route: %s", truncate(w.req.URL.Path, 200))
		case http.StatusMethodNotAllowed:
			err = social.Errorf(codeMethodNotAllowed, "method %s is not allowed here", truncate(w.req.Method, 20))
		case http.StatusBadRequest:
			err = social.Errorf(social.EINVALID, "bad request")
		}
		if err != nil {
			w.replaced = true
			h := w.Header()
			h.Del("X-Content-Type-Options")
			writeError(w.ResponseWriter, w.req, err)
			return
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(b), nil
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// requireUser lets through only requests with a valid bearer token and puts
// the token's user id in the request context.
func requireUser(tokens *auth.Tokens, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			writeError(w, r, social.Errorf(social.EUNAUTHORIZED, "missing bearer token"))
			return
		}
		userID, err := tokens.Verify(token)
		if err != nil {
			writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(withUser(r.Context(), userID)))
	})
}

// bearerToken returns the token of an "Authorization: Bearer <token>" value;
// the scheme is case-insensitive (RFC 9110).
func bearerToken(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.TrimSpace(header[len(scheme):])
	return token, token != ""
}

// withUser returns ctx carrying the authenticated user id, which is also
// the request's database session: reads after the user's own writes see them
// (dbroute.WithSession).
func withUser(ctx context.Context, userID string) context.Context {
	infoFrom(ctx).userID = userID
	return dbroute.WithSession(ctx, userID)
}

// userFrom returns the authenticated user id of the request.
func userFrom(r *http.Request) string {
	return infoFrom(r.Context()).userID
}

// Bounds of the draining of a refused body: after them the connection is
// closed even if the client is still sending.
const (
	drainMaxBytes = 32 << 20
	drainMaxTime  = 5 * time.Second
)

// refuseRest prepares the answer to a body over the limit: the connection
// closes after it, and drainRefusedBody first reads and drops the rest of
// the body. Closing a socket with unread data makes the kernel send a reset,
// and a client that writes its whole body before it reads (Python's urllib)
// would get that reset instead of the 413; nginx's lingering close does the
// same.
func refuseRest(w http.ResponseWriter, r *http.Request) {
	// Full duplex keeps the server from closing the body once the answer
	// is written.
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		return
	}
	w.Header().Set("Connection", "close")
	infoFrom(r.Context()).drain = true
}

// drainRefusedBody sends the answer to a request whose body was refused
// (refuseRest) and then reads the rest of the body, up to drainMaxBytes or
// drainMaxTime, before the server closes the connection.
func drainRefusedBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r)
		if !infoFrom(r.Context()).drain {
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return
		}
		_ = rc.SetReadDeadline(time.Now().Add(drainMaxTime))
		_, _ = io.CopyN(io.Discard, r.Body, drainMaxBytes)
	})
}
