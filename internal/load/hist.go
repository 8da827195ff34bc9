package load

import (
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to histMaxMicros; longer
// ones are clamped to the maximum (no request outlives its timeout anyway).
const histMaxMicros = 60_000_000

// Histogram records latencies in an HDR histogram: three significant digits
// (0.1 %) from 1 µs to 60 s, in constant memory and constant time per value.
// It is not safe for concurrent use.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram with three significant digits.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, histMaxMicros, 3)}
}

// newCoarseHistogram returns a histogram with two significant digits (1 %),
// a seventh of the memory, for the per-second series.
func newCoarseHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, histMaxMicros, 2)}
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	} else if us > histMaxMicros {
		us = histMaxMicros
	}
	_ = h.h.RecordValue(us) // in range by construction
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count returns how many values h holds.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Reset empties h.
func (h *Histogram) Reset() { h.h.Reset() }

// Summary returns the percentiles of h in milliseconds; all zero when empty.
func (h *Histogram) Summary() Latency {
	if h.h.TotalCount() == 0 {
		return Latency{}
	}
	v := h.h.ValueAtPercentilesSlice([]float64{50, 90, 99, 99.9})
	return Latency{
		P50:  microsToMillis(float64(v[0])),
		P90:  microsToMillis(float64(v[1])),
		P99:  microsToMillis(float64(v[2])),
		P999: microsToMillis(float64(v[3])),
		Max:  microsToMillis(float64(h.h.Max())),
		Mean: microsToMillis(h.h.Mean()),
	}
}

// Latency is a latency distribution in milliseconds (to the microsecond).
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func microsToMillis(us float64) float64 { return math.Round(us) / 1000 }
