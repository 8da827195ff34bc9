package drill_test

import (
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/counter"
	"socnet/internal/drill"
)

func TestJudgeCounters(t *testing.T) {
	senders := []string{"s1", "s2", "s3"}
	tests := []struct {
		name          string
		counters      map[string]int
		unread        map[string]int
		want          []drill.DialogCount
		drift, driftM int
	}{
		{
			name:     "exact",
			counters: map[string]int{"s1": 3, "s2": 5, "s3": 1},
			unread:   map[string]int{"s1": 3, "s2": 5, "s3": 1},
			want:     []drill.DialogCount{{Sender: "s1", Counter: 3, Unread: 3}, {Sender: "s2", Counter: 5, Unread: 5}, {Sender: "s3", Counter: 1, Unread: 1}},
		},
		{
			name:     "a sender without messages is 0 on both sides",
			counters: map[string]int{"s1": 2},
			unread:   map[string]int{"s1": 2},
			want:     []drill.DialogCount{{Sender: "s1", Counter: 2, Unread: 2}, {Sender: "s2"}, {Sender: "s3"}},
		},
		{
			name:     "a lost event counts too few, a doubled one too many",
			counters: map[string]int{"s1": 2, "s2": 6, "s3": 1},
			unread:   map[string]int{"s1": 3, "s2": 5, "s3": 1},
			want: []drill.DialogCount{{Sender: "s1", Counter: 2, Unread: 3, Drift: -1},
				{Sender: "s2", Counter: 6, Unread: 5, Drift: 1}, {Sender: "s3", Counter: 1, Unread: 1}},
			drift: 2, driftM: 2,
		},
		{
			name:     "the counter service does not know the dialog",
			counters: map[string]int{},
			unread:   map[string]int{"s2": 4},
			want:     []drill.DialogCount{{Sender: "s1"}, {Sender: "s2", Unread: 4, Drift: -4}, {Sender: "s3"}},
			drift:    1, driftM: 4,
		},
		{
			name:     "peers other than the senders are compared after them",
			counters: map[string]int{"zz": 1},
			unread:   map[string]int{"aa": 2},
			want: []drill.DialogCount{{Sender: "s1"}, {Sender: "s2"}, {Sender: "s3"},
				{Sender: "aa", Unread: 2, Drift: -2}, {Sender: "zz", Counter: 1, Drift: 1}},
			drift: 2, driftM: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, drift, driftM := drill.JudgeCounters(senders, tt.counters, tt.unread)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("dialogs (-want +got):\n%s", diff)
			}
			if drift != tt.drift || driftM != tt.driftM {
				t.Errorf("drift %d dialogs, %d messages; want %d, %d", drift, driftM, tt.drift, tt.driftM)
			}
		})
	}
}

// counterRun is a finished failover run on the counter cluster whose
// counters drifted in drift dialogs and reconciliation found reconcileDrift.
func counterRun(t0 time.Time, drift, reconcileDrift int) drill.Run {
	run := fakeRun(t0, 40, 6000, 0)
	run.Cluster, run.VerifiedOn = "counter", "main"
	ms := 120.0
	c := &drill.CounterVerdict{
		Recipient: "r1", DialogsChecked: 2, DrainedMS: &ms, SettledMS: &ms, Problems: []string{},
		Dialogs:   []drill.DialogCount{{Sender: "s1", Counter: 7, Unread: 7}, {Sender: "s2", Counter: 6, Unread: 6}},
		Reconcile: &drill.ReconcileCheck{Compared: 2, Drift: reconcileDrift, DriftMessages: reconcileDrift},
	}
	if drift > 0 {
		c.Drift, c.DriftMessages, c.SettledMS = drift, drift, nil
		c.Dialogs[1] = drill.DialogCount{Sender: "s2", Counter: 6 - drift, Unread: 6, Drift: -drift}
		c.Problems = append(c.Problems, "counter drift")
	}
	if reconcileDrift > 0 {
		c.Problems = append(c.Problems, "reconciliation found drift")
	}
	run.Counters = c
	run.Problems = append(run.Problems, c.Problems...)
	return run
}

func TestReportCounters(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		runs           []drill.Run
		ok             bool
		totalDrift     int
		text, notInErr []string
	}{
		{
			name:       "exact counters pass",
			runs:       []drill.Run{counterRun(t0, 0, 0), counterRun(t0, 0, 0)},
			ok:         true,
			totalDrift: 0,
			text: []string{
				"writes verified on cluster main",
				"counters of recipient r1: 2 dialogs checked, counter drift 0 (0 messages)",
				"outbox drained 120 ms after the stop; counters agreed 120 ms after the stop; dead letters 0",
				"dialog from s2: counter 6, unread messages 6, counter drift 0",
				"reconciliation (check only): compared 2 dialogs, drift 0 (0 messages), unsettled 0",
				"counter drift, all runs: 0",
				"verdict: PASS",
			},
		},
		{
			name:       "counter drift fails",
			runs:       []drill.Run{counterRun(t0, 0, 0), counterRun(t0, 1, 0)},
			totalDrift: 1,
			text: []string{
				"counter drift 1 (1 messages)",
				"counters never agreed",
				"dialog from s2: counter 5, unread messages 6, counter drift -1",
				"counter drift, all runs: 1",
				"verdict: FAIL",
			},
		},
		{
			name:       "reconciliation drift fails",
			runs:       []drill.Run{counterRun(t0, 0, 3)},
			totalDrift: 3,
			text:       []string{"reconciliation (check only): compared 2 dialogs, drift 3 (3 messages)", "verdict: FAIL"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := drill.NewReport(drill.DrillFailover, "counter", tt.runs)
			if r.OK != tt.ok || r.TotalCounterDrift != tt.totalDrift || r.TotalLost != 0 {
				t.Errorf("ok %v, counter drift %d, lost %d; want %v, %d, 0", r.OK, r.TotalCounterDrift, r.TotalLost, tt.ok, tt.totalDrift)
			}
			var text strings.Builder
			if err := r.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.text {
				if !strings.Contains(text.String(), s) {
					t.Errorf("text lacks %q:\n%s", s, text.String())
				}
			}
			err := drill.VerdictError(r)
			var coded interface{ ExitCode() int }
			switch {
			case tt.ok && err != nil:
				t.Errorf("VerdictError of a passing report: %v", err)
			case !tt.ok && (!errors.As(err, &coded) || coded.ExitCode() != drill.ExitCodeFailed):
				t.Errorf("VerdictError = %v, want exit code %d", err, drill.ExitCodeFailed)
			case !tt.ok && !strings.Contains(err.Error(), "counter drift"):
				t.Errorf("VerdictError %q does not name the counter drift", err)
			}

			var js strings.Builder
			if err := r.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var back struct {
				TotalCounterDrift int `json:"total_counter_drift"`
				Runs              []struct {
					VerifiedOn string                `json:"verified_on"`
					Counters   *drill.CounterVerdict `json:"counters"`
				} `json:"runs"`
			}
			if err := json.Unmarshal([]byte(js.String()), &back); err != nil {
				t.Fatal(err)
			}
			if back.TotalCounterDrift != tt.totalDrift || len(back.Runs) != len(tt.runs) {
				t.Fatalf("JSON: total_counter_drift %d, %d runs", back.TotalCounterDrift, len(back.Runs))
			}
			for i, run := range back.Runs {
				if diff := cmp.Diff(tt.runs[i].Counters, run.Counters); diff != "" || run.VerifiedOn != "main" {
					t.Errorf("run %d: verified_on %q, counters (-want +got):\n%s", i, run.VerifiedOn, diff)
				}
			}
		})
	}
}

func TestJudgeAcknowledged(t *testing.T) {
	ab, cb := drill.Direction{User: "b", Peer: "a"}, drill.Direction{User: "b", Peer: "c"}
	ev := func(id string, d drill.Direction, seq int64) counter.Event {
		return counter.Event{ID: id, Kind: counter.KindMessageSent, UserID: d.User, PeerID: d.Peer, Seq: seq, Unread: int(seq)}
	}
	acked := []counter.Event{ev("e1", ab, 1), ev("e2", ab, 2), ev("e3", ab, 3), ev("e1", ab, 1), ev("f1", cb, 1)}
	inbox := func(ids ...string) map[string]drill.InboxEvent {
		out := map[string]drill.InboxEvent{}
		for _, id := range ids {
			out[id] = drill.InboxEvent{}
		}
		return out
	}
	tests := []struct {
		name string
		in   drill.Inbox
		want []drill.LostEvent
	}{
		{
			name: "everything there",
			in:   drill.Inbox{Events: inbox("e1", "e2", "e3", "f1"), Counters: map[drill.Direction]drill.CounterState{ab: {Seq: 3}, cb: {Seq: 1}}},
			want: []drill.LostEvent{},
		},
		{
			name: "an event a later one overtook: the counter is right, the inbox is not",
			in:   drill.Inbox{Events: inbox("e1", "e3", "f1"), Counters: map[drill.Direction]drill.CounterState{ab: {Seq: 3}, cb: {Seq: 1}}},
			want: []drill.LostEvent{{ID: "e2", Kind: counter.KindMessageSent, Direction: ab, Seq: 2, Reason: "not in the inbox"}},
		},
		{
			name: "the last events lost with their effect",
			in:   drill.Inbox{Events: inbox("e1", "e2"), Counters: map[drill.Direction]drill.CounterState{ab: {Seq: 2}}},
			want: []drill.LostEvent{
				{ID: "e3", Kind: counter.KindMessageSent, Direction: ab, Seq: 3, Reason: "not in the inbox; the counter holds seq 2, older than the event"},
				{ID: "f1", Kind: counter.KindMessageSent, Direction: cb, Seq: 1, Reason: "not in the inbox; its direction has no counter"},
			},
		},
		{
			name: "in the inbox, but the counter went back",
			in:   drill.Inbox{Events: inbox("e1", "e2", "e3", "f1"), Counters: map[drill.Direction]drill.CounterState{ab: {Seq: 1}, cb: {Seq: 1}}},
			want: []drill.LostEvent{
				{ID: "e2", Kind: counter.KindMessageSent, Direction: ab, Seq: 2, Reason: "the counter holds seq 1, older than the event"},
				{ID: "e3", Kind: counter.KindMessageSent, Direction: ab, Seq: 3, Reason: "the counter holds seq 1, older than the event"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, drill.JudgeAcknowledged(acked, tt.in)); diff != "" {
				t.Errorf("lost (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJudgeStates(t *testing.T) {
	ab, cb := drill.Direction{User: "b", Peer: "a"}, drill.Direction{User: "b", Peer: "c"}
	states := func(d drill.Direction, seqs ...int64) map[string]drill.InboxEvent {
		out := map[string]drill.InboxEvent{}
		for _, s := range seqs {
			out[d.Peer+strconv.FormatInt(s, 10)] = drill.InboxEvent{Direction: d, Seq: s}
		}
		return out
	}
	merge := func(ms ...map[string]drill.InboxEvent) map[string]drill.InboxEvent {
		out := map[string]drill.InboxEvent{}
		for _, m := range ms {
			maps.Copy(out, m)
		}
		return out
	}
	recorded := map[drill.Direction]int64{ab: 4, cb: 2}
	full := map[drill.Direction]drill.CounterState{ab: {Seq: 4}, cb: {Seq: 2}}
	tests := []struct {
		name string
		dead map[drill.Direction][]int64
		in   drill.Inbox
		want []drill.LostEvent
	}{
		{
			name: "every state there",
			in:   drill.Inbox{Events: merge(states(ab, 1, 2, 3, 4), states(cb, 1, 2)), Counters: full},
			want: []drill.LostEvent{},
		},
		{
			name: "a state in the middle lost: the counter cannot show it",
			in:   drill.Inbox{Events: merge(states(ab, 1, 2, 4), states(cb, 1, 2)), Counters: full},
			want: []drill.LostEvent{{Direction: ab, Seq: 3, Reason: "not in the inbox"}},
		},
		{
			name: "the last state lost with its effect, and a whole dialog",
			in:   drill.Inbox{Events: states(ab, 1, 2, 3), Counters: map[drill.Direction]drill.CounterState{ab: {Seq: 3}}},
			want: []drill.LostEvent{
				{Direction: ab, Seq: 4, Reason: "not in the inbox"},
				{Direction: ab, Seq: 4, Reason: "the counter holds seq 3, older than the last acknowledged state"},
				{Direction: cb, Seq: 1, Reason: "not in the inbox"},
				{Direction: cb, Seq: 2, Reason: "not in the inbox"},
				{Direction: cb, Seq: 2, Reason: "the counter holds seq 0, older than the last acknowledged state"},
			},
		},
		{
			name: "dead letters are not expected",
			dead: map[drill.Direction][]int64{ab: {2, 4}},
			in:   drill.Inbox{Events: merge(states(ab, 1, 3), states(cb, 1, 2)), Counters: map[drill.Direction]drill.CounterState{ab: {Seq: 3}, cb: {Seq: 2}}},
			want: []drill.LostEvent{},
		},
		{
			name: "states of other directions do not count",
			in:   drill.Inbox{Events: merge(states(ab, 1, 2, 3, 4), states(drill.Direction{User: "x", Peer: "c"}, 1, 2)), Counters: full},
			want: []drill.LostEvent{{Direction: cb, Seq: 1, Reason: "not in the inbox"}, {Direction: cb, Seq: 2, Reason: "not in the inbox"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, drill.JudgeStates(recorded, tt.dead, tt.in)); diff != "" {
				t.Errorf("lost (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJudgeReads(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	ra := drill.Direction{User: "r", Peer: "a"}
	mark := func(start, end float64, before int) drill.ReadMark {
		return drill.ReadMark{Peer: "a", Outcome: drill.Acknowledged, Start: at(start), End: at(end), SentBefore: before}
	}
	read := func(d drill.Direction, ms float64, seq int64) drill.InboxEvent {
		return drill.InboxEvent{Direction: d, Kind: counter.KindDialogRead, Seq: seq, CommittedAt: at(ms)}
	}
	sent := func(ms float64, seq int64) drill.InboxEvent {
		return drill.InboxEvent{Direction: ra, Kind: counter.KindMessageSent, Seq: seq, CommittedAt: at(ms)}
	}
	m1, m2 := mark(10, 20, 2), mark(50, 60, 4)
	// Two messages, the first read mark, two more, the second read mark,
	// one more message: one unread of five.
	history := map[string]drill.InboxEvent{"s1": sent(1, 1), "s2": sent(2, 2), "r1": read(ra, 15, 3),
		"s3": sent(30, 4), "s4": sent(31, 5), "r2": read(ra, 55, 6), "s5": sent(70, 7)}
	without := func(ids ...string) map[string]drill.InboxEvent {
		out := maps.Clone(history)
		for _, id := range ids {
			delete(out, id)
		}
		return out
	}
	with := func(id string, e drill.InboxEvent) map[string]drill.InboxEvent {
		out := maps.Clone(history)
		out[id] = e
		return out
	}
	exact := map[drill.Direction]drill.CounterState{ra: {Seq: 7, Unread: 1}}
	noEvent := "no dialog_read event of its dialog committed while it was in flight is in the inbox"
	tests := []struct {
		name  string
		marks []drill.ReadMark
		in    drill.Inbox
		want  []drill.LostRead
	}{
		{
			name:  "every read mark has its event, the counter is past them",
			marks: []drill.ReadMark{m1, m2},
			in:    drill.Inbox{Events: history, Counters: exact},
			want:  []drill.LostRead{},
		},
		{
			name:  "a read mark's event lost, though later messages made the counter right",
			marks: []drill.ReadMark{m1, m2},
			in:    drill.Inbox{Events: without("r2"), Counters: exact},
			want:  []drill.LostRead{{ReadMark: m2, User: "r", Reason: noEvent}},
		},
		{
			name:  "two read marks in flight at once need two events",
			marks: []drill.ReadMark{m1, m2, mark(52, 65, 4)},
			in:    drill.Inbox{Events: history, Counters: exact},
			want:  []drill.LostRead{{ReadMark: mark(52, 65, 4), User: "r", Reason: noEvent}},
		},
		{
			name:  "an event just past the answer, within the clock slack, counts",
			marks: []drill.ReadMark{m1, m2},
			in:    drill.Inbox{Events: with("r1", read(ra, 20.5, 3)), Counters: exact},
			want:  []drill.LostRead{},
		},
		{
			name:  "an event beyond the clock slack does not",
			marks: []drill.ReadMark{m1, m2},
			in:    drill.Inbox{Events: with("r1", read(ra, 22, 3)), Counters: exact},
			want:  []drill.LostRead{{ReadMark: m1, User: "r", Reason: noEvent}},
		},
		{
			name:  "events of another dialog, of another kind or without a commit time do not count",
			marks: []drill.ReadMark{m1, m2},
			in: drill.Inbox{Events: func() map[string]drill.InboxEvent {
				out := without("r1", "r2")
				out["x"] = read(drill.Direction{User: "x", Peer: "a"}, 15, 1)
				out["s"] = sent(55, 6)
				out["z"] = drill.InboxEvent{Direction: ra, Kind: counter.KindDialogRead, Seq: 3}
				return out
			}(), Counters: exact},
			want: []drill.LostRead{{ReadMark: m1, User: "r", Reason: noEvent}, {ReadMark: m2, User: "r", Reason: noEvent}},
		},
		{
			name:  "the counter went back before the last read mark",
			marks: []drill.ReadMark{m1, m2},
			in:    drill.Inbox{Events: history, Counters: map[drill.Direction]drill.CounterState{ra: {Seq: 5, Unread: 1}}},
			want:  []drill.LostRead{{ReadMark: m2, User: "r", Seq: 6, Reason: "the counter holds seq 5, older than the read mark's state"}},
		},
		{
			name:  "the counter counts messages the last read mark read",
			marks: []drill.ReadMark{m1, m2},
			in:    drill.Inbox{Events: history, Counters: map[drill.Direction]drill.CounterState{ra: {Seq: 7, Unread: 3}}},
			want: []drill.LostRead{{ReadMark: m2, User: "r",
				Reason: "the counter holds 3 unread (seq 7), more than the 1 message(s) of the dialog not acknowledged before the read mark"}},
		},
		{
			name: "read marks not acknowledged are not judged",
			marks: []drill.ReadMark{m1, m2, {Peer: "a", Outcome: drill.Unknown, Start: at(80), End: at(90), SentBefore: 5},
				{Peer: "b", Outcome: drill.Failed, Start: at(80), End: at(90)}},
			in:   drill.Inbox{Events: history, Counters: exact},
			want: []drill.LostRead{},
		},
	}
	messages := map[string]int{"a": 5}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, drill.JudgeReads("r", tt.marks, messages, tt.in)); diff != "" {
				t.Errorf("lost (-want +got):\n%s", diff)
			}
		})
	}
}
