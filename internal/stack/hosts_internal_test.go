package stack

import (
	"net"
	"strings"
	"testing"

	"socnet/internal/netns"
)

// TestServicesOnHosts checks where the services go: on the machine's own
// network one API on --http, as before; on hosts each service on its
// host's address, the API as api-1 and api-2 on --http's port, both
// behind HAProxy, and every record naming its host and netns.
func TestServicesOnHosts(t *testing.T) {
	h := Home{Dir: t.TempDir()}
	c := Config{Home: h, HTTP: "127.0.0.1:18080", CounterHTTP: "127.0.0.1:20001", RelayHTTP: "127.0.0.1:20002"}
	p := Ports{Counter: "127.0.0.1:20001", Relay: "127.0.0.1:20002", Redis: "127.0.0.1:20003",
		RedisHealth: "127.0.0.1:20004", Feed: "127.0.0.1:20005"}

	local := stackServices(h, c, Info{}, placePorts(p, nil), nil)
	var names []string
	for _, s := range local {
		names = append(names, s.Name)
		r := s.record()
		if r.Host != "" || r.Netns != "" || !strings.HasPrefix(s.Addr, "127.0.0.1:") {
			t.Errorf("local %s: %+v, want it on 127.0.0.1 with no host or netns", s.Name, r)
		}
	}
	if got := strings.Join(names, " "); got != "counter relay api redis feed-worker" {
		t.Errorf("local services %q", got)
	}
	if b := apiBackends(local); len(b) != 1 || b[0].Addr != c.HTTP {
		t.Errorf("local API instances %+v, want one on %s", b, c.HTTP)
	}

	engineHosts := []string{"main-1", "main-2", "main-3", "counter-1", "counter-2"}
	n, err := netns.Plan(h.Dir, append(engineHosts, serviceHosts()...))
	if err != nil {
		t.Fatal(err)
	}
	hosts := &Hosts{net: n}
	c.CounterHTTP = onHost(c.CounterHTTP, hosts, HostCounter)
	c.RelayHTTP = onHost(c.RelayHTTP, hosts, HostRelay)
	placed := stackServices(h, c, Info{}, placePorts(p, hosts), hosts)
	seen := map[string]string{}
	names = nil
	for _, s := range placed {
		names = append(names, s.Name)
		r := s.record()
		host, _, err := net.SplitHostPort(s.Addr)
		if err != nil || r.Host != host || r.Host == "127.0.0.1" || r.Netns != n.Netns(s.Host) {
			t.Errorf("%s: addr %s, record %+v: want it on its host's address, in %s", s.Name, s.Addr, r, n.Netns(s.Host))
		}
		if other, dup := seen[r.Host]; dup {
			t.Errorf("%s and %s share host %s", s.Name, other, r.Host)
		}
		seen[r.Host] = s.Name
	}
	if got := strings.Join(names, " "); got != "counter relay api-1 api-2 redis feed-worker" {
		t.Errorf("services on hosts %q", got)
	}
	b := apiBackends(placed)
	if len(b) != APIInstances {
		t.Fatalf("API instances behind HAProxy: %+v, want %d", b, APIInstances)
	}
	for i, be := range b {
		want := net.JoinHostPort(hosts.Addr(apiHost(i+1)), "18080")
		if be.Name != apiHost(i+1) || be.Addr != want {
			t.Errorf("backend %d: %+v, want %s on %s", i, be, apiHost(i+1), want)
		}
	}
	// The API instances call counterd on its host.
	for _, s := range placed {
		if s.Balanced && !strings.Contains(strings.Join(s.Args, " "), "http://"+c.CounterHTTP) {
			t.Errorf("%s: args %v, want counterd at %s", s.Name, s.Args, c.CounterHTTP)
		}
	}
}
