package drill

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults of the role watch.
const (
	DefaultWatchInterval = 100 * time.Millisecond
	DefaultWatchTimeout  = 300 * time.Millisecond
)

// Sample is one answer of a node to the role watch, or its absence.
type Sample struct {
	Node string `json:"node"`
	// Start is when the question was sent, End when the answer (or the
	// error) came: the node was in the role it gave at some moment between.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Reached is false when the node did not answer; the rest is then
	// meaningless.
	Reached bool `json:"reached"`
	// Primary is NOT pg_is_in_recovery(): the node accepts writes.
	Primary bool `json:"primary"`
	// Postmaster is pg_postmaster_start_time(): it names the server
	// process, which once out of recovery stays a primary until it stops.
	Postmaster time.Time `json:"postmaster"`
	Err        string    `json:"error,omitempty"`
}

// Watch asks every node of a cluster, over and over, whether it is a
// primary, and keeps every answer: the timeline the partition drill judges.
// A node is asked `SELECT NOT pg_is_in_recovery(), pg_postmaster_start_time()`
// over its own connection, with a short timeout, so that a node cut off
// costs its own samples only.
type Watch struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	all    []Sample
}

// StartWatch starts asking each node every interval (default 100 ms), each
// question bounded by timeout (default 300 ms), until Stop.
func StartWatch(ctx context.Context, nodes []Node, interval, timeout time.Duration) *Watch {
	setDefault(&interval, DefaultWatchInterval)
	setDefault(&timeout, DefaultWatchTimeout)
	ctx, cancel := context.WithCancel(ctx)
	w := &Watch{cancel: cancel}
	for _, n := range nodes {
		w.wg.Go(func() { w.watch(ctx, n, interval, timeout) })
	}
	return w
}

func (w *Watch) watch(ctx context.Context, n Node, interval, timeout time.Duration) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s := Sample{Node: n.Name, Start: time.Now()}
		qctx, cancel := context.WithTimeout(ctx, timeout)
		var err error
		if conn == nil {
			conn, err = pgx.Connect(qctx, n.DSN)
		}
		if err == nil {
			err = conn.QueryRow(qctx, "SELECT NOT pg_is_in_recovery(), pg_postmaster_start_time()").Scan(&s.Primary, &s.Postmaster)
		}
		cancel()
		s.End = time.Now()
		if ctx.Err() != nil {
			return // the question was cut short by Stop, not by the node
		}
		if err != nil {
			s.Err = sqlErrorClass(err)
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
		} else {
			s.Reached = true
		}
		w.mu.Lock()
		w.all = append(w.all, s)
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Samples returns the answers so far.
func (w *Watch) Samples() []Sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.all)
}

// Stop ends the watch and returns every answer.
func (w *Watch) Stop() []Sample {
	w.cancel()
	w.wg.Wait()
	return w.Samples()
}

// NodeAck is a write the drill's writer saw acknowledged, and the node that
// acknowledged it.
type NodeAck struct {
	Node  string    `json:"node"`
	Tag   string    `json:"tag,omitempty"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Tenure is an unbroken stretch during which one server process of a node
// answered as the primary.
type Tenure struct {
	Node       string    `json:"node"`
	Postmaster time.Time `json:"postmaster"`
	// From and To bound the stretch the node was certainly the primary:
	// from the end of its first primary answer to the start of its last.
	// From after To means a single answer: the node was the primary at one
	// moment of [To, From], which proves no stretch.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Promoted is set when the same server process had answered as a
	// replica before: the tenure began with a promotion, at the latest
	// at From.
	Promoted bool `json:"promoted"`
}

// Overlap is a stretch during which two nodes were both certainly the
// primary.
type Overlap struct {
	Nodes []string  `json:"nodes"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	MS    float64   `json:"ms"`
}

// LateAck is a write acknowledged by a node that started after another
// node had been promoted, and before the acknowledging node was promoted
// again.
type LateAck struct {
	NodeAck
	// Promoted is the node promoted before the write started, and when it
	// certainly was the primary.
	Promoted   string    `json:"promoted"`
	PromotedBy time.Time `json:"promoted_by"`
}

// PartitionVerdict judges the roles the watch saw and the acknowledgements
// the writers saw.
type PartitionVerdict struct {
	Samples int `json:"samples"`
	// Unreached counts samples without an answer, by node.
	Unreached map[string]int `json:"unreached"`
	Tenures   []Tenure       `json:"tenures"`
	// Overlaps are the moments with two writable primaries; must be empty.
	Overlaps []Overlap `json:"overlaps"`
	// Acks counts the acknowledged writes whose node was known: the ones
	// judged for late acknowledgements.
	Acks int `json:"acks"`
	// LateAcks are writes acknowledged by a node after another was
	// promoted; must be empty.
	LateAcks []LateAck `json:"late_acks"`
	// NoPrimaryMS is the longest time between two primary answers (of any
	// node) while the watch ran: the cluster's own unavailability, as its
	// nodes told it.
	NoPrimaryMS float64 `json:"no_primary_ms"`
	// Problems lists, one sentence each, what fails the verdict.
	Problems []string `json:"problems"`
}

// OK reports whether the verdict found neither two primaries nor a late
// acknowledgement.
func (v PartitionVerdict) OK() bool { return len(v.Problems) == 0 }

// Tenures finds every node's stretches as the primary in samples. A server
// process that has left recovery stays a primary until it stops, so answers
// of the same process (same postmaster start time) with no replica answer
// in between are one tenure, even across answers that did not come (a cut).
func Tenures(samples []Sample) []Tenure {
	byNode := map[string][]Sample{}
	for _, s := range samples {
		if s.Reached {
			byNode[s.Node] = append(byNode[s.Node], s)
		}
	}
	var out []Tenure
	for _, ss := range byNode {
		slices.SortFunc(ss, func(a, b Sample) int { return a.Start.Compare(b.Start) })
		var cur *Tenure
		var prev *Sample
		for i := range ss {
			s := &ss[i]
			switch {
			case !s.Primary:
				cur = nil
			case cur != nil && s.Postmaster.Equal(cur.Postmaster):
				cur.To = s.Start
			default:
				promoted := prev != nil && !prev.Primary && prev.Postmaster.Equal(s.Postmaster)
				out = append(out, Tenure{Node: s.Node, Postmaster: s.Postmaster, From: s.End, To: s.Start, Promoted: promoted})
				cur = &out[len(out)-1]
			}
			prev = s
		}
	}
	slices.SortFunc(out, func(a, b Tenure) int {
		return cmp.Or(a.From.Compare(b.From), cmp.Compare(a.Node, b.Node))
	})
	return out
}

// JudgePartition judges a drill's role timeline and its writers'
// acknowledgements:
//
//  1. Two primaries: two nodes' tenures that certainly overlap.
//  2. A late acknowledgement: a write that started after some node's
//     promotion was certain, acknowledged by another node that was not
//     promoted itself since.
//  3. The longest time without any primary answer.
//
// Roles are judged by pg_is_in_recovery(), not by test writes: a write
// with a short timeout on an isolated primary would wait for its
// synchronous standby and then, cancelled, commit locally anyway, so the
// probe would itself make the divergence it looks for. Whether a primary
// could acknowledge is what rule 2 judges, from the real writes.
func JudgePartition(samples []Sample, acks []NodeAck) PartitionVerdict {
	v := PartitionVerdict{Samples: len(samples), Acks: len(acks), Unreached: map[string]int{}, Overlaps: []Overlap{}, LateAcks: []LateAck{}, Problems: []string{}}
	for _, s := range samples {
		if !s.Reached {
			v.Unreached[s.Node]++
		}
	}
	v.Tenures = Tenures(samples)
	if v.Tenures == nil {
		v.Tenures = []Tenure{}
	}

	for i, a := range v.Tenures {
		for _, b := range v.Tenures[i+1:] {
			if a.Node == b.Node {
				continue
			}
			from, to := later(a.From, b.From), earlier(a.To, b.To)
			if !from.After(to) && !a.From.After(a.To) && !b.From.After(b.To) {
				v.Overlaps = append(v.Overlaps, Overlap{Nodes: []string{a.Node, b.Node}, From: from, To: to, MS: millis(to.Sub(from))})
			}
		}
	}
	for _, o := range v.Overlaps {
		v.Problems = append(v.Problems, fmt.Sprintf("two primaries, %s and %s, for %.0f ms from %s",
			o.Nodes[0], o.Nodes[1], o.MS, o.From.Format("15:04:05.000")))
	}

	var promotions []Tenure
	for _, t := range v.Tenures {
		if t.Promoted {
			promotions = append(promotions, t)
		}
	}
	for _, a := range acks {
		// The latest promotion certain before the write started.
		var last *Tenure
		for i := range promotions {
			if p := &promotions[i]; p.From.Before(a.Start) && (last == nil || p.From.After(last.From)) {
				last = p
			}
		}
		if last != nil && last.Node != a.Node {
			v.LateAcks = append(v.LateAcks, LateAck{NodeAck: a, Promoted: last.Node, PromotedBy: last.From})
		}
	}
	if n := len(v.LateAcks); n > 0 {
		l := v.LateAcks[0]
		v.Problems = append(v.Problems, fmt.Sprintf("%d writes acknowledged by a node after another was promoted; first: %s acknowledged a write started %.0f ms after %s was promoted",
			n, l.Node, millis(l.Start.Sub(l.PromotedBy)), l.Promoted))
	}

	v.NoPrimaryMS = millis(longestWithoutPrimary(samples))
	return v
}

// longestWithoutPrimary is the longest time from the end of one primary
// answer to the end of the next one, of any node, within the samples'
// span (the start and the end of the watch count as bounds).
func longestWithoutPrimary(samples []Sample) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	first, last := samples[0].Start, samples[0].End
	var ends []time.Time
	for _, s := range samples {
		first, last = earlier(first, s.Start), later(last, s.End)
		if s.Reached && s.Primary {
			ends = append(ends, s.End)
		}
	}
	slices.SortFunc(ends, time.Time.Compare)
	var longest time.Duration
	prev := first
	for _, e := range append(ends, last) {
		longest = max(longest, e.Sub(prev))
		prev = e
	}
	return longest
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
