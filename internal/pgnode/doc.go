// Package pgnode runs one PostgreSQL instance as a child process of socnet:
// initdb, start (postgres -D, reaped by a Wait goroutine, ready when
// postmaster.pid names the child and SELECT 1 answers), stop, kill, promote,
// base backup, rewind and re-pointing a standby. When socnet runs as root the
// PostgreSQL programs run as the postgres OS user.
//
// It knows one node; topologies and failover belong to internal/cluster.
package pgnode
