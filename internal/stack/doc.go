// Package stack is the local stack's home directory: where `socnet up` keeps
// its state (Home), the rules that decide whether that state can be trusted
// (CheckHome), the one way to replace a state file (WriteFile), the
// passfile that keeps passwords out of DSNs (PassfileDSNs), and the document
// of `socnet status --json` (Status).
//
// It must not start anything: the clusters and services that live in a home
// are run by their own packages.
package stack
