package cluster

import (
	"time"
)

// PrimaryHealth is what the supervisor knows of the primary in one round:
// the input of JudgePrimary.
type PrimaryHealth struct {
	// Now is when the round probed, on the cluster's clock (Options.Now).
	Now time.Time
	// LastOK is when the primary last answered as a primary, on the same
	// clock (or when supervision started or the cluster last changed).
	LastOK time.Time
	// DeadAfter is how long a running primary may fail its probes.
	DeadAfter time.Duration
	// FailoverPending is true when state.json marks the primary to rejoin:
	// a failover began and has not finished.
	FailoverPending bool
	// Running is true while the primary's process runs.
	Running bool
	// Answered is true when this round's probe got an answer.
	Answered bool
	// InRecovery is the probe's pg_is_in_recovery().
	InRecovery bool
	// ProbeErr is the failed probe's error text, without secrets; "" when
	// it answered.
	ProbeErr string
}

// PrimaryState is JudgePrimary's verdict.
type PrimaryState string

// The verdicts of JudgePrimary.
const (
	// PrimaryAlive: it answered as a primary; LastOK moves to Now.
	PrimaryAlive PrimaryState = "alive"
	// PrimarySuspect: it did not answer as a primary, for less than
	// DeadAfter; the supervisor looks again next round.
	PrimarySuspect PrimaryState = "suspect"
	// PrimaryDead: fail over now.
	PrimaryDead PrimaryState = "dead"
)

// JudgePrimary decides whether the primary is dead, as a pure function of
// one round's observation and the injected clock, so that every rule can be
// tested in a table. With the cause when it is dead, the rules in order:
//
//  1. A pending failover (the primary is marked to rejoin) goes on: dead.
//  2. A primary whose process exited is dead at once.
//  3. A primary that answers as a primary is alive.
//  4. One that has not answered as a primary (no answer, or it answers as a
//     standby) since DeadAfter or longer before Now is dead; sooner, it is
//     suspect.
func JudgePrimary(h PrimaryHealth) (PrimaryState, string) {
	switch {
	case h.FailoverPending:
		return PrimaryDead, "a failover is pending"
	case !h.Running:
		return PrimaryDead, "its process exited"
	case h.Answered && !h.InRecovery:
		return PrimaryAlive, ""
	}
	silent := h.Now.Sub(h.LastOK)
	if silent < h.DeadAfter {
		return PrimarySuspect, ""
	}
	cause := "it did not answer as a primary for " + silent.Round(time.Millisecond).String()
	switch {
	case h.ProbeErr != "":
		cause += " (" + h.ProbeErr + ")"
	case h.Answered:
		cause += " (it runs as a standby)"
	}
	return PrimaryDead, cause
}
