// Package social is the domain of socnet: users, friendships, posts and
// dialogs, the one error type every layer speaks, and the store interfaces
// that adapters (internal/postgres) implement and handlers (internal/httpapi)
// consume.
//
// It holds types, validation and interfaces only: no SQL, no HTTP, no I/O.
package social
