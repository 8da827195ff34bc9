package drill

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"
)

// The kinds of Op.
const (
	OpWrite = "write"
	OpRead  = "read"
)

// Op is one operation of a history, as the client saw it: when it was
// invoked and when it completed, and what came of it. A write stores one
// value under a key; a read returns the values it saw under a key.
type Op struct {
	ID int `json:"id"`
	// Session is the drill user who performed the operation.
	Session string `json:"session"`
	Kind    string `json:"kind"`
	// Key names the object: "dialog S1" (the messages from session S1 to
	// the recipient), "post drill … #7" (one post).
	Key string `json:"key"`
	// Value is what a write stored (its tag).
	Value string `json:"value,omitempty"`
	// Seen is what a read that succeeded returned: the values under Key.
	Seen []string `json:"seen,omitempty"`
	// InSession marks a read that the API serves in the session of its
	// user, so that it promises read-your-writes (dbroute.WithSession).
	InSession bool `json:"in_session,omitempty"`
	// Final marks a read made after the run, once every replica has
	// replayed: it must see every acknowledged write of its key.
	Final bool `json:"final,omitempty"`
	// Node is the node that served a read, "" when the API does not say.
	Node     string    `json:"node,omitempty"`
	Invoke   time.Time `json:"invoke"`
	Complete time.Time `json:"complete"`
	// Outcome is ok (Acknowledged), fail (Failed: nothing happened) or
	// unknown (a write that may or may not have been applied; a read
	// whose answer was lost).
	Outcome Outcome `json:"outcome"`
	// Error classes a failure ("503", "timeout").
	Error string `json:"error,omitempty"`
}

// History records the operations of a run. It is safe for concurrent use.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Add records a completed operation and returns its id.
func (h *History) Add(op Op) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = len(h.ops) + 1
	h.ops = append(h.ops, op)
	return op.ID
}

// Ops returns a copy of the operations in the order they were invoked.
func (h *History) Ops() []Op {
	h.mu.Lock()
	out := slices.Clone(h.ops)
	h.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Op) int { return a.Invoke.Compare(b.Invoke) })
	return out
}

// The kinds of Violation.
const (
	// ViolationLost: a final read lacks an acknowledged write.
	ViolationLost = "lost"
	// ViolationStale: a read invoked more than the lag bound after a write
	// was acknowledged lacks it: it was served by a node older than the
	// bound.
	ViolationStale = "stale-read"
	// ViolationRYW: a read in a session lacks a write the same session had
	// acknowledged before the read was invoked.
	ViolationRYW = "read-your-writes"
	// ViolationPhantom: a read saw a value no write stored, or a value
	// whose write the client saw refused.
	ViolationPhantom = "phantom"
)

// Violation is one breach of a history's rules with the smallest piece of
// history that shows it: the write and the read.
type Violation struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Ops are the operations that show it, write first (a phantom read has
	// its read only, or the refused write and the read).
	Ops []Op `json:"ops"`
	// Why says it in a sentence.
	Why string `json:"why"`
}

// HistoryVerdict is the check of a history.
type HistoryVerdict struct {
	// BoundMS is the staleness a read may show: the lag bound.
	BoundMS float64 `json:"bound_ms"`
	Ops     int     `json:"ops"`
	Writes  int     `json:"writes"`
	Reads   int     `json:"reads"`
	// Unknown counts writes whose outcome the client does not know: they
	// may or may not be seen.
	Unknown int `json:"unknown"`
	// Counts counts violations by kind; Examples quotes up to
	// maxExamples of each kind, the earliest first.
	Counts   map[string]int `json:"counts"`
	Examples []Violation    `json:"examples"`
}

// OK reports whether the history broke no rule.
func (v HistoryVerdict) OK() bool { return len(v.Examples) == 0 }

// Problems returns one sentence per kind of violation.
func (v HistoryVerdict) Problems() []string {
	var out []string
	for _, k := range sortedKeys(v.Counts) {
		first := ""
		for _, e := range v.Examples {
			if e.Kind == k {
				first = e.Why
				break
			}
		}
		out = append(out, fmt.Sprintf("history: %d %s violations, e.g. %s", v.Counts[k], k, first))
	}
	return out
}

// CheckHistory checks a history against what socnet promises, with bound
// the staleness a replica read may show (the API's --max-replica-lag plus
// its health interval). Only reads that succeeded say anything; for each,
// and each write of its key:
//
//   - lost: a Final read lacks a write that was acknowledged;
//   - stale read: a read invoked more than bound after a write was
//     acknowledged lacks it;
//   - read-your-writes: a read in a session (InSession) lacks a write the
//     same session had acknowledged before the read was invoked;
//   - phantom: a read shows a value no write of the key stored, or one
//     whose write was refused (Failed).
//
// A write whose outcome is unknown may or may not be seen, by any read,
// as Jepsen treats :info: it is never required and never a phantom. A
// read that lacks several writes counts once per write and is quoted with
// the earliest one.
func CheckHistory(ops []Op, bound time.Duration) HistoryVerdict {
	v := HistoryVerdict{BoundMS: millis(bound), Ops: len(ops), Counts: map[string]int{}, Examples: []Violation{}}
	writes := map[string][]Op{} // by key, acknowledged first by completion
	stored := map[string]map[string]Outcome{}
	for _, op := range ops {
		if op.Kind != OpWrite {
			v.Reads++
			continue
		}
		v.Writes++
		if op.Outcome == Unknown {
			v.Unknown++
		}
		writes[op.Key] = append(writes[op.Key], op)
		if stored[op.Key] == nil {
			stored[op.Key] = map[string]Outcome{}
		}
		stored[op.Key][op.Value] = op.Outcome
	}
	for k := range writes {
		slices.SortStableFunc(writes[k], func(a, b Op) int { return a.Complete.Compare(b.Complete) })
	}
	var found []Violation
	for _, r := range ops {
		if r.Kind != OpRead || r.Outcome != Acknowledged {
			continue
		}
		seen := map[string]bool{}
		for _, s := range r.Seen {
			seen[s] = true
			if o, ok := stored[r.Key][s]; !ok || o == Failed {
				v.Counts[ViolationPhantom]++
				why := fmt.Sprintf("read #%d of %s saw %q, which no write stored", r.ID, r.Key, s)
				pv := Violation{Kind: ViolationPhantom, Key: r.Key, Ops: []Op{r}, Why: why}
				if ok {
					w := writes[r.Key][slices.IndexFunc(writes[r.Key], func(w Op) bool { return w.Value == s })]
					pv.Why = fmt.Sprintf("read #%d of %s saw %q, whose write #%d was refused", r.ID, r.Key, s, w.ID)
					pv.Ops = []Op{w, r}
				}
				found = append(found, pv)
			}
		}
		quoted := map[string]bool{}
		for _, w := range writes[r.Key] {
			if w.Outcome != Acknowledged || seen[w.Value] {
				continue
			}
			kind, why := missing(w, r, bound)
			if kind == "" {
				continue
			}
			v.Counts[kind]++
			if !quoted[kind] {
				quoted[kind] = true
				found = append(found, Violation{Kind: kind, Key: r.Key, Ops: []Op{w, r}, Why: why})
			}
		}
	}
	slices.SortStableFunc(found, func(a, b Violation) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), a.Ops[len(a.Ops)-1].Invoke.Compare(b.Ops[len(b.Ops)-1].Invoke))
	})
	per := map[string]int{}
	for _, f := range found {
		if per[f.Kind] < maxExamples {
			per[f.Kind]++
			v.Examples = append(v.Examples, f)
		}
	}
	return v
}

// missing says which rule, if any, read r breaks by lacking the
// acknowledged write w of its key.
func missing(w, r Op, bound time.Duration) (kind, why string) {
	after := r.Invoke.Sub(w.Complete)
	switch {
	case r.Final:
		return ViolationLost, fmt.Sprintf("write #%d (%q) was acknowledged, and the final read #%d of %s lacks it",
			w.ID, w.Value, r.ID, r.Key)
	case after > bound:
		return ViolationStale, fmt.Sprintf("read #%d of %s, invoked %s after write #%d (%q) was acknowledged, lacks it (bound %s)",
			r.ID, r.Key, formatMillis(millis(after)), w.ID, w.Value, formatMillis(millis(bound)))
	case r.InSession && r.Session == w.Session && after > 0:
		return ViolationRYW, fmt.Sprintf("session %s read %s (#%d) %s after its own write #%d (%q) was acknowledged, and lacks it",
			r.Session, r.Key, r.ID, formatMillis(millis(after)), w.ID, w.Value)
	}
	return "", ""
}
