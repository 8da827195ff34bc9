package load_test

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"socnet/internal/load"
)

func ok(op int, at, lat time.Duration) load.Outcome {
	return load.Outcome{Op: op, At: at, Latency: lat, Service: lat, Status: 200, Kind: load.KindNone}
}

func TestRecorderBucketsBySecondOfCompletion(t *testing.T) {
	ms := time.Millisecond
	rec := load.NewRecorder([]string{"a", "b"}, 2, -1)
	rec.Record(0, ok(0, 100*ms, 1*ms))
	rec.Record(1, ok(1, 999*ms, 3*ms))
	rec.Record(0, ok(0, 1000*ms, 5*ms))                                                                    // second 1
	rec.Record(1, load.Outcome{Op: 1, At: 1500 * ms, Latency: 7 * ms, Status: 503, Kind: load.KindStatus}) // second 1
	// Nothing finishes in second 2; second 3 has a timeout.
	rec.Record(0, load.Outcome{Op: 0, At: 3200 * ms, Latency: 2 * time.Second, Kind: load.KindTimeout})
	rec.Flush(4)
	// A straggler for an already flushed second still lands in it.
	rec.Record(1, ok(0, 1900*ms, 9*ms))

	got := rec.Seconds()
	want := []load.SecondResult{
		{T: 0, Requests: 2, RPS: 2, Latency: load.Latency{P50: 1, P90: 3, P99: 3, P999: 3, Max: 3, Mean: 2}},
		{T: 1, Requests: 3, Errors: 1, RPS: 3, Latency: load.Latency{P50: 7, P90: 9, P99: 9, P999: 9, Max: 9, Mean: 7},
			ErrorKinds: map[string]int64{"status": 1}},
		{T: 2},
		{T: 3, Requests: 1, Errors: 1, RPS: 1, Latency: load.Latency{P50: 2000, P90: 2000, P99: 2000, P999: 2000, Max: 2000, Mean: 2000},
			ErrorKinds: map[string]int64{"timeout": 1}},
	}
	// Per-second histograms keep two significant digits.
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0.01, 0.01)); diff != "" {
		t.Errorf("Seconds (-want +got):\n%s", diff)
	}
	if s := rec.Second(1); s.Requests != 3 {
		t.Errorf("Second(1).Requests = %d, want 3", s.Requests)
	}
}

func TestRecorderFoldsLateOutcomesIntoLastSecond(t *testing.T) {
	rec := load.NewRecorder([]string{"a"}, 1, 1)
	rec.Record(0, ok(0, 500*time.Millisecond, time.Millisecond))
	rec.Record(0, ok(0, 1500*time.Millisecond, time.Millisecond))
	rec.Record(0, ok(0, 2100*time.Millisecond, time.Millisecond)) // in flight at the end of a 2 s run
	got := rec.Seconds()
	if len(got) != 2 || got[0].Requests != 1 || got[1].Requests != 2 {
		t.Errorf("Seconds = %+v, want 2 seconds with 1 and 2 requests", got)
	}
}

func TestRecorderTotals(t *testing.T) {
	ms := time.Millisecond
	rec := load.NewRecorder([]string{"get", "search", "unused"}, 3, -1)
	rec.Record(0, ok(0, ms, 2*ms))
	rec.Record(1, ok(0, ms, 4*ms))
	rec.Record(2, load.Outcome{Op: 1, At: ms, Latency: 6 * ms, Status: 404, Kind: load.KindStatus})
	rec.Record(0, load.Outcome{Op: 1, At: ms, Latency: 8 * ms, Kind: load.KindRefused})
	rec.Record(1, load.Outcome{Op: 1, At: ms, Latency: 10 * ms, Kind: load.KindReset})

	got := rec.Totals()
	want := load.Totals{
		Requests: 5, Successes: 2, Errors: 3,
		Latency: load.Latency{P50: 6, P90: 10, P99: 10, P999: 10, Max: 10, Mean: 6},
		// Service times of the failed requests are zero: only Latency was set.
		Service:     load.Latency{P50: 0, P90: 4, P99: 4, P999: 4, Max: 4, Mean: 1.2},
		StatusCodes: map[string]int64{"200": 2, "404": 1, "none": 2},
		ErrorKinds:  map[string]int64{"status": 1, "timeout": 0, "refused": 1, "reset": 1, "other": 0},
		Ops: []load.OpResult{
			{Name: "get", Requests: 2, Latency: load.Latency{P50: 2, P90: 4, P99: 4, P999: 4, Max: 4, Mean: 3}},
			{Name: "search", Requests: 3, Errors: 3, Latency: load.Latency{P50: 8, P90: 10, P99: 10, P999: 10, Max: 10, Mean: 8}},
		},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0.001, 0.0011)); diff != "" {
		t.Errorf("Totals (-want +got):\n%s", diff)
	}
}

func TestRecorderConcurrentCountsAddUp(t *testing.T) {
	rec := load.NewRecorder([]string{"a"}, 4, -1)
	const goroutines, each = 8, 5000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				o := ok(0, time.Duration(i)*time.Millisecond/2, time.Millisecond) // 2.5 s of outcomes
				if i%10 == 0 {
					o.Status, o.Kind = 500, load.KindStatus
				}
				rec.Record(g, o)
				if i%1000 == 0 {
					rec.Flush(i / 2000)
				}
			}
		})
	}
	wg.Wait()
	tot := rec.Totals()
	var perSecond int64
	for _, s := range rec.Seconds() {
		perSecond += s.Requests
	}
	if tot.Requests != goroutines*each || perSecond != tot.Requests || tot.Successes+tot.Errors != tot.Requests ||
		tot.Errors != goroutines*each/10 || tot.StatusCodes["500"] != tot.Errors {
		t.Errorf("totals %d (ok %d, errors %d, 500s %d), per second %d; want %d requests, %d errors",
			tot.Requests, tot.Successes, tot.Errors, tot.StatusCodes["500"], perSecond, goroutines*each, goroutines*each/10)
	}
}
