package httpapi

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// routeUnmatched labels requests that matched no route of the API, so that
// arbitrary paths never become label values.
const routeUnmatched = "unmatched"

// metrics are the HTTP metrics of the API, labelled by route pattern and
// status code.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// series caches the children of each route and status, sparing a label
	// hash per request.
	series sync.Map // seriesKey -> seriesValue
}

type seriesKey struct {
	route  string
	status int
}

type seriesValue struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) *metrics {
	labels := []string{"route", "code"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "socnet", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests served, by route pattern and status code.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "socnet", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to serve HTTP requests, by route pattern and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, labels),
	}
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	return m
}

// register registers c, or returns the equal collector registered before
// (a second server on the same registry shares the metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("httpapi: register metrics: " + err.Error())
	}
	return c
}

func (m *metrics) observe(route string, status int, elapsed time.Duration) {
	if route == "" {
		route = routeUnmatched
	}
	key := seriesKey{route, status}
	v, ok := m.series.Load(key)
	if !ok {
		code := strconv.Itoa(status)
		v, _ = m.series.LoadOrStore(key, seriesValue{
			requests: m.requests.WithLabelValues(route, code),
			duration: m.duration.WithLabelValues(route, code),
		})
	}
	s := v.(seriesValue)
	s.requests.Inc()
	s.duration.Observe(elapsed.Seconds())
}
