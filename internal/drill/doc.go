// Package drill runs failure experiments against a replicated socnet stack
// and judges them itself: it writes through the API (or SQL) while killing
// PostgreSQL processes with real signals, keeps a client-side ledger of every
// write attempt and what the client saw, then reads back every row the run
// tagged from every node and reports what was lost, what appeared without
// an acknowledgement, what was duplicated and how long writes were
// unavailable. Writes that travel the unread counter's saga (DialogWriter)
// are followed by a CounterCheck: the counter service's counts must equal
// the unread messages once the outbox has drained, and a reconciliation
// must find no drift.
//
// The failover drill holds the asynchronous replica back from the WAL
// before the kill (HoldBack), so that a promotion of the wrong replica would
// lose writes and the verdict would see it. Next to the writers, the
// failover and replica drills run a few sessions through the API (Sessions)
// and record the history of their writes and reads; CheckHistory holds it to
// socnet's promises: no acknowledged write lost, no read staler than the lag
// bound, read-your-writes in a session.
//
// The ledger, the verdict and the history check (Ledger, Judge, JudgeFill,
// CheckHistory) are pure functions of what was observed. The experiments (RunFailover, RunReplica, RunFill)
// talk to the stack through two small interfaces: a Writer that performs one
// tagged write and finds tagged rows on a node, and a Cluster that lists
// nodes, kills them and waits for the supervisor to repair the topology.
// StackCluster implements Cluster over `socnet status --json`.
//
// A drill never repairs anything itself: promotion, restarts and rejoins are
// the supervisor's work, and a drill that waits for one in vain reports it.
// docs/DRILLS.md says what each drill proves and what it does not.
package drill
