package feed

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// readerMetrics are a Reader's series.
type readerMetrics struct {
	pages *prometheus.CounterVec // served
}

func newReaderMetrics(reg prometheus.Registerer) (*readerMetrics, error) {
	m := &readerMetrics{pages: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "socnet_feed_pages_total",
		Help: "Feed pages served, by source: redis, rebuilt (timeline rebuilt from PostgreSQL), postgres (the SQL feed).",
	}, []string{"served"})}
	for _, s := range []Served{ServedRedis, ServedRebuilt, ServedPostgres} {
		m.pages.WithLabelValues(string(s))
	}
	return m, register(reg, m.pages)
}

// workerMetrics are a Worker's series.
type workerMetrics struct {
	events  *prometheus.CounterVec // kind
	latency prometheus.Histogram
}

func newWorkerMetrics(reg prometheus.Registerer) (*workerMetrics, error) {
	m := &workerMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_feed_events_total",
			Help: "Feed events applied and deleted from feed_outbox, by kind.",
		}, []string{"kind"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "socnet_feed_delivery_latency_seconds",
			Help:    "From the transaction that wrote a feed event to the commit of the batch that applied it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
	for _, k := range []string{KindPostCreated, KindPostUpdated, KindPostDeleted, KindFriendSet, KindFriendDeleted} {
		m.events.WithLabelValues(k)
	}
	return m, register(reg, m.events, m.latency)
}

func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register feed metrics: %w", err)
		}
	}
	return nil
}
