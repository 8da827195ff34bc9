// Package auth keeps the secrets of socnet's users: it hashes passwords with
// bcrypt, issues and verifies the bearer tokens of the API, and keeps the
// token signing key in a private file.
//
// It must not know HTTP or SQL: handlers and stores call it with plain values.
package auth
