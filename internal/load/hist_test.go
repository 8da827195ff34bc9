package load_test

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"socnet/internal/load"
)

func TestHistogramSummary(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		values func(record func(time.Duration))
		want   load.Latency
	}{
		{
			name:   "empty",
			values: func(func(time.Duration)) {},
			want:   load.Latency{},
		},
		{
			name: "one value",
			values: func(rec func(time.Duration)) {
				rec(1500 * time.Microsecond)
			},
			want: load.Latency{P50: 1.5, P90: 1.5, P99: 1.5, P999: 1.5, Max: 1.5, Mean: 1.5},
		},
		{
			name: "1 to 1000 ms",
			values: func(rec func(time.Duration)) {
				for i := 1; i <= 1000; i++ {
					rec(time.Duration(i) * ms)
				}
			},
			want: load.Latency{P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000, Mean: 500.5},
		},
		{
			name: "a stall among fast requests",
			values: func(rec func(time.Duration)) {
				for range 9980 {
					rec(ms)
				}
				for range 20 { // 0.2 %: above p99.9, below p99
					rec(500 * ms)
				}
			},
			want: load.Latency{P50: 1, P90: 1, P99: 1, P999: 500, Max: 500, Mean: 1.998},
		},
		{
			name: "beyond the range is clamped to 60 s",
			values: func(rec func(time.Duration)) {
				rec(2 * time.Minute)
			},
			want: load.Latency{P50: 60000, P90: 60000, P99: 60000, P999: 60000, Max: 60000, Mean: 60000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := load.NewHistogram()
			tt.values(h.Record)
			got := h.Summary()
			// Three significant digits: values agree to 0.1 %.
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0.001, 0.0011)); diff != "" {
				t.Errorf("Summary (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHistogramMergeAndReset(t *testing.T) {
	a, b := load.NewHistogram(), load.NewHistogram()
	for i := range 100 {
		a.Record(time.Duration(i+1) * time.Millisecond)
		b.Record(time.Duration(i+101) * time.Millisecond)
	}
	a.Merge(b)
	if a.Count() != 200 {
		t.Fatalf("Count after Merge = %d, want 200", a.Count())
	}
	s := a.Summary()
	if math.Abs(s.P50-100) > 0.1 || math.Abs(s.Max-200) > 0.2 {
		t.Errorf("merged p50 = %v, max = %v; want 100, 200", s.P50, s.Max)
	}
	a.Reset()
	if a.Count() != 0 || a.Summary() != (load.Latency{}) {
		t.Errorf("after Reset: count %d, summary %+v", a.Count(), a.Summary())
	}
}
