package drill

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// SchemaVersion names the JSON format of a Report; it changes only when a
// field changes meaning or goes away.
const SchemaVersion = "socnet-drill/1"

// The drills.
const (
	DrillFailover  = "failover"
	DrillReplica   = "replica"
	DrillFill      = "fill"
	DrillPartition = "partition"
)

// Run is the result of one execution of a drill.
type Run struct {
	RunID   string `json:"run_id"`
	Drill   string `json:"drill"`
	Cluster string `json:"cluster"`
	// VerifiedOn names the cluster that holds the writes when it is not
	// Cluster (dialog messages in main while counter is broken).
	VerifiedOn string `json:"verified_on,omitempty"`
	Writes     string `json:"writes"`
	Writers    int    `json:"writers"`
	// Started is when the writes began, Stopped when the writers stopped,
	// Ended when the verification finished.
	Started time.Time `json:"started"`
	Stopped time.Time `json:"stopped"`
	Ended   time.Time `json:"ended"`
	// Engine runs the cluster, as the status says ("socnet", "patroni").
	Engine string `json:"engine,omitempty"`
	// Fault is what the failover drill did to the primary: "postmaster"
	// or "host".
	Fault string `json:"fault,omitempty"`
	// OldPrimary was killed; NewPrimary accepted writes after it (failover
	// and fill): another node, or OldPrimary itself when RestartedInPlace.
	OldPrimary string `json:"old_primary,omitempty"`
	NewPrimary string `json:"new_primary,omitempty"`
	// RestartedInPlace is set when the engine restarted the killed primary
	// as the primary instead of promoting another node (Patroni's agent
	// does after a postmaster fault); RejoinMS is null then.
	RestartedInPlace bool    `json:"restarted_in_place,omitempty"`
	Events           []Event `json:"events"`
	// UnavailableMS is from the kill to the first acknowledged write that
	// started after it; null when writes never came back.
	UnavailableMS *float64 `json:"unavailable_ms"`
	// PromotionMS is from the kill to the new primary accepting writes
	// (the old one, restarted in place); PromotionFrom says where the time
	// comes from: PromotionHistory or PromotionPolled.
	PromotionMS   *float64 `json:"promotion_ms"`
	PromotionFrom string   `json:"promotion_from,omitempty"`
	// RejoinMS is from the kill to the old primary streaming as a replica.
	RejoinMS *float64 `json:"rejoin_ms"`
	// LongestStallMS is the longest time without an acknowledgement while
	// writing.
	LongestStallMS float64 `json:"longest_stall_ms"`
	// Errors counts unacknowledged attempts by error class.
	Errors map[string]int `json:"errors"`
	// HeldBack is the failover drill's hold of the asynchronous replica;
	// null when it was not held back.
	HeldBack *HeldBack `json:"held_back,omitempty"`
	// CutHost is the host the partition drill cut off.
	CutHost string `json:"cut_host,omitempty"`
	// Partition judges the roles every node reported during the partition
	// drill, and the writes acknowledged after a promotion.
	Partition *PartitionVerdict `json:"partition,omitempty"`
	// Phases are the steps of the replica drill.
	Phases []Phase `json:"phases,omitempty"`
	// Verdict judges the tagged writes (failover, replica).
	Verdict *Verdict `json:"verdict,omitempty"`
	// Fill judges a bulk load (fill).
	Fill *FillVerdict `json:"fill,omitempty"`
	// Counters judges the unread counters of dialog writes (failover on
	// the counter cluster).
	Counters *CounterVerdict `json:"counters,omitempty"`
	// History judges the history of the session workload (failover and
	// replica drills through the API).
	History *HistoryVerdict `json:"history,omitempty"`
	// HistoryOps is the whole history the verdict judged, for a caller that
	// examines it; reports carry the verdict's examples only.
	HistoryOps []Op `json:"-"`
	// BucketMS is the width of the timeline's buckets.
	BucketMS int      `json:"bucket_ms"`
	Timeline []Bucket `json:"timeline"`
	// Problems lists everything that failed the run: the verdict's
	// problems and the supervisor's repairs that did not happen in time.
	Problems []string `json:"problems"`
}

// Sources of Run.PromotionMS.
const (
	// PromotionHistory: the cluster's failover history (the socnet
	// engine's record of when the new primary accepted writes).
	PromotionHistory = "history"
	// PromotionPolled: the drill's own poll of every node, every 50 ms,
	// for the first that answers as a primary.
	PromotionPolled = "polled"
)

// OK reports whether the run passed.
func (r Run) OK() bool { return len(r.Problems) == 0 }

// Lost returns how many acknowledged writes (rows, for a fill) some node
// lacks.
func (r Run) Lost() int64 {
	switch {
	case r.Verdict != nil:
		return int64(r.Verdict.Lost)
	case r.Fill != nil:
		return r.Fill.Lost
	}
	return 0
}

// CounterDrift returns how many dialogs the counter service counted wrong:
// the larger of the drifting dialogs the run's own comparison found and
// those the reconciliation found (which compares the run's dialogs too).
func (r Run) CounterDrift() int {
	if r.Counters == nil {
		return 0
	}
	n := r.Counters.Drift
	if rc := r.Counters.Reconcile; rc != nil {
		n = max(n, rc.Drift)
	}
	return n
}

// Phase is one step of the replica drill: which replicas were killed and
// what the writers felt until they were back.
type Phase struct {
	Name   string    `json:"name"`
	Killed []string  `json:"killed"`
	At     time.Time `json:"at"`
	// BackMS is from the kill to the last killed replica streaming again;
	// null when one did not come back in time.
	BackMS *float64 `json:"back_ms"`
	// LongestStallMS is the longest time without an acknowledgement from the
	// kill to a moment after the replicas were back.
	LongestStallMS float64 `json:"longest_stall_ms"`
	// Acknowledged counts writes acknowledged in that window.
	Acknowledged int `json:"acknowledged"`
	// AllDownErrors counts, by error class, the attempts that started while
	// every killed replica was down and were not acknowledged.
	AllDownErrors map[string]int `json:"all_down_errors"`
	// Skipped says why the phase did not run (a cluster with one replica
	// has no asynchronous one).
	Skipped string `json:"skipped,omitempty"`
}

// Report is what `socnet drill` writes: the runs of one invocation and,
// for repeated runs, the distribution of their figures.
type Report struct {
	Schema  string `json:"schema"`
	Drill   string `json:"drill"`
	Cluster string `json:"cluster"`
	// Engine and Fault are the runs' when they all share one.
	Engine string `json:"engine,omitempty"`
	Fault  string `json:"fault,omitempty"`
	Runs   []Run  `json:"runs"`
	// Unavailability, Promotion and Rejoin summarize UnavailableMS,
	// PromotionMS and RejoinMS over the runs that measured them.
	Unavailability Distribution `json:"unavailability"`
	Promotion      Distribution `json:"promotion"`
	Rejoin         Distribution `json:"rejoin"`
	// TotalLost sums Lost over the runs; must be 0.
	TotalLost int64 `json:"total_lost"`
	// TotalCounterDrift sums CounterDrift over the runs; must be 0.
	TotalCounterDrift int  `json:"total_counter_drift"`
	OK                bool `json:"ok"`
}

// NewReport summarizes runs of one drill.
func NewReport(drill, cluster string, runs []Run) Report {
	r := Report{Schema: SchemaVersion, Drill: drill, Cluster: cluster, Runs: runs, OK: len(runs) > 0}
	if len(runs) > 0 {
		r.Engine, r.Fault = runs[0].Engine, runs[0].Fault
	}
	var unav, promotion, rejoin []time.Duration
	for _, run := range runs {
		if run.Engine != r.Engine {
			r.Engine = ""
		}
		if run.Fault != r.Fault {
			r.Fault = ""
		}
		if run.UnavailableMS != nil {
			unav = append(unav, msDuration(*run.UnavailableMS))
		}
		if run.PromotionMS != nil {
			promotion = append(promotion, msDuration(*run.PromotionMS))
		}
		if run.RejoinMS != nil {
			rejoin = append(rejoin, msDuration(*run.RejoinMS))
		}
		r.TotalLost += run.Lost()
		r.TotalCounterDrift += run.CounterDrift()
		r.OK = r.OK && run.OK()
	}
	r.Unavailability = Distribute(unav)
	r.Promotion = Distribute(promotion)
	r.Rejoin = Distribute(rejoin)
	return r
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func msPtr(d time.Duration) *float64 {
	v := millis(d)
	return &v
}

// WriteJSON writes r as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write drill report: %w", err)
	}
	return nil
}

// WriteFile writes the report to path with write: Report.WriteJSON or
// Report.WriteHTML.
func (r Report) WriteFile(path string, write func(Report, io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := write(r, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	return nil
}

// WriteText writes the human summary that `socnet drill` prints.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for i, run := range r.Runs {
		if len(r.Runs) > 1 {
			fmt.Fprintf(&b, "--- run %d of %d ---\n", i+1, len(r.Runs))
		}
		writeRunText(&b, run)
	}
	if len(r.Runs) > 1 {
		fmt.Fprintf(&b, "--- %d runs ---\n", len(r.Runs))
		if d := r.Unavailability; d.Count > 0 {
			fmt.Fprintf(&b, "write unavailability: min %s, median %s, p90 %s, max %s (%d runs)\n",
				formatMillis(d.Min), formatMillis(d.Median), formatMillis(d.P90), formatMillis(d.Max), d.Count)
		}
		if d := r.Promotion; d.Count > 0 {
			fmt.Fprintf(&b, "promotion: min %s, median %s, p90 %s, max %s (%d runs)\n",
				formatMillis(d.Min), formatMillis(d.Median), formatMillis(d.P90), formatMillis(d.Max), d.Count)
		}
		if d := r.Rejoin; d.Count > 0 {
			fmt.Fprintf(&b, "old primary back as replica: min %s, median %s, p90 %s, max %s (%d runs)\n",
				formatMillis(d.Min), formatMillis(d.Median), formatMillis(d.P90), formatMillis(d.Max), d.Count)
		}
		fmt.Fprintf(&b, "lost acknowledged writes, all runs: %d\n", r.TotalLost)
		if slices.ContainsFunc(r.Runs, func(run Run) bool { return run.Counters != nil }) {
			fmt.Fprintf(&b, "counter drift, all runs: %d\n", r.TotalCounterDrift)
		}
	}
	if r.OK {
		b.WriteString("verdict: PASS\n")
	} else {
		b.WriteString("verdict: FAIL\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeRunText(b *strings.Builder, run Run) {
	fmt.Fprintf(b, "drill %s on cluster %s, run %s\n", run.Drill, run.Cluster, run.RunID)
	if run.Engine != "" || run.Fault != "" {
		fmt.Fprintf(b, "engine: %s; fault: %s\n", orUnknown(run.Engine), orUnknown(run.Fault))
	}
	writers := fmt.Sprintf("%d writers", run.Writers)
	if run.Writers == 1 {
		writers = "one writer"
	}
	fmt.Fprintf(b, "writes: %s; %s for %s\n", run.Writes, writers, run.Stopped.Sub(run.Started).Round(time.Millisecond))
	if run.VerifiedOn != "" {
		fmt.Fprintf(b, "writes verified on cluster %s\n", run.VerifiedOn)
	}
	for _, e := range run.Events {
		detail := ""
		if e.Detail != "" {
			detail = " (" + e.Detail + ")"
		}
		fmt.Fprintf(b, "  %+8.3fs  %-9s %s%s\n", e.At.Sub(run.Started).Seconds(), e.Kind, e.Node, detail)
	}
	if v := run.Verdict; v != nil {
		fmt.Fprintf(b, "attempts: %d; acknowledged %d, failed %d, in doubt %d\n", v.Attempts, v.Acknowledged, v.Failed, v.Unknown)
		fmt.Fprintf(b, "lost (acknowledged, absent from a node): %d\n", v.Lost)
		if v.LostEverywhere != v.Lost {
			fmt.Fprintf(b, "  of which absent from every node read: %d\n", v.LostEverywhere)
		}
		fmt.Fprintf(b, "present but unacknowledged: %d\n", v.PresentUnacknowledged)
		fmt.Fprintf(b, "duplicates: %d\n", v.Duplicates)
		for _, n := range v.Nodes {
			if n.Err != "" {
				fmt.Fprintf(b, "  %-10s %-8s not verified: %s\n", n.Node, n.Role, n.Err)
				continue
			}
			fmt.Fprintf(b, "  %-10s %-8s rows %d, lost %d, unacknowledged present %d, duplicates %d, vs %s: -%d +%d\n",
				n.Node, n.Role, n.Rows, n.Lost, n.PresentUnacknowledged, n.Duplicates, v.Reference, n.Missing, n.Extra)
		}
	}
	if c := run.Counters; c != nil {
		writeCountersText(b, *c)
	}
	if f := run.Fill; f != nil {
		fmt.Fprintf(b, "load: %d rows asked, %d acknowledged in %d batches, expected %d rows per node\n",
			f.Target, f.AckedRows, f.Batches, f.Expected)
		fmt.Fprintf(b, "lost acknowledged rows: %d\n", f.Lost)
		for _, n := range f.Nodes {
			if n.Err != "" {
				fmt.Fprintf(b, "  %-10s %-8s not verified: %s\n", n.Node, n.Role, n.Err)
				continue
			}
			fmt.Fprintf(b, "  %-10s %-8s rows %d, distinct ids %d, acknowledged present %d\n",
				n.Node, n.Role, n.Rows, n.Distinct, n.AckedPresent)
		}
	}
	fault := "kill"
	if run.Drill == DrillPartition {
		fault = "cut"
	}
	if run.UnavailableMS != nil {
		fmt.Fprintf(b, "write unavailability (%s -> first acknowledged write after it): %s\n", fault, formatMillis(*run.UnavailableMS))
	}
	switch {
	case run.PromotionMS != nil && run.RestartedInPlace:
		fmt.Fprintf(b, "restarted in place (%s -> %s a primary again, %s): %s\n", fault, run.NewPrimary, run.PromotionFrom, formatMillis(*run.PromotionMS))
	case run.PromotionMS != nil:
		fmt.Fprintf(b, "promotion (%s -> new primary, %s): %s\n", fault, run.PromotionFrom, formatMillis(*run.PromotionMS))
	}
	if run.RejoinMS != nil {
		who := "old primary back as replica"
		if run.Drill == DrillPartition && run.CutHost != run.OldPrimary {
			who = run.CutHost + " streams again"
		}
		fmt.Fprintf(b, "%s (%s -> streaming): %s\n", who, fault, formatMillis(*run.RejoinMS))
	}
	if p := run.Partition; p != nil {
		fmt.Fprintf(b, "roles watched: %d answers (unanswered: %s); two primaries: %d; writes acknowledged after another node's promotion: %d of %d; longest without a primary: %s\n",
			p.Samples, formatCounts(p.Unreached), len(p.Overlaps), len(p.LateAcks), p.Acks, formatMillis(p.NoPrimaryMS))
	}
	if h := run.HeldBack; h != nil {
		fmt.Fprintf(b, "held back %s from the WAL before the kill: %d bytes behind, %d writes acknowledged meanwhile (a promotion of %s would lose them)\n",
			h.Node, h.GapBytes, h.AcknowledgedWhileHeld, h.Node)
	}
	if h := run.History; h != nil {
		writeHistoryText(b, *h, run.Started)
	}
	for _, p := range run.Phases {
		if p.Skipped != "" {
			fmt.Fprintf(b, "phase %-6s skipped: %s\n", p.Name, p.Skipped)
			continue
		}
		back := "did not come back"
		if p.BackMS != nil {
			back = "back after " + formatMillis(*p.BackMS)
		}
		fmt.Fprintf(b, "phase %-6s killed %s: %s; longest stall %s, %d acknowledged, errors while all were down: %s\n",
			p.Name, strings.Join(p.Killed, "+"), back, formatMillis(p.LongestStallMS), p.Acknowledged, formatCounts(p.AllDownErrors))
	}
	fmt.Fprintf(b, "longest stall between acknowledgements: %s\n", formatMillis(run.LongestStallMS))
	fmt.Fprintf(b, "errors by class: %s\n", formatCounts(run.Errors))
	for _, p := range run.Problems {
		fmt.Fprintf(b, "PROBLEM: %s\n", p)
	}
}

// writeHistoryText writes the check of a run's history, with the
// operations of each quoted violation, their times from start.
func writeHistoryText(b *strings.Builder, h HistoryVerdict, start time.Time) {
	verdict := "no violation"
	if !h.OK() {
		verdict = "violations: " + formatCounts(h.Counts)
	}
	fmt.Fprintf(b, "history: %d operations (%d writes, %d in doubt; %d reads), read staleness bound %s: %s\n",
		h.Ops, h.Writes, h.Unknown, h.Reads, formatMillis(h.BoundMS), verdict)
	for _, v := range h.Examples {
		fmt.Fprintf(b, "  %s: %s\n", v.Kind, v.Why)
		for _, op := range v.Ops {
			fmt.Fprintf(b, "    %s\n", describeOp(op, start))
		}
	}
}

// describeOp writes one operation of a history on one line.
func describeOp(op Op, start time.Time) string {
	what := op.Kind + " " + op.Key
	switch {
	case op.Kind == OpWrite:
		what += fmt.Sprintf(" %q", op.Value)
	case op.Outcome == Acknowledged:
		what += fmt.Sprintf(" saw %d values", len(op.Seen))
	}
	var tags []string
	if op.InSession {
		tags = append(tags, "in session")
	}
	if op.Final {
		tags = append(tags, "final")
	}
	if op.Node != "" {
		tags = append(tags, "served by "+op.Node)
	}
	if op.Error != "" {
		tags = append(tags, op.Error)
	}
	extra := ""
	if len(tags) > 0 {
		extra = " (" + strings.Join(tags, ", ") + ")"
	}
	return fmt.Sprintf("#%d %s %s [%s .. %s] %s%s", op.ID, op.Session, what,
		formatMillis(millis(op.Invoke.Sub(start))), formatMillis(millis(op.Complete.Sub(start))), op.Outcome, extra)
}

// writeCountersText writes the counter check of a run.
func writeCountersText(b *strings.Builder, c CounterVerdict) {
	fmt.Fprintf(b, "counters of recipient %s: %d dialogs checked, counter drift %d (%d messages)\n",
		c.Recipient, c.DialogsChecked, c.Drift, c.DriftMessages)
	drained, settled := "not drained", "never agreed"
	if c.DrainedMS != nil {
		drained = "drained " + formatMillis(*c.DrainedMS) + " after the stop"
	}
	if c.SettledMS != nil {
		settled = "agreed " + formatMillis(*c.SettledMS) + " after the stop"
	}
	fmt.Fprintf(b, "  outbox %s; counters %s; dead letters %d\n", drained, settled, c.DeadLetters)
	for _, d := range c.Dialogs {
		fmt.Fprintf(b, "  dialog from %s: counter %d, unread messages %d, counter drift %d\n", d.Sender, d.Counter, d.Unread, d.Drift)
	}
	if r := c.Reconcile; r != nil {
		if r.Error != "" {
			fmt.Fprintf(b, "reconciliation (check only): failed: %s\n", r.Error)
		} else {
			fmt.Fprintf(b, "reconciliation (check only): compared %d dialogs, drift %d (%d messages), unsettled %d\n",
				r.Compared, r.Drift, r.DriftMessages, r.Unsettled)
		}
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := sortedKeys(m)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// sortEvents orders events by time.
func sortEvents(es []Event) {
	slices.SortStableFunc(es, func(a, b Event) int { return a.At.Compare(b.At) })
}

// errExit is an error carrying the exit status of a drill that found a
// problem.
type errExit struct {
	msg  string
	code int
}

func (e *errExit) Error() string { return e.msg }

// ExitCode returns the process exit status the error asks for.
func (e *errExit) ExitCode() int { return e.code }

// ExitCodeFailed is the exit status of a drill whose verdict is FAIL.
const ExitCodeFailed = 3

// VerdictError returns nil when the report passed, else an error whose
// ExitCode is ExitCodeFailed and whose message sums up the failure.
func VerdictError(r Report) error {
	if r.OK {
		return nil
	}
	msg := fmt.Sprintf("drill %s failed", r.Drill)
	if r.TotalLost > 0 {
		msg += fmt.Sprintf(": %d acknowledged writes lost", r.TotalLost)
	}
	if r.TotalCounterDrift > 0 {
		msg += fmt.Sprintf(": %d dialogs with counter drift", r.TotalCounterDrift)
	}
	for _, run := range r.Runs {
		if len(run.Problems) > 0 {
			msg += ": " + run.Problems[0]
			break
		}
	}
	return &errExit{msg: msg, code: ExitCodeFailed}
}

// CompareError returns an error whose ExitCode is ExitCodeFailed, naming
// the engines and faults whose runs failed; nil when every run passed.
func CompareError(c Comparison) error {
	if c.OK {
		return nil
	}
	var failed []string
	for _, r := range c.Rows {
		if r.Passed < r.Runs {
			failed = append(failed, fmt.Sprintf("%s/%s %d of %d runs failed", r.Engine, r.Fault, r.Runs-r.Passed, r.Runs))
		}
	}
	return &errExit{msg: "drill compare: " + strings.Join(failed, ", "), code: ExitCodeFailed}
}

var _ interface{ ExitCode() int } = (*errExit)(nil)
