// Package httpserve is the one way socnet's HTTP services (the API,
// counterd, the relay, the feed worker and their side listeners) listen,
// shut down gracefully, and turn an error into a status: a social.Error's
// code maps to one HTTP status, whoever answers.
//
// It holds no routes and no handlers: those belong to each service.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// Server is one HTTP listener of a service.
type Server struct {
	// Name names the listener in logs and errors: "api", "metrics", ...
	Name    string
	Addr    string // host:port; port 0 picks a free one
	Handler http.Handler
	// Grace bounds the shutdown: in-flight requests get this long to
	// finish once ctx ends. Default 10 s.
	Grace time.Duration
	// Listening, when set, is called with the bound address once the
	// listener is open and before the first request is served.
	Listening func(addr string) error
}

// ListenAndServe serves s until ctx ends, then shuts down gracefully: it
// stops accepting, lets in-flight requests finish within s.Grace, and
// returns nil. It returns an error when the listener cannot be opened or
// serving fails.
func ListenAndServe(ctx context.Context, log *slog.Logger, s Server) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	grace := s.Grace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("%s: listen: %w", s.Name, err)
	}
	srv := &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	bound := ln.Addr().String()
	if s.Listening != nil {
		if err := s.Listening(bound); err != nil {
			ln.Close()
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	log.Info("listening", "service", s.Name, "addr", bound)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", s.Name, err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "service", s.Name)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", s.Name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// statuses maps every social error code to its HTTP status.
var statuses = map[string]int{
	social.EINVALID:      http.StatusBadRequest,
	social.EUNAUTHORIZED: http.StatusUnauthorized,
	social.EFORBIDDEN:    http.StatusForbidden,
	social.ENOTFOUND:     http.StatusNotFound,
	social.ECONFLICT:     http.StatusConflict,
	social.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	social.ETOOMANY:      http.StatusTooManyRequests,
	social.EINTERNAL:     http.StatusInternalServerError,
	social.EUNAVAILABLE:  http.StatusServiceUnavailable,
}

// Status is the HTTP status of a social error code; an unknown code is
// internal (500).
func Status(code string) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// ErrorCode is social.ErrorCode that also recognizes database errors that
// reached a handler unclassified: an unreachable or failing-over database,
// or a request whose context ended, is EUNAVAILABLE (the client may retry),
// not a bug.
func ErrorCode(err error) string {
	code := social.ErrorCode(err)
	if code == social.EINTERNAL && (dbroute.IsUnavailable(err) || errors.Is(err, context.Canceled)) {
		return social.EUNAVAILABLE
	}
	return code
}
