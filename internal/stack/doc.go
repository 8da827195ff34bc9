// Package stack is the local stack that `socnet up` runs: what happens on
// `up` (Up, in up.go), the engine seam the clusters plug into (Engine,
// Operator; the socnet engine in socnet_engine.go), the child services and
// their supervision, the control socket that serves any engine to
// `socnet cluster` and `socnet status` (ServeControl, Client, Offline), and
// the home directory: its layout (Home), the rules that decide whether its
// state can be trusted (CheckHome), the one way to replace a state file
// (WriteFile), the passfile that keeps passwords out of DSNs
// (PassfileDSNs), stack.json (Info) and the document of
// `socnet status --json` (Status, ReadStatus).
//
// It must not know any engine but its own default: other engines (Patroni)
// live in their own packages, import this one and are chosen by the
// command, so that adding one touches neither this package nor the
// services.
package stack
