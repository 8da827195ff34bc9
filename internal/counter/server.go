package counter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"socnet/internal/dbroute"
	"socnet/internal/httpserve"
	"socnet/internal/social"
)

// maxEventsBody bounds a POST /events body: MaxBatch events of a few hundred
// bytes each.
const maxEventsBody = 4 << 20

// CountersJSON is the body of GET /counters/{user_id}: the user's unread
// messages per peer, most unread first, and in total.
type CountersJSON struct {
	UserID  string       `json:"user_id"`
	Total   int          `json:"total"`
	Dialogs []DialogJSON `json:"dialogs"`
}

// DialogJSON is one dialog of CountersJSON; UserID is the peer.
type DialogJSON struct {
	UserID string `json:"user_id"`
	Unread int    `json:"unread"`
}

// errorJSON is the body of every error answer, shaped as the API's: the
// code, a message and, for EINVALID, each bad field with its problem.
type errorJSON struct {
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
}

// ServerOption changes the API NewServer builds.
type ServerOption func(*serverOptions)

type serverOptions struct {
	verifier *Verifier
}

// WithVerifier makes every route but GET /healthz answer only requests that
// v accepts (signed with the service key, fresh, not replayed); the others
// get 401.
func WithVerifier(v *Verifier) ServerOption {
	return func(o *serverOptions) { o.verifier = v }
}

// NewServer returns counterd's HTTP API over store:
//
//	POST /events              apply a Batch; 200 with a BatchResult
//	GET  /counters/{user_id}  CountersJSON
//	GET  /healthz             200 when the counter primary answers, else 503
//	GET  /metrics             Prometheus metrics of reg
//
// Errors are JSON {"code", "message"} with the status of the social code.
// Without WithVerifier nothing is authenticated: RunCounterd builds it so
// only when told to run without authentication.
func NewServer(log *slog.Logger, store *Store, reg *prometheus.Registry, opts ...ServerOption) (http.Handler, error) {
	var o serverOptions
	for _, opt := range opts {
		opt(&o)
	}
	hm, err := newHTTPMetrics(reg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	handle := func(pattern string, h http.Handler) { mux.Handle(pattern, hm.wrap(log, pattern, h)) }
	handle("POST /events", handleEvents(store))
	handle("GET /counters/{user_id}", handleCounters(store))
	handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	var routes http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			writeError(w, social.Errorf(social.ENOTFOUND, "no such route: %s %s", r.Method, truncate(r.URL.Path, 100)))
			return
		}
		mux.ServeHTTP(w, r)
	})
	if o.verifier != nil {
		// Unknown routes too: a caller without the key learns nothing.
		routes = o.verifier.Wrap(routes)
	}
	// Health stays open: supervisors and load balancers probe it.
	healthz := hm.wrap(log, "GET /healthz", handleHealthz(store))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
			healthz.ServeHTTP(w, r)
			return
		}
		routes.ServeHTTP(w, r)
	}), nil
}

func handleEvents(store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b Batch
		if err := decodeJSON(w, r, &b); err != nil {
			writeError(w, err)
			return
		}
		switch {
		case len(b.Events) > MaxBatch:
			writeError(w, social.Invalid(map[string]string{"events": fmt.Sprintf("must hold at most %d events", MaxBatch)}))
			return
		case b.Session != "" && !isUUID(b.Session):
			writeError(w, social.Invalid(map[string]string{"session": "must be a user id"}))
			return
		}
		// Bad input changes nothing: one invalid event refuses the batch,
		// naming each invalid event by its index.
		bad := map[string]string{}
		for i, e := range b.Events {
			if reason := e.Validate(); reason != "" {
				bad[fmt.Sprintf("events[%d]", i)] = reason
			}
		}
		if len(bad) > 0 {
			writeError(w, social.Invalid(bad))
			return
		}
		res, err := store.Apply(r.Context(), b)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

func handleCounters(store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.PathValue("user_id")
		u, err := store.Unread(r.Context(), user)
		if err != nil {
			writeError(w, err)
			return
		}
		out := CountersJSON{UserID: user, Total: u.Total, Dialogs: make([]DialogJSON, len(u.Dialogs))}
		for i, d := range u.Dialogs {
			out.Dialogs[i] = DialogJSON{UserID: d.PeerID, Unread: d.Unread}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func handleHealthz(store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// Ping checks that the counter primary answers. Returns EUNAVAILABLE.
func (s *Store) Ping(ctx context.Context) error {
	err := s.db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		_, err := q.Exec(ctx, `SELECT 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("ping: %w: %w", &social.Error{Code: social.EUNAVAILABLE, Message: "counter database unavailable"}, err)
	}
	return nil
}

// writeError answers with err's code and message; internals of other
// errors stay out of the answer (the access log has them).
func writeError(w http.ResponseWriter, err error) {
	code := httpserve.ErrorCode(err)
	body := errorJSON{Code: code, Message: social.ErrorMessage(err)}
	var e *social.Error
	if errors.As(err, &e) && len(e.Fields) > 0 {
		body.Fields = e.Fields
		first := slices.Min(slices.Collect(maps.Keys(e.Fields)))
		body.Message = first + " " + e.Fields[first]
	}
	if code == social.EUNAVAILABLE {
		w.Header().Set("Retry-After", "1")
	}
	if rw, ok := w.(*statusWriter); ok && httpserve.Status(code) >= 500 {
		rw.err = err
	}
	writeJSON(w, httpserve.Status(code), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeJSON reads exactly one JSON object of known fields into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEventsBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return social.Errorf(social.ETOOLARGE, "request body is larger than %d bytes", maxEventsBody)
		}
		return social.Invalid(map[string]string{"body": "could not be read"})
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return social.Invalid(map[string]string{"body": "is not a valid JSON batch: " + truncate(err.Error(), 200)})
	}
	if dec.More() {
		return social.Invalid(map[string]string{"body": "must hold a single JSON object"})
	}
	return nil
}

// httpMetrics count and time counterd's requests by route.
type httpMetrics struct {
	requests *prometheus.CounterVec   // route, status
	duration *prometheus.HistogramVec // route
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_counter_http_requests_total",
			Help: "Requests served by counterd, by route and status.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "socnet_counter_http_request_seconds",
			Help:    "Duration of counterd requests by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	return m, register(reg, m.requests, m.duration)
}

// statusWriter remembers the status and the hidden error of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	err    error
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// wrap observes h under route and logs failures (503 at warn, other 5xx at
// error).
func (m *httpMetrics) wrap(log *slog.Logger, route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		elapsed := time.Since(start)
		m.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		m.duration.WithLabelValues(route).Observe(elapsed.Seconds())
		if sw.status >= 500 {
			level := slog.LevelError
			if sw.status == http.StatusServiceUnavailable {
				level = slog.LevelWarn
			}
			attrs := []any{"route", route, "status", sw.status, "duration", elapsed}
			if sw.err != nil {
				attrs = append(attrs, "err", sw.err.Error())
			}
			log.Log(r.Context(), level, "counterd request failed", attrs...)
		}
	})
}
