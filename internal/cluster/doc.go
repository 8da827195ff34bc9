// Package cluster runs a PostgreSQL topology for socnet: a primary with
// streaming replicas (main: a synchronous and an asynchronous one; counter:
// one synchronous replica), bootstrapped as the manual procedure did
// (replication settings, a replication role with a password, a slot and a
// base backup per replica), persisted under a directory so that it resumes
// in its current roles, and supervised: a dead primary is fenced and a
// replica that holds every acknowledged commit is promoted (Decide, a pure
// function), the others follow it and the old primary rejoins after a
// rewind. Operators switch over, promote, rejoin, stop and start through
// the methods of Cluster; internal/stack serves them on the control socket
// of a running `socnet up`.
//
// It knows topologies and roles; one node's process and files belong to
// internal/pgnode. It holds no domain logic and never reads social data.
package cluster
