package drill_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/drill"
)

// t0 is the start of every synthetic timeline.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// role is what a node answers during [From, To) ms of a synthetic timeline.
type role struct {
	From, To int
	Kind     string // "primary", "replica" or "cut"
	// Postmaster numbers the server process (its start time in the sample).
	Postmaster int
}

// timeline renders the answers of node every 100 ms, each taking 5 ms.
func timeline(node string, roles ...role) []drill.Sample {
	var out []drill.Sample
	for _, r := range roles {
		for ms := r.From; ms < r.To; ms += 100 {
			s := drill.Sample{Node: node, Start: at(ms), End: at(ms + 5)}
			switch r.Kind {
			case "cut":
				s.Err = "timeout"
			default:
				s.Reached = true
				s.Primary = r.Kind == "primary"
				s.Postmaster = t0.Add(-time.Duration(r.Postmaster) * time.Hour)
			}
			out = append(out, s)
		}
	}
	return out
}

func join(parts ...[]drill.Sample) []drill.Sample {
	var out []drill.Sample
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// outcome is the part of a verdict the table compares.
type outcome struct {
	Overlaps    [][2]int // from, to in ms
	OverlapWith [][]string
	LateAcks    []string // tags
	Promoted    []string // nodes whose tenure began with a promotion
	NoPrimaryMS float64
	OK          bool
}

func summarise(v drill.PartitionVerdict) outcome {
	o := outcome{NoPrimaryMS: v.NoPrimaryMS, OK: v.OK()}
	for _, ov := range v.Overlaps {
		o.Overlaps = append(o.Overlaps, [2]int{int(ov.From.Sub(t0).Milliseconds()), int(ov.To.Sub(t0).Milliseconds())})
		o.OverlapWith = append(o.OverlapWith, ov.Nodes)
	}
	for _, l := range v.LateAcks {
		o.LateAcks = append(o.LateAcks, l.Tag)
	}
	for _, t := range v.Tenures {
		if t.Promoted {
			o.Promoted = append(o.Promoted, t.Node)
		}
	}
	return o
}

func ack(node, tag string, startMS int) drill.NodeAck {
	return drill.NodeAck{Node: node, Tag: tag, Start: at(startMS), End: at(startMS + 10)}
}

func TestJudgePartition(t *testing.T) {
	// The old primary a is cut at 1000 ms; b is promoted at 2500 ms.
	cleanB := timeline("b", role{0, 2500, "replica", 1}, role{2500, 6000, "primary", 1})
	for _, tc := range []struct {
		name    string
		samples []drill.Sample
		acks    []drill.NodeAck
		want    outcome
	}{{
		name: "failover after a cut, old primary back as a replica of a new server process",
		samples: join(
			timeline("a", role{0, 1000, "primary", 1}, role{1000, 4000, "cut", 0}, role{4000, 6000, "replica", 2}),
			cleanB),
		acks: []drill.NodeAck{ack("a", "before the cut", 500), ack("a", "in flight at the promotion", 2450), ack("b", "after", 3000)},
		want: outcome{Promoted: []string{"b"}, NoPrimaryMS: 1600, OK: true},
	}, {
		name: "the old primary still a primary after the heal: two primaries all along the cut",
		samples: join(
			timeline("a", role{0, 1000, "primary", 1}, role{1000, 4000, "cut", 0}, role{4000, 5000, "primary", 1}, role{5000, 6000, "replica", 2}),
			cleanB),
		want: outcome{
			Overlaps: [][2]int{{2505, 4900}}, OverlapWith: [][]string{{"a", "b"}},
			Promoted: []string{"b"}, NoPrimaryMS: 1600,
		},
	}, {
		name: "two primaries answering side by side",
		samples: join(
			timeline("a", role{0, 3000, "primary", 1}, role{3000, 6000, "cut", 0}),
			cleanB),
		want: outcome{
			Overlaps: [][2]int{{2505, 2900}}, OverlapWith: [][]string{{"a", "b"}},
			Promoted: []string{"b"}, NoPrimaryMS: 100,
		},
	}, {
		name: "a write the old primary acknowledged after the promotion",
		samples: join(
			timeline("a", role{0, 1000, "primary", 1}, role{1000, 4000, "cut", 0}, role{4000, 6000, "replica", 2}),
			cleanB),
		acks: []drill.NodeAck{ack("a", "late", 3000), ack("a", "just before", 2500)},
		want: outcome{LateAcks: []string{"late"}, Promoted: []string{"b"}, NoPrimaryMS: 1600},
	}, {
		name: "failback: the old primary promoted again acknowledges rightly, the other no more",
		samples: join(
			timeline("a", role{0, 1000, "primary", 1}, role{1000, 4000, "cut", 0}, role{4000, 5000, "replica", 2}, role{5000, 7000, "primary", 2}),
			timeline("b", role{0, 2500, "replica", 1}, role{2500, 4800, "primary", 1}, role{4800, 7000, "cut", 0})),
		acks: []drill.NodeAck{ack("a", "a after failback", 5500), ack("b", "b after failback", 5500), ack("b", "b before", 4000)},
		want: outcome{LateAcks: []string{"b after failback"}, Promoted: []string{"b", "a"}, NoPrimaryMS: 1600},
	}, {
		name: "a single primary answer of a restarted server proves no stretch",
		samples: join(
			timeline("a", role{0, 1000, "primary", 1}, role{1000, 4000, "cut", 0}, role{4000, 4100, "primary", 2}, role{4100, 6000, "replica", 3}),
			cleanB),
		want: outcome{Promoted: []string{"b"}, NoPrimaryMS: 1600, OK: true},
	}, {
		name: "a restarted server answering as the primary beside the new one",
		samples: join(
			timeline("a", role{0, 1000, "primary", 1}, role{1000, 4000, "cut", 0}, role{4000, 4500, "primary", 2}, role{4500, 6000, "replica", 3}),
			cleanB),
		want: outcome{
			Overlaps: [][2]int{{4005, 4400}}, OverlapWith: [][]string{{"b", "a"}},
			Promoted: []string{"b"}, NoPrimaryMS: 1600,
		},
	}, {
		name: "nobody answers",
		samples: join(
			timeline("a", role{0, 1000, "cut", 0}),
			timeline("b", role{0, 1000, "cut", 0})),
		want: outcome{NoPrimaryMS: 905, OK: true},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			v := drill.JudgePartition(tc.samples, tc.acks)
			if diff := cmp.Diff(tc.want, summarise(v)); diff != "" {
				t.Errorf("verdict (-want +got):\n%s\nproblems: %v", diff, v.Problems)
			}
			if v.OK() != (len(v.Overlaps) == 0 && len(v.LateAcks) == 0) {
				t.Errorf("OK() = %v with overlaps %v and late acks %v", v.OK(), v.Overlaps, v.LateAcks)
			}
		})
	}
}

func TestTenuresBridgeACut(t *testing.T) {
	samples := timeline("a", role{0, 1000, "primary", 1}, role{1000, 3000, "cut", 0}, role{3000, 4000, "primary", 1})
	got := drill.Tenures(samples)
	if len(got) != 1 {
		t.Fatalf("tenures %+v, want one across the cut", got)
	}
	if !got[0].From.Equal(at(5)) || !got[0].To.Equal(at(3900)) || got[0].Promoted {
		t.Errorf("tenure %+v, want from 5 ms to 3900 ms, not promoted", got[0])
	}
}
