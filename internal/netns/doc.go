// Package netns simulates several network hosts on one machine with Linux
// network namespaces: one namespace per host, each joined by a veth pair to a
// bridge that also has an address in the machine's own namespace. Names and
// the private /24 derive from a home directory, so that two homes never
// collide and a later run can remove what a SIGKILLed one left behind.
//
// A partition is a link set down (the kernel may have no netem). Namespaces
// get only their subnet's connected route: no traffic leaves the bridge and
// loopback. It needs root and the `ip` program from iproute2; it knows nothing
// of what runs on the hosts.
package netns
