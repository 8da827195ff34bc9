package counter

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// latencyBuckets cover commit -> applied delays from a millisecond to a
// minute: the target is a p99 under a second, and outages show up as tails.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// register registers every collector on reg (nil: none), naming the
// collision when one is already registered.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("register metrics: already registered: %w", err)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// storeMetrics are counterd's series about applying events.
type storeMetrics struct {
	events  *prometheus.CounterVec // outcome
	latency prometheus.Histogram
	apply   prometheus.Histogram
}

func newStoreMetrics(reg prometheus.Registerer) (*storeMetrics, error) {
	m := &storeMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_counter_events_total",
			Help: "Events received by counterd, by outcome: applied, stale (superseded by a newer state), duplicate (discarded: delivered before), rejected (invalid), failed.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "socnet_counter_delivery_latency_seconds",
			Help:    "From the dialogs transaction that wrote an event to its first application in counterd.",
			Buckets: latencyBuckets,
		}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "socnet_counter_apply_seconds",
			Help:    "Duration of applying one batch of events, transaction included.",
			Buckets: prometheus.DefBuckets,
		}),
	}
	for _, o := range []string{OutcomeApplied, OutcomeStale, OutcomeDuplicate, OutcomeRejected, OutcomeFailed} {
		m.events.WithLabelValues(o)
	}
	return m, register(reg, m.events, m.latency, m.apply)
}

// reconcileMetrics are the series of reconciliation runs.
type reconcileMetrics struct {
	runs        *prometheus.CounterVec // result
	driftPairs  prometheus.Gauge
	driftUnread prometheus.Gauge
	repairs     prometheus.Counter
	unsettled   prometheus.Gauge
	compared    prometheus.Counter
	deadLetters prometheus.Gauge
}

func newReconcileMetrics(reg prometheus.Registerer) (*reconcileMetrics, error) {
	m := &reconcileMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_counter_reconcile_runs_total",
			Help: "Reconciliation runs, by result: clean, drift (found and repaired or reported), error.",
		}, []string{"result"}),
		driftPairs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_counter_reconcile_drift_dialogs",
			Help: "Directions of dialogs whose counter differed from the dialogs database in the last reconciliation.",
		}),
		driftUnread: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_counter_reconcile_drift_messages",
			Help: "Sum over directions of |counter - unread messages| in the last reconciliation.",
		}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "socnet_counter_reconcile_repairs_total",
			Help: "Repair events written by reconciliation.",
		}),
		unsettled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_counter_reconcile_unsettled_dialogs",
			Help: "Directions the last reconciliation could not compare because events about them were still in flight.",
		}),
		compared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "socnet_counter_reconcile_compared_total",
			Help: "Directions of dialogs compared by reconciliation runs.",
		}),
		deadLetters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_counter_dead_letters",
			Help: "Events in the dead-letter table of the dialogs database at the last reconciliation.",
		}),
	}
	for _, r := range []string{"clean", "drift", "error"} {
		m.runs.WithLabelValues(r)
	}
	return m, register(reg, m.runs, m.driftPairs, m.driftUnread, m.repairs, m.unsettled, m.compared, m.deadLetters)
}

// relayMetrics are the relay's series.
type relayMetrics struct {
	backlog     prometheus.Gauge
	overMax     prometheus.Gauge
	oldest      prometheus.Gauge
	events      *prometheus.CounterVec // outcome
	latency     prometheus.Histogram
	batches     *prometheus.CounterVec // result
	deadTotal   prometheus.Counter
	deadLetters prometheus.Gauge
	active      prometheus.Gauge
}

func newRelayMetrics(reg prometheus.Registerer) (*relayMetrics, error) {
	m := &relayMetrics{
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_relay_outbox_backlog",
			Help: "Estimate of the events in the outbox not yet delivered (dead letters excluded): max(id) - min(id) + 1.",
		}),
		overMax: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_relay_outbox_backlog_over_max",
			Help: "1 while the outbox backlog is above the relay's --max-backlog, else 0.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_relay_outbox_oldest_seconds",
			Help: "Age of the oldest undelivered outbox event; 0 when the outbox is empty.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_relay_events_total",
			Help: "Outbox events by what counterd answered: applied, stale, duplicate, rejected, failed.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "socnet_relay_delivery_latency_seconds",
			Help:    "From the dialogs transaction that wrote an event to counterd's acknowledgement of it.",
			Buckets: latencyBuckets,
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socnet_relay_batches_total",
			Help: "Batches sent to counterd, by result: ok or error (not acknowledged; retried with backoff).",
		}, []string{"result"}),
		deadTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "socnet_relay_dead_letters_total",
			Help: "Events moved to the dead-letter table by this relay.",
		}),
		deadLetters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_relay_dead_letters",
			Help: "Events in the dead-letter table.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socnet_relay_active",
			Help: "1 while this relay holds the relay lock and delivers, else 0.",
		}),
	}
	for _, o := range []string{OutcomeApplied, OutcomeStale, OutcomeDuplicate, OutcomeRejected, OutcomeFailed} {
		m.events.WithLabelValues(o)
	}
	for _, r := range []string{"ok", "error"} {
		m.batches.WithLabelValues(r)
	}
	return m, register(reg, m.backlog, m.overMax, m.oldest, m.events, m.latency, m.batches, m.deadTotal, m.deadLetters, m.active)
}
