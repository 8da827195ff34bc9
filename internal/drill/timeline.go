package drill

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"time"
)

// Kinds of Event.
const (
	EventKill      = "kill"      // a node was sent SIGKILL
	EventPromotion = "promotion" // a replica became the primary
	EventRejoin    = "rejoin"    // a killed node streams again as a replica
	EventStop      = "stop"      // the writers stopped
	EventHold      = "hold"      // a replica was held back from receiving WAL
	EventCut       = "cut"       // a host was cut off the network
	EventHeal      = "heal"      // a cut host was joined to the network again
)

// Event is a moment of a run worth a marker on the timeline.
type Event struct {
	Kind string    `json:"kind"`
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Detail adds what the kind does not say (e.g. "from failover history").
	Detail string `json:"detail,omitempty"`
}

// Bucket is one slice of a run's timeline: what the writers saw in
// [Start, Start+width), by the time attempts ended.
type Bucket struct {
	// T is the bucket's start in seconds since the run started.
	T       float64 `json:"t"`
	Acks    int     `json:"acks"`
	Failed  int     `json:"failed"`
	Unknown int     `json:"unknown"`
}

// Timeline counts the attempts (the rows, for batches) that ended in each
// bucket of width from start to end.
func Timeline(attempts []Attempt, start, end time.Time, width time.Duration) []Bucket {
	if width <= 0 || !end.After(start) {
		return nil
	}
	n := int((end.Sub(start) + width - 1) / width)
	buckets := make([]Bucket, n)
	for i := range buckets {
		buckets[i].T = roundTo(float64(time.Duration(i)*width)/float64(time.Second), 3)
	}
	for _, a := range attempts {
		i := int(a.End.Sub(start) / width)
		if i < 0 || i >= n {
			continue
		}
		w := max(1, a.Rows)
		switch a.Outcome {
		case Acknowledged:
			buckets[i].Acks += w
		case Failed:
			buckets[i].Failed += w
		default:
			buckets[i].Unknown += w
		}
	}
	return buckets
}

// FirstAckAfter returns the end of the first acknowledged attempt that
// started at or after t: the moment writes worked again after an event. ok
// is false when there was none.
func FirstAckAfter(attempts []Attempt, t time.Time) (at time.Time, ok bool) {
	for _, a := range attempts {
		if a.Outcome == Acknowledged && !a.Start.Before(t) && (!ok || a.End.Before(at)) {
			at, ok = a.End, true
		}
	}
	return at, ok
}

// LongestGap returns the longest time in [from, to] during which no attempt
// was acknowledged, and when it began: the stall a client felt. Gaps are
// measured between acknowledgement times (the ends of acknowledged
// attempts), from and to included as bounds.
func LongestGap(attempts []Attempt, from, to time.Time) (gap time.Duration, began time.Time) {
	var acks []time.Time
	for _, a := range attempts {
		if a.Outcome == Acknowledged && !a.End.Before(from) && !a.End.After(to) {
			acks = append(acks, a.End)
		}
	}
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	prev := from
	for _, t := range append(acks, to) {
		if d := t.Sub(prev); d > gap {
			gap, began = d, prev
		}
		prev = t
	}
	return gap, began
}

// ErrorCounts counts the attempts that were not acknowledged by their error
// class ("503", "timeout", ...).
func ErrorCounts(attempts []Attempt) map[string]int {
	m := map[string]int{}
	for _, a := range attempts {
		if a.Outcome != Acknowledged {
			m[errorClass(a)]++
		}
	}
	return m
}

// Distribution summarizes a figure over repeated runs, in milliseconds.
type Distribution struct {
	Count  int     `json:"count"`
	Min    float64 `json:"min_ms"`
	Median float64 `json:"median_ms"`
	P90    float64 `json:"p90_ms"`
	Max    float64 `json:"max_ms"`
}

// Distribute summarizes durations with nearest-rank percentiles.
func Distribute(ds []time.Duration) Distribution {
	if len(ds) == 0 {
		return Distribution{}
	}
	s := slices.Clone(ds)
	slices.SortFunc(s, cmp.Compare[time.Duration])
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return millis(s[max(0, min(i, len(s)-1))])
	}
	return Distribution{
		Count:  len(s),
		Min:    millis(s[0]),
		Median: rank(0.5),
		P90:    rank(0.9),
		Max:    millis(s[len(s)-1]),
	}
}

// millis converts d to milliseconds with a microsecond's precision.
func millis(d time.Duration) float64 { return roundTo(float64(d)/float64(time.Millisecond), 3) }

func roundTo(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// formatMillis renders milliseconds for the text report.
func formatMillis(ms float64) string {
	if ms >= 10000 {
		return strconv.FormatFloat(ms/1000, 'f', 1, 64) + " s"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
}
