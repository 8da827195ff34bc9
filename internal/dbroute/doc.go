// Package dbroute gives the SQL of socnet its connections: writes and
// transactions go to the primary, reads that may be a moment stale go to a
// healthy replica. The choice is made where each query is written, by calling
// Transact, ReadPrimary or ReadReplica; dbroute never guesses from SQL.
//
// A DB is given every node of one database (a list of DSNs or one multi-host
// DSN) and finds the primary itself: a background loop probes each node every
// HealthInterval for reachability, recovery state, timeline and WAL positions,
// measures each replica's lag, and re-elects the primary when it dies and a
// replica is promoted. Reads in a session (WithSession) never go to a replica
// that has not replayed the session's last write. docs/ROUTING.md describes
// the rules and the consistency model.
//
// It must not hold domain logic; it knows nodes, pools, health and WAL
// positions only. It never promotes, fences or reconfigures a node: that is
// internal/cluster's work.
package dbroute
