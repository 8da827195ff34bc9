// Package postgres holds all SQL of the social domain: the schema as embedded
// migrations, the application role, and stores that implement the interfaces
// of internal/social over a *dbroute.DB.
//
// Every query chooses its node where it is written: writes run in
// db.Transact on the primary; reads that must see the caller's own latest
// write (a password hash right after registration, a dialog right after a
// send) use db.ReadPrimary; other reads use db.ReadReplica. Errors leave this
// package as *social.Error where the caller can act on them (see mapError).
//
// It must not know HTTP, sessions or how nodes are chosen.
package postgres
