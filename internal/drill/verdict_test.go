package drill_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/drill"
)

func TestClassifyHTTP(t *testing.T) {
	tests := []struct {
		status int
		err    error
		want   drill.Outcome
	}{
		{200, nil, drill.Acknowledged},
		{201, nil, drill.Acknowledged},
		{400, nil, drill.Failed},
		{409, nil, drill.Failed},
		{500, nil, drill.Unknown},
		{503, nil, drill.Unknown},
		{0, errors.New("connection refused"), drill.Unknown},
		{200, errors.New("body cut"), drill.Unknown},
		{302, nil, drill.Unknown},
	}
	for _, tt := range tests {
		if got := drill.ClassifyHTTP(tt.status, tt.err); got != tt.want {
			t.Errorf("ClassifyHTTP(%d, %v) = %v, want %v", tt.status, tt.err, got, tt.want)
		}
	}
}

func TestOutcomeJSON(t *testing.T) {
	for _, o := range []drill.Outcome{drill.Acknowledged, drill.Failed, drill.Unknown} {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		var back drill.Outcome
		if err := json.Unmarshal(b, &back); err != nil || back != o {
			t.Errorf("round trip of %v through %s: got %v, %v", o, b, back, err)
		}
	}
	if _, err := json.Marshal(drill.Outcome(0)); err == nil {
		t.Error("marshalling the zero outcome succeeded")
	}
}

func TestLedgerTagsAreUniqueAndOrdered(t *testing.T) {
	l := drill.NewLedger("r1")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				seq, tag := l.Next()
				l.Record(drill.Attempt{Seq: seq, Tag: tag, Outcome: drill.Acknowledged})
			}
		})
	}
	wg.Wait()
	got := l.Attempts()
	if len(got) != 100 {
		t.Fatalf("%d attempts, want 100", len(got))
	}
	seen := map[string]bool{}
	for i, a := range got {
		if a.Seq != int64(i+1) {
			t.Fatalf("attempt %d has seq %d", i, a.Seq)
		}
		if !strings.HasPrefix(a.Tag, l.Prefix()) || seen[a.Tag] {
			t.Fatalf("tag %q repeated or without prefix %q", a.Tag, l.Prefix())
		}
		seen[a.Tag] = true
	}
}

// att builds a ledger entry for the write tagged tagOf(seq).
func att(seq int64, o drill.Outcome, id string) drill.Attempt {
	return drill.Attempt{Seq: seq, Tag: tagOf(seq), Outcome: o, ID: id}
}

func tagOf(seq int64) string { return "drill r #" + string(rune('0'+seq)) }

func rows(tagIDs ...string) []drill.Row {
	var rs []drill.Row
	for i := 0; i+1 < len(tagIDs); i += 2 {
		rs = append(rs, drill.Row{Tag: tagIDs[i], ID: tagIDs[i+1]})
	}
	return rs
}

func TestJudge(t *testing.T) {
	ledger := []drill.Attempt{
		att(1, drill.Acknowledged, "a"),
		att(2, drill.Acknowledged, "b"),
		att(3, drill.Unknown, ""),
		att(4, drill.Failed, ""),
	}
	complete := rows(tagOf(1), "a", tagOf(2), "b")
	tests := []struct {
		name  string
		nodes []drill.NodeRows
		// want holds the fields that matter of the verdict.
		want     summary
		problems []string
	}{
		{
			name: "all acknowledged writes everywhere",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: complete},
				{Node: "n2", Role: "replica", Rows: complete},
			},
			want: summary{Acknowledged: 2, Failed: 1, Unknown: 1, Reference: "n1", PerNode: map[string]int{"n1": 0, "n2": 0}},
		},
		{
			name: "an acknowledged write missing on a replica is lost there",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: complete},
				{Node: "n2", Role: "replica", Rows: rows(tagOf(1), "a")},
			},
			want: summary{Acknowledged: 2, Failed: 1, Unknown: 1, Lost: 1, Reference: "n1", PerNode: map[string]int{"n1": 0, "n2": 1}},
			problems: []string{
				"n2 lacks 1 acknowledged write(s), e.g. " + tagOf(2),
				"n2 disagrees with n1: 1 write(s) missing, 0 extra",
			},
		},
		{
			name: "an acknowledged write missing everywhere is lost on every node",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: rows(tagOf(2), "b")},
				{Node: "n2", Role: "replica", Rows: rows(tagOf(2), "b")},
			},
			want: summary{Acknowledged: 2, Failed: 1, Unknown: 1, Lost: 1, Reference: "n1", PerNode: map[string]int{"n1": 1, "n2": 1}},
			problems: []string{
				"n1 lacks 1 acknowledged write(s), e.g. " + tagOf(1),
				"n2 lacks 1 acknowledged write(s), e.g. " + tagOf(1),
			},
		},
		{
			name: "a write in doubt that is present is no loss",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: append(rows(tagOf(3), "c"), complete...)},
				{Node: "n2", Role: "replica", Rows: append(rows(tagOf(3), "c"), complete...)},
			},
			want: summary{Acknowledged: 2, Failed: 1, Unknown: 1, PresentUnacknowledged: 1, Reference: "n1", PerNode: map[string]int{"n1": 0, "n2": 0}},
		},
		{
			name: "a write in doubt present on one node only is divergence",
			nodes: []drill.NodeRows{
				{Node: "n2", Role: "replica", Rows: complete},
				{Node: "n1", Role: "primary", Rows: append(rows(tagOf(3), "c"), complete...)},
			},
			want:     summary{Acknowledged: 2, Failed: 1, Unknown: 1, PresentUnacknowledged: 1, Reference: "n1", PerNode: map[string]int{"n1": 0, "n2": 0}},
			problems: []string{"n2 disagrees with n1: 1 write(s) missing, 0 extra"},
		},
		{
			name: "a replica with a write the primary lacks diverged",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: complete},
				{Node: "n3", Role: "replica", Rows: append(rows(tagOf(3), "c"), complete...)},
			},
			want:     summary{Acknowledged: 2, Failed: 1, Unknown: 1, Reference: "n1", PerNode: map[string]int{"n1": 0, "n3": 0}},
			problems: []string{"n3 disagrees with n1: 0 write(s) missing, 1 extra"},
		},
		{
			name: "the same write twice is a duplicate",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: append(rows(tagOf(2), "b2"), complete...)},
			},
			want:     summary{Acknowledged: 2, Failed: 1, Unknown: 1, Duplicates: 1, Reference: "n1", PerNode: map[string]int{"n1": 0}},
			problems: []string{"n1 holds 1 write(s) more than once, e.g. " + tagOf(2)},
		},
		{
			name: "a refused write that is present",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: append(rows(tagOf(4), "d"), complete...)},
			},
			want:     summary{Acknowledged: 2, Failed: 1, Unknown: 1, Reference: "n1", PerNode: map[string]int{"n1": 0}},
			problems: []string{"n1 holds 1 write(s) that were refused with a definite error"},
		},
		{
			name: "an acknowledged write under another id",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: rows(tagOf(1), "a", tagOf(2), "zzz")},
			},
			want:     summary{Acknowledged: 2, Failed: 1, Unknown: 1, Reference: "n1", PerNode: map[string]int{"n1": 0}},
			problems: []string{"n1 holds 1 acknowledged write(s) under another id than the acknowledgement named"},
		},
		{
			name: "a row no attempt made",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: append(rows(tagOf(9), "x"), complete...)},
			},
			want:     summary{Acknowledged: 2, Failed: 1, Unknown: 1, Reference: "n1", PerNode: map[string]int{"n1": 0}},
			problems: []string{"n1 holds 1 row(s) tagged by the run that no attempt made"},
		},
		{
			name: "a node that cannot be read fails the verdict",
			nodes: []drill.NodeRows{
				{Node: "n1", Role: "primary", Rows: complete},
				{Node: "n2", Role: "down", Err: "connection refused"},
			},
			want:     summary{Acknowledged: 2, Failed: 1, Unknown: 1, Reference: "n1", PerNode: map[string]int{"n1": 0, "n2": 0}},
			problems: []string{"n2 could not be verified: connection refused"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := drill.Judge(ledger, tt.nodes)
			if diff := cmp.Diff(tt.want, summarize(v)); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			want := tt.problems
			if want == nil {
				want = []string{}
			}
			if diff := cmp.Diff(want, v.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if v.OK() != (len(tt.problems) == 0) {
				t.Errorf("OK() = %v with problems %q", v.OK(), v.Problems)
			}
		})
	}
}

// summary is the part of a Verdict TestJudge compares.
type summary struct {
	Acknowledged, Failed, Unknown           int
	Lost, PresentUnacknowledged, Duplicates int
	Reference                               string
	PerNode                                 map[string]int // lost per node
}

func summarize(v drill.Verdict) summary {
	s := summary{Acknowledged: v.Acknowledged, Failed: v.Failed, Unknown: v.Unknown, Lost: v.Lost,
		PresentUnacknowledged: v.PresentUnacknowledged, Duplicates: v.Duplicates, Reference: v.Reference,
		PerNode: map[string]int{}}
	for _, n := range v.Nodes {
		s.PerNode[n.Node] = n.Lost
	}
	return s
}

func TestJudgeWithoutNodes(t *testing.T) {
	v := drill.Judge([]drill.Attempt{att(1, drill.Acknowledged, "a")}, nil)
	if v.OK() {
		t.Fatal("a verdict without nodes passed")
	}
}

func TestJudgeFill(t *testing.T) {
	b := func(first, n int) drill.Batch { return drill.Batch{First: first, N: n} }
	batches := []drill.Batch{b(0, 10), b(10, 10), b(20, 5)}
	node := func(name string, present, rows, distinct int64) drill.FillNode {
		return drill.FillNode{Node: name, Role: "replica", AckedPresent: present, Rows: rows, Distinct: distinct}
	}
	tests := []struct {
		name     string
		batches  []drill.Batch
		finished bool
		nodes    []drill.FillNode
		lost     int64
		problems []string
	}{
		{
			name: "complete", batches: batches, finished: true,
			nodes: []drill.FillNode{node("n1", 25, 125, 125), node("n2", 25, 125, 125)},
		},
		{
			name: "acknowledged rows missing on a node", batches: batches, finished: true,
			nodes: []drill.FillNode{node("n1", 25, 125, 125), node("n2", 15, 115, 115)},
			lost:  10,
			problems: []string{
				"n2 lacks 10 acknowledged row(s)",
				"n2 holds 115 rows, expected 125",
				"n2 disagrees with n1: 115 rows (15 acknowledged) against 125 (25)",
			},
		},
		{
			name: "extra rows are duplicates of the load", batches: batches, finished: true,
			nodes:    []drill.FillNode{node("n1", 25, 135, 135)},
			problems: []string{"n1 holds 135 rows, expected 125"},
		},
		{
			name: "the same id twice", batches: batches, finished: true,
			nodes:    []drill.FillNode{node("n1", 25, 125, 124)},
			problems: []string{"n1 holds 125 rows but 124 distinct ids"},
		},
		{
			name: "a batch acknowledged twice", batches: append(batches[:2:2], b(10, 10), b(20, 5)), finished: true,
			nodes: []drill.FillNode{node("n1", 35, 125, 125)},
			problems: []string{
				"the batch at row 10 was acknowledged twice",
				"the load finished with 35 rows acknowledged in batches, not 25",
			},
		},
		{
			name: "an unfinished load is a failure but keeps its acknowledged rows", batches: batches[:2], finished: false,
			nodes:    []drill.FillNode{node("n1", 20, 120, 120)},
			problems: []string{"the load did not finish: 20 of 25 rows acknowledged"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := drill.JudgeFill(25, tt.batches, 125, tt.finished, tt.nodes)
			if v.Lost != tt.lost {
				t.Errorf("Lost = %d, want %d", v.Lost, tt.lost)
			}
			want := tt.problems
			if want == nil {
				want = []string{}
			}
			if diff := cmp.Diff(want, v.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTimelineFigures(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	at := func(o drill.Outcome, start, end int, class string) drill.Attempt {
		return drill.Attempt{Outcome: o, Start: ms(start), End: ms(end), Error: class}
	}
	attempts := []drill.Attempt{
		at(drill.Acknowledged, 0, 50, ""),
		at(drill.Acknowledged, 40, 90, ""),
		// The kill is at 100 ms: this one started before and is not the
		// first acknowledgement after it.
		at(drill.Acknowledged, 95, 130, ""),
		at(drill.Unknown, 110, 300, "503"),
		at(drill.Unknown, 120, 800, "timeout"),
		at(drill.Unknown, 300, 310, "503"),
		at(drill.Acknowledged, 900, 1250, ""),
		at(drill.Acknowledged, 1000, 1100, ""),
		at(drill.Failed, 1200, 1210, "400"),
	}
	got, ok := drill.FirstAckAfter(attempts, ms(100))
	if !ok || !got.Equal(ms(1100)) {
		t.Errorf("FirstAckAfter = %v, %v; want %v", got, ok, ms(1100))
	}
	if _, ok := drill.FirstAckAfter(attempts, ms(1300)); ok {
		t.Error("FirstAckAfter found an acknowledgement after the last one")
	}
	gap, began := drill.LongestGap(attempts, ms(0), ms(1400))
	if gap != 970*time.Millisecond || !began.Equal(ms(130)) {
		t.Errorf("LongestGap = %v from %v; want 970ms from %v", gap, began, ms(130))
	}
	if diff := cmp.Diff(map[string]int{"503": 2, "timeout": 1, "400": 1}, drill.ErrorCounts(attempts)); diff != "" {
		t.Errorf("ErrorCounts (-want +got):\n%s", diff)
	}
	buckets := drill.Timeline(attempts, ms(0), ms(1300), 500*time.Millisecond)
	want := []drill.Bucket{
		{T: 0, Acks: 3, Unknown: 2},
		{T: 0.5, Unknown: 1},
		{T: 1, Acks: 2, Failed: 1},
	}
	if diff := cmp.Diff(want, buckets); diff != "" {
		t.Errorf("Timeline (-want +got):\n%s", diff)
	}
}

func TestDistribute(t *testing.T) {
	var ds []time.Duration
	for i := 10; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*100*time.Millisecond)
	}
	want := drill.Distribution{Count: 10, Min: 100, Median: 500, P90: 900, Max: 1000}
	if diff := cmp.Diff(want, drill.Distribute(ds)); diff != "" {
		t.Errorf("Distribute (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(drill.Distribution{}, drill.Distribute(nil)); diff != "" {
		t.Errorf("Distribute(nil) (-want +got):\n%s", diff)
	}
}

// TestJudgeLostEverywhere: a write one node lacks and another holds is
// lost (on that node) but not lost everywhere; one that no node holds is
// both.
func TestJudgeLostEverywhere(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	ack := func(seq int64) drill.Attempt {
		tag := fmt.Sprintf("drill r #%d", seq)
		return drill.Attempt{Seq: seq, Tag: tag, Outcome: drill.Acknowledged, Start: t0, End: t0}
	}
	attempts := []drill.Attempt{ack(1), ack(2), ack(3)}
	rows := func(seqs ...int) []drill.Row {
		var out []drill.Row
		for _, s := range seqs {
			out = append(out, drill.Row{Tag: fmt.Sprintf("drill r #%d", s)})
		}
		return out
	}
	v := drill.Judge(attempts, []drill.NodeRows{
		{Node: "main-1", Role: drill.RoleReplica, Rows: rows(1)},    // held back: lacks #2 and #3
		{Node: "main-3", Role: drill.RoleReplica, Rows: rows(1, 2)}, // lacks #3
		{Node: "main-2", Role: drill.RoleDown, Err: "the node is down"},
	})
	if v.Lost != 2 || v.LostEverywhere != 1 || v.OK() {
		t.Errorf("lost %d, lost everywhere %d, ok %v; want 2, 1, false", v.Lost, v.LostEverywhere, v.OK())
	}
	if v := drill.Judge(attempts, nil); v.LostEverywhere != 0 {
		t.Errorf("no node read: lost everywhere %d, want 0 (nothing is known)", v.LostEverywhere)
	}
}
