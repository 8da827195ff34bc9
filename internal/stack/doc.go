// Package stack is the local stack's home directory: where `socnet up` keeps
// its state (Home), the rules that decide whether that state can be trusted
// (CheckHome), and the one way to replace a state file (WriteFile).
//
// It must not start anything: the clusters and services that live in a home
// are run by their own packages.
package stack
