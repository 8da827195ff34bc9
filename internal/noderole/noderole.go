// Package noderole names what a PostgreSQL node of a cluster is, as the
// supervisor assigns it, the API's router observes it and `socnet status`
// reports it. It is the one definition the other packages refer to.
package noderole

// Roles of a node.
const (
	Primary = "primary" // accepts writes
	Replica = "replica" // streams from the primary, read-only
	Down    = "down"    // does not answer (observed roles only)
)
