// Package haproxy runs HAProxy (the Debian package haproxy) as a child
// process in front of several API instances: it renders a configuration
// from the frontend address and the backends' addresses, checks it, starts
// HAProxy in the foreground, waits until it answers, reads the servers'
// health from its stats socket and stops it gracefully.
//
// HAProxy balances round-robin and checks every server with
// `GET /healthz` (inter 500ms fall 2 rise 1); a server marked down has its
// sessions shut at once, so that clients fail fast instead of waiting for a
// timeout, and a connection that fails is retried on another server. The
// only statistics are on a Unix socket (mode 0600) in the proxy's
// directory: nothing but the frontend listens on the network.
//
// It knows nothing of namespaces: the caller gives addresses that the
// machine's own namespace reaches (in `--hosts netns`, the hosts' addresses
// on the bridge).
package haproxy
