package netns

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// maxHosts bounds the hosts of one net: .1 is the bridge, hosts take .2 upwards.
const maxHosts = 250

// lockPath serialises subnet choice between processes on the machine.
const lockPath = "/run/socnet-netns.lock"

var hostName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// Net is the namespace layout of one home: a bridge, and one namespace with a
// veth pair per host. Its subnet is settled by Up.
type Net struct {
	prefix string
	subnet netip.Prefix
	hosts  []string
}

// Plan derives the names and the preferred subnet of home's hosts. It creates
// nothing. Host names are lower-case letters, digits and dashes.
func Plan(home string, hosts []string) (*Net, error) {
	if len(hosts) == 0 || len(hosts) > maxHosts {
		return nil, fmt.Errorf("netns plan: %d hosts, want 1 to %d", len(hosts), maxHosts)
	}
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		if !hostName.MatchString(h) {
			return nil, fmt.Errorf("netns plan: host name %q: want [a-z0-9-], at most 31 characters", h)
		}
		if seen[h] {
			return nil, fmt.Errorf("netns plan: host %q twice", h)
		}
		seen[h] = true
	}
	prefix, third, err := derive(home)
	if err != nil {
		return nil, err
	}
	return &Net{
		prefix: prefix,
		subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, third, 0}), 24),
		hosts:  append([]string(nil), hosts...),
	}, nil
}

// derive returns the name prefix and the preferred third octet of home.
func derive(home string) (string, byte, error) {
	abs, err := filepath.Abs(home)
	if err != nil {
		return "", 0, fmt.Errorf("netns: home %q: %w", home, err)
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	// "sn" + 6 hex digits: the longest derived name, prefix+"p"+"249", fits
	// in Linux's 15-character interface names.
	return "sn" + hex.EncodeToString(sum[:3]), sum[3], nil
}

// Attach returns the net of home as it exists on the machine, for a
// process other than the one that brought it up (a drill that cuts hosts
// of a running stack): the hosts are the namespaces named after home, in
// the order of their veth pairs, and the subnet is the bridge's. It fails
// when no complete net of home is up.
func Attach(ctx context.Context, home string) (*Net, error) {
	if err := Check(ctx); err != nil {
		return nil, err
	}
	prefix, _, err := derive(home)
	if err != nil {
		return nil, err
	}
	n := &Net{prefix: prefix}
	p, ok, err := bridgeSubnet(ctx, n.Bridge())
	if err != nil || !ok {
		return nil, fmt.Errorf("netns attach %s: no bridge %s with an address (is the stack up with --hosts netns?)", home, n.Bridge())
	}
	n.subnet = p
	all, err := namespaces(ctx)
	if err != nil {
		return nil, err
	}
	byIndex := map[int]string{}
	for ns := range all {
		host, ok := strings.CutPrefix(ns, prefix+"-")
		if !ok {
			continue
		}
		out, err := ip(ctx, "-n", ns, "-o", "link", "show")
		if err != nil {
			return nil, fmt.Errorf("netns attach %s: %w", home, err)
		}
		i := -1
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if s, ok := strings.CutPrefix(name, prefix+"p"); ok {
				if v, err := strconv.Atoi(s); err == nil {
					i = v
				}
			}
		}
		if i < 0 {
			return nil, fmt.Errorf("netns attach %s: namespace %s has no veth end", home, ns)
		}
		if other, dup := byIndex[i]; dup {
			return nil, fmt.Errorf("netns attach %s: hosts %s and %s share veth pair %d", home, other, host, i)
		}
		byIndex[i] = host
	}
	if len(byIndex) == 0 {
		return nil, fmt.Errorf("netns attach %s: no namespace %s-*", home, prefix)
	}
	for i := range len(byIndex) {
		h, ok := byIndex[i]
		if !ok {
			return nil, fmt.Errorf("netns attach %s: incomplete net: no host with veth pair %d", home, i)
		}
		n.hosts = append(n.hosts, h)
	}
	return n, nil
}

// Prefix is the start of every namespace, bridge and veth name of this net.
func (n *Net) Prefix() string { return n.prefix }

// Bridge is the bridge's interface name in the machine's own namespace.
func (n *Net) Bridge() string { return n.prefix + "br" }

// Subnet is the net's /24: the preferred one until Up settles it.
func (n *Net) Subnet() netip.Prefix { return n.subnet }

// Hosts are the host names, in the order given to Plan.
func (n *Net) Hosts() []string { return append([]string(nil), n.hosts...) }

// BridgeAddr is the bridge's address, through which the machine itself
// reaches every host.
func (n *Net) BridgeAddr() netip.Addr { return n.addr(1) }

// Netns is the network namespace name of host.
func (n *Net) Netns(host string) string { return n.prefix + "-" + host }

// Addr is host's address on the bridge; false if host is not in the plan.
func (n *Net) Addr(host string) (netip.Addr, bool) {
	i := n.index(host)
	if i < 0 {
		return netip.Addr{}, false
	}
	return n.addr(byte(i + 2)), true
}

func (n *Net) addr(last byte) netip.Addr {
	a := n.subnet.Addr().As4()
	a[3] = last
	return netip.AddrFrom4(a)
}

func (n *Net) index(host string) int {
	for i, h := range n.hosts {
		if h == host {
			return i
		}
	}
	return -1
}

// vethRoot is the bridge end of host i's veth pair; vethPeer the end inside
// the host's namespace.
func (n *Net) vethRoot(i int) string { return n.prefix + "h" + strconv.Itoa(i) }
func (n *Net) vethPeer(i int) string { return n.prefix + "p" + strconv.Itoa(i) }

// Check returns a one-line error unless the process is root and `ip netns`
// works.
func Check(ctx context.Context) error {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("netns: network namespaces need root (running as uid %d)", euid)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("netns: network namespaces unavailable: no `ip` program (install iproute2)")
	}
	if _, err := ip(ctx, "netns", "list"); err != nil {
		return fmt.Errorf("netns: network namespaces unavailable: %w", err)
	}
	return nil
}

// Up creates the bridge, the namespaces, veth pairs, addresses and links.
// It is idempotent: what exists already is kept, so Up after an interrupted
// Up completes the net.
func (n *Net) Up(ctx context.Context) error {
	if err := Check(ctx); err != nil {
		return err
	}
	if err := n.bridgeUp(ctx); err != nil {
		return err
	}
	netnses, err := namespaces(ctx)
	if err != nil {
		return err
	}
	plen := strconv.Itoa(n.subnet.Bits())
	for i, h := range n.hosts {
		ns, root, peer := n.Netns(h), n.vethRoot(i), n.vethPeer(i)
		a, _ := n.Addr(h)
		if !netnses[ns] {
			if _, err := ip(ctx, "netns", "add", ns); err != nil {
				return fmt.Errorf("netns up %s: %w", h, err)
			}
		}
		if !linkExists(ctx, "", root) {
			// A half-made pair from an interrupted Up: remove the peer first.
			if linkExists(ctx, ns, peer) {
				if _, err := ip(ctx, "-n", ns, "link", "del", peer); err != nil {
					return fmt.Errorf("netns up %s: %w", h, err)
				}
			}
			if _, err := ip(ctx, "link", "add", root, "type", "veth", "peer", "name", peer, "netns", ns); err != nil {
				return fmt.Errorf("netns up %s: %w", h, err)
			}
		}
		steps := [][]string{
			{"link", "set", root, "master", n.Bridge()},
			{"link", "set", root, "up"},
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", ns, "link", "set", peer, "up"},
		}
		for _, s := range steps {
			if _, err := ip(ctx, s...); err != nil {
				return fmt.Errorf("netns up %s: %w", h, err)
			}
		}
		if err := addAddr(ctx, ns, peer, a.String()+"/"+plen); err != nil {
			return fmt.Errorf("netns up %s: %w", h, err)
		}
	}
	return nil
}

// bridgeUp creates the bridge if needed and settles the subnet: the bridge's
// existing address, else the preferred /24, else the next ones in turn that
// no interface or route of the machine uses.
func (n *Net) bridgeUp(ctx context.Context) error {
	unlock, err := lock()
	if err != nil {
		return err
	}
	defer unlock()
	br := n.Bridge()
	if !linkExists(ctx, "", br) {
		if _, err := ip(ctx, "link", "add", br, "type", "bridge"); err != nil {
			return fmt.Errorf("netns up bridge: %w", err)
		}
	}
	if p, ok, err := bridgeSubnet(ctx, br); err != nil {
		return err
	} else if ok {
		n.subnet = p
	} else {
		used, err := usedPrefixes(ctx)
		if err != nil {
			return err
		}
		p, err := pickSubnet(n.subnet, used)
		if err != nil {
			return err
		}
		n.subnet = p
		if err := addAddr(ctx, "", br, n.BridgeAddr().String()+"/24"); err != nil {
			return fmt.Errorf("netns up bridge: %w", err)
		}
	}
	if _, err := ip(ctx, "link", "set", br, "up"); err != nil {
		return fmt.Errorf("netns up bridge: %w", err)
	}
	return nil
}

// pickSubnet returns the first /24 of 10.213.0.0/16, starting at preferred,
// that overlaps nothing in used.
func pickSubnet(preferred netip.Prefix, used []netip.Prefix) (netip.Prefix, error) {
	a := preferred.Addr().As4()
	for i := 0; i < 256; i++ {
		c := netip.PrefixFrom(netip.AddrFrom4([4]byte{a[0], a[1], a[2] + byte(i), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(c) {
				free = false
				break
			}
		}
		if free {
			return c, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("netns: no free /24 in %d.%d.0.0/16", a[0], a[1])
}

// usedPrefixes lists every IPv4 prefix and address that the machine's own
// interfaces and routes (all tables) mention.
func usedPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	var used []netip.Prefix
	for _, args := range [][]string{{"-4", "-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := ip(ctx, args...)
		if err != nil {
			return nil, fmt.Errorf("netns: addresses in use: %w", err)
		}
		for _, f := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() {
				used = append(used, p.Masked())
			} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
				used = append(used, netip.PrefixFrom(a, 32))
			}
		}
	}
	return used, nil
}

// bridgeSubnet returns the /24 of br's address inside 10.213.0.0/16, if any.
func bridgeSubnet(ctx context.Context, br string) (netip.Prefix, bool, error) {
	out, err := ip(ctx, "-4", "-o", "addr", "show", "dev", br)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("netns: bridge address: %w", err)
	}
	for _, f := range strings.Fields(out) {
		p, err := netip.ParsePrefix(f)
		if err == nil && p.Bits() == 24 && p.Addr().Is4() {
			a := p.Addr().As4()
			if a[0] == 10 && a[1] == 213 && a[3] == 1 {
				return p.Masked(), true, nil
			}
		}
	}
	return netip.Prefix{}, false, nil
}

// Down removes the namespaces, veth pairs and bridge of this net.
func (n *Net) Down(ctx context.Context) error {
	return cleanup(ctx, n.prefix)
}

// Cleanup removes every namespace and interface whose name derives from home,
// such as those a SIGKILLed run left behind. It needs no plan: the names are
// found by their prefix.
func Cleanup(ctx context.Context, home string) error {
	prefix, _, err := derive(home)
	if err != nil {
		return err
	}
	return cleanup(ctx, prefix)
}

func cleanup(ctx context.Context, prefix string) error {
	if err := Check(ctx); err != nil {
		return err
	}
	netnses, err := namespaces(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for ns := range netnses {
		// Deleting a namespace deletes its veth ends and so their peers.
		if strings.HasPrefix(ns, prefix+"-") {
			if _, err := ip(ctx, "netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	links, err := Links(ctx, prefix)
	if err != nil {
		return err
	}
	for _, l := range links {
		if _, err := ip(ctx, "link", "del", l); err != nil && linkExists(ctx, "", l) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netns clean-up %s: %w", prefix, err)
	}
	return nil
}

// Namespaces lists the network namespaces whose names start with prefix.
func Namespaces(ctx context.Context, prefix string) ([]string, error) {
	all, err := namespaces(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for ns := range all {
		if strings.HasPrefix(ns, prefix) {
			out = append(out, ns)
		}
	}
	return out, nil
}

// Links lists the interfaces of the machine's own namespace whose names start
// with prefix.
func Links(ctx context.Context, prefix string) ([]string, error) {
	out, err := ip(ctx, "-o", "link", "show")
	if err != nil {
		return nil, fmt.Errorf("netns: links: %w", err)
	}
	var links []string
	for _, line := range strings.Split(out, "\n") {
		// "7: snab12cdh0@if2: <...>": the name is the second field.
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, prefix) {
			links = append(links, name)
		}
	}
	return links, nil
}

// Cut cuts host off the net: both ends of its veth pair go down.
func (n *Net) Cut(ctx context.Context, host string) error {
	return n.setLink(ctx, host, "down")
}

// Heal undoes Cut: both ends of host's veth pair come up.
func (n *Net) Heal(ctx context.Context, host string) error {
	return n.setLink(ctx, host, "up")
}

func (n *Net) setLink(ctx context.Context, host, state string) error {
	i := n.index(host)
	if i < 0 {
		return fmt.Errorf("netns: no host %q", host)
	}
	if _, err := ip(ctx, "link", "set", n.vethRoot(i), state); err != nil {
		return fmt.Errorf("netns: link %s of %s: %w", state, host, err)
	}
	if _, err := ip(ctx, "-n", n.Netns(host), "link", "set", n.vethPeer(i), state); err != nil {
		return fmt.Errorf("netns: link %s of %s: %w", state, host, err)
	}
	return nil
}

// Command returns a command that runs name inside host's namespace through
// `ip netns exec`; the process's children stay in that namespace.
func (n *Net) Command(ctx context.Context, host, name string, args ...string) *exec.Cmd {
	return Exec(ctx, n.Netns(host), name, args...)
}

// Exec returns a command that runs name inside the network namespace ns
// through `ip netns exec`. ip enters the namespace and executes name in its
// own place, so the Cmd's process is name itself (its pid, its signals) and
// its children stay in ns. It needs root: to run name as another user, put
// a program that drops privileges in between (setpriv).
func Exec(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func namespaces(ctx context.Context) (map[string]bool, error) {
	out, err := ip(ctx, "netns", "list")
	if err != nil {
		return nil, fmt.Errorf("netns: list: %w", err)
	}
	m := make(map[string]bool)
	for _, line := range strings.Split(out, "\n") {
		// "name (id: 3)" or "name".
		if f := strings.Fields(line); len(f) > 0 {
			m[f[0]] = true
		}
	}
	return m, nil
}

func linkExists(ctx context.Context, ns, name string) bool {
	args := []string{"link", "show", "dev", name}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	_, err := ip(ctx, args...)
	return err == nil
}

// addAddr adds cidr to dev (in ns, or the machine's own if ns is empty),
// accepting that it is there already.
func addAddr(ctx context.Context, ns, dev, cidr string) error {
	args := []string{"addr", "add", cidr, "dev", dev}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	_, err := ip(ctx, args...)
	if err != nil && (strings.Contains(err.Error(), "File exists") || strings.Contains(err.Error(), "already assigned")) {
		return nil
	}
	return err
}

func ip(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// lock takes the machine-wide lock on subnet choice.
func lock() (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netns: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("netns: lock: %w", err)
	}
	return func() { f.Close() }, nil
}
