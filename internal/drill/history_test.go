package drill_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/drill"
)

// hist builds hand-made histories on a millisecond clock.
type hist struct {
	t0  time.Time
	ops []drill.Op
}

func newHist() *hist { return &hist{t0: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (h *hist) at(ms int) time.Time { return h.t0.Add(time.Duration(ms) * time.Millisecond) }

// write adds a write by session of value under key, invoked at from and
// completed at to (milliseconds).
func (h *hist) write(session, key, value string, from, to int, o drill.Outcome) *hist {
	h.ops = append(h.ops, drill.Op{ID: len(h.ops) + 1, Session: session, Kind: drill.OpWrite, Key: key, Value: value,
		Invoke: h.at(from), Complete: h.at(to), Outcome: o})
	return h
}

// read adds a successful read; mode is "" (no session), "session" (in
// the reader's session) or "final".
func (h *hist) read(session, key, mode string, from, to int, seen ...string) *hist {
	h.ops = append(h.ops, drill.Op{ID: len(h.ops) + 1, Session: session, Kind: drill.OpRead, Key: key, Seen: seen,
		InSession: mode == "session", Final: mode == "final",
		Invoke: h.at(from), Complete: h.at(to), Outcome: drill.Acknowledged})
	return h
}

// failedRead adds a read that got no answer.
func (h *hist) failedRead(session, key string, from, to int) *hist {
	h.ops = append(h.ops, drill.Op{ID: len(h.ops) + 1, Session: session, Kind: drill.OpRead, Key: key,
		Invoke: h.at(from), Complete: h.at(to), Outcome: drill.Unknown, Error: "503"})
	return h
}

// TestCheckHistory checks the history checker on hand-made histories: ones
// that keep every rule, including writes in doubt seen or not seen, and one
// or more of each kind of violation (the negative controls).
func TestCheckHistory(t *testing.T) {
	const bound = time.Second
	const ok, fail, unknown = drill.Acknowledged, drill.Failed, drill.Unknown
	type want struct {
		counts map[string]int
		// quoted lists, per example, its kind and the ids of its ops.
		quoted []string
	}
	tests := []struct {
		name string
		h    *hist
		want want
	}{
		{"empty", newHist(), want{}},
		{"own write seen at once, others' within the bound",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				read("s1", "d1", "session", 11, 12, "a").
				read("r", "d1", "", 20, 30). // another session, within the bound: may lack it
				read("r", "d1", "", 1011, 1020, "a").
				read("r", "d1", "final", 5000, 5001, "a"),
			want{}},
		{"a read concurrent with a write may or may not see it",
			newHist().
				write("s1", "d1", "a", 0, 100, ok).
				read("s1", "d1", "session", 50, 60).
				read("s1", "d1", "session", 60, 70, "a").
				read("s1", "d1", "session", 100, 120), // invoked at the acknowledgement, not after
			want{}},
		{"writes in doubt may be seen, or not, even finally",
			newHist().
				write("s1", "d1", "a", 0, 10, unknown).
				write("s1", "d1", "b", 20, 30, unknown).
				read("s1", "d1", "session", 2000, 2001, "a").
				read("r", "d1", "", 2100, 2101, "b").
				read("r", "d1", "final", 9000, 9001, "a"),
			want{}},
		{"reads that failed say nothing",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				failedRead("s1", "d1", 20, 30).
				failedRead("r", "d1", 5000, 5010),
			want{}},
		{"a refused write that never shows",
			newHist().
				write("s1", "d1", "a", 0, 10, fail).
				read("s1", "d1", "final", 5000, 5001),
			want{}},
		{"lost: the final read lacks an acknowledged write",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				write("s1", "d1", "b", 20, 30, ok).
				read("r", "d1", "final", 5000, 5001, "a"),
			want{map[string]int{drill.ViolationLost: 1}, []string{"lost 2 3"}}},
		{"stale: a read past the bound lacks the write, and the earliest is quoted",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				write("s1", "d1", "b", 20, 30, ok).
				read("r", "d1", "", 1500, 1510).
				read("r", "d1", "", 900, 910), // within the bound of both: allowed
			want{map[string]int{drill.ViolationStale: 2}, []string{"stale-read 1 3"}}},
		{"read-your-writes: the session's own read lacks its write",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				read("s1", "d1", "session", 20, 30).
				read("s2", "d1", "session", 20, 30), // another session within the bound
			want{map[string]int{drill.ViolationRYW: 1}, []string{"read-your-writes 1 2"}}},
		{"no read-your-writes outside a session",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				read("s1", "d1", "", 20, 30),
			want{}},
		{"a value seen once may disappear within the bound (no monotonic reads promised)",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				read("r", "d1", "", 20, 30, "a").
				read("r", "d1", "", 40, 50),
			want{}},
		{"phantoms: a refused write seen, and a value nobody wrote",
			newHist().
				write("s1", "d1", "a", 0, 10, fail).
				read("r", "d1", "", 20, 30, "a", "zz"),
			want{map[string]int{drill.ViolationPhantom: 2}, []string{"phantom 1 2", "phantom 2"}}},
		{"keys are apart",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				read("s1", "d2", "session", 5000, 5010),
			want{}},
		{"every kind at once",
			newHist().
				write("s1", "d1", "a", 0, 10, ok).
				read("s1", "d1", "session", 20, 30).
				read("r", "d1", "", 3000, 3010).
				read("r", "d1", "final", 9000, 9010, "x"),
			want{map[string]int{drill.ViolationLost: 1, drill.ViolationStale: 1, drill.ViolationRYW: 1, drill.ViolationPhantom: 1},
				[]string{"lost 1 4", "phantom 4", "read-your-writes 1 2", "stale-read 1 3"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := drill.CheckHistory(tt.h.ops, bound)
			counts := tt.want.counts
			if counts == nil {
				counts = map[string]int{}
			}
			var quoted []string
			for _, e := range v.Examples {
				q := e.Kind
				for _, op := range e.Ops {
					q += " " + strconv.Itoa(op.ID)
				}
				quoted = append(quoted, q)
				if e.Why == "" || e.Key == "" {
					t.Errorf("example %+v says nothing", e)
				}
			}
			if diff := cmp.Diff(counts, v.Counts); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want.quoted, quoted); diff != "" {
				t.Errorf("quoted (-want +got):\n%s", diff)
			}
			if v.OK() != (len(counts) == 0) {
				t.Errorf("OK() = %v with counts %v", v.OK(), v.Counts)
			}
			if len(v.Problems()) != len(counts) {
				t.Errorf("problems %q for counts %v", v.Problems(), v.Counts)
			}
		})
	}
}

// TestCheckHistoryQuotesFewExamples checks that a long history with many
// violations quotes a bounded number of them, the earliest first.
func TestCheckHistoryQuotesFewExamples(t *testing.T) {
	h := newHist().write("s1", "d1", "a", 0, 10, drill.Acknowledged)
	for i := range 50 {
		h.read("r", "d1", "", 2000+10*i, 2005+10*i)
	}
	v := drill.CheckHistory(h.ops, time.Second)
	if v.Counts[drill.ViolationStale] != 50 || len(v.Examples) != 5 {
		t.Fatalf("%d stale reads counted, %d quoted; want 50 and 5", v.Counts[drill.ViolationStale], len(v.Examples))
	}
	if v.Examples[0].Ops[1].ID != 2 {
		t.Errorf("first quoted read #%d, want #2", v.Examples[0].Ops[1].ID)
	}
	if p := v.Problems(); len(p) != 1 || !strings.Contains(p[0], "50 stale-read") {
		t.Errorf("problems %q", p)
	}
}

// TestReportDrawsViolations checks that a run whose history broke a rule
// fails, and that its text and HTML reports show the operations of the
// violation, the HTML as a timeline of them.
func TestReportDrawsViolations(t *testing.T) {
	h := newHist().
		write("S1", "post drill x h#1", "drill x h#1", 0, 10, drill.Acknowledged).
		read("S2", "post drill x h#1", "", 2000, 2010)
	v := drill.CheckHistory(h.ops, time.Second)
	run := drill.Run{RunID: "x", Drill: drill.DrillFailover, Cluster: "main", Started: h.t0, BucketMS: 100,
		History: &v, Problems: v.Problems(), Errors: map[string]int{}}
	r := drill.NewReport(drill.DrillFailover, "main", []drill.Run{run})
	if r.OK {
		t.Fatal("a run with a stale read passed")
	}
	var text, page strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"stale-read 1", "#1 S1 write post drill x h#1", "#2 S2 read post drill x h#1 saw 0 values"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	for _, want := range []string{"stale-read on post drill x h#1", "#1 S1 write acknowledged", "#2 S2 read acknowledged", "saw nothing"} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
}
