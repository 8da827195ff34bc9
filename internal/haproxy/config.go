package haproxy

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Backend is one server HAProxy balances across.
type Backend struct {
	Name string // e.g. "api-1": letters, digits, '-', '_' and '.'
	Addr string // host:port, reachable from HAProxy's namespace
}

// Config is what the generated configuration says.
type Config struct {
	// Bind is the frontend's address, host:port.
	Bind string
	// Backends are the servers, at least one.
	Backends []Backend
	// StatsSocket is the path of the admin socket (mode 0600, level user:
	// it reads state and changes nothing); "" means none.
	StatsSocket string
	// User, when not empty, is the OS user HAProxy drops to once it has
	// bound its sockets (Debian's package creates "haproxy").
	User string
	// HealthPath is the path of the health check; default /healthz.
	HealthPath string
	// CheckInterval is the time between two checks of a server; default
	// 500 ms. A server is marked down after two failed checks, up after one
	// passed check.
	CheckInterval time.Duration
	// ServerTimeout bounds the wait for a server's response; default 30 s.
	ServerTimeout time.Duration
}

var (
	backendName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	userName    = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	healthPath  = regexp.MustCompile(`^/[A-Za-z0-9/_.-]*$`)
)

func (c Config) withDefaults() Config {
	if c.HealthPath == "" {
		c.HealthPath = "/healthz"
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = 500 * time.Millisecond
	}
	if c.ServerTimeout <= 0 {
		c.ServerTimeout = 30 * time.Second
	}
	return c
}

// Validate reports what is wrong with the configuration. Nothing from it
// may break out of its line in the rendered file.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := checkAddr(c.Bind); err != nil {
		return fmt.Errorf("haproxy: bind: %w", err)
	}
	if len(c.Backends) == 0 {
		return errors.New("haproxy: no backends")
	}
	seen := make(map[string]bool)
	for _, b := range c.Backends {
		if !backendName.MatchString(b.Name) {
			return fmt.Errorf("haproxy: backend name %q: want letters, digits, '-', '_', '.'", b.Name)
		}
		if seen[b.Name] {
			return fmt.Errorf("haproxy: backend %q twice", b.Name)
		}
		seen[b.Name] = true
		if err := checkAddr(b.Addr); err != nil {
			return fmt.Errorf("haproxy: backend %s: %w", b.Name, err)
		}
	}
	if strings.ContainsAny(c.StatsSocket, " \t\n\r\"'#\\") {
		return fmt.Errorf("haproxy: stats socket path %q: no blanks, quotes or '#'", c.StatsSocket)
	}
	if c.User != "" && !userName.MatchString(c.User) {
		return fmt.Errorf("haproxy: user %q: not a user name", c.User)
	}
	if !healthPath.MatchString(c.HealthPath) {
		return fmt.Errorf("haproxy: health path %q: want /[A-Za-z0-9/_.-]*", c.HealthPath)
	}
	return nil
}

// checkAddr accepts host:port with a numeric IP (no name to resolve) and a
// port from 1 to 65535.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("%q: host must be an IP address", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: invalid port", addr)
	}
	return nil
}

// Render returns the configuration file for c.
func Render(c Config) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	c = c.withDefaults()
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by socnet at every start of HAProxy; edits are lost.")
	w("global")
	// -db keeps HAProxy in the foreground: its log is its stderr.
	w("    log stderr format raw local0 info")
	w("    maxconn 4096")
	// A soft stop (SIGUSR1) lets requests in flight finish, but not forever.
	w("    hard-stop-after 5s")
	if c.StatsSocket != "" {
		w("    stats socket %s mode 600 level user", c.StatsSocket)
	}
	if c.User != "" {
		w("    user %s", c.User)
		w("    group %s", c.User)
	}
	w("")
	w("defaults")
	w("    mode http")
	w("    log global")
	w("    option httplog")
	w("    option dontlognull")
	// Under load a line per request would cost more than it tells: only
	// errors, retries and slow or aborted requests are logged.
	w("    option dontlog-normal")
	// The servers see HAProxy's address as their peer: the client's goes
	// in X-Forwarded-For (appended to whatever the client sent), which a
	// server trusts only from HAProxy's address (serve --trusted-proxies),
	// so that limits per client address apply to clients, not to HAProxy.
	w("    option forwardfor")
	// The servers are on this machine: a connection that takes a second
	// goes to a host that is cut off, and is retried on another server.
	w("    timeout connect 1s")
	w("    timeout client 30s")
	w("    timeout server %s", ms(c.ServerTimeout))
	w("    timeout http-request 10s")
	w("    timeout http-keep-alive 10s")
	w("    timeout queue 5s")
	w("    timeout check %s", ms(c.CheckInterval))
	// Only failed connections are retried (the request was not sent), on
	// another server: a write is never sent twice.
	w("    retries 2")
	w("    option redispatch 1")
	w("")
	w("frontend api")
	w("    bind %s", c.Bind)
	w("    default_backend api")
	w("")
	w("backend api")
	w("    balance roundrobin")
	w("    option httpchk GET %s", c.HealthPath)
	w("    http-check expect status 200")
	// A server marked down loses its sessions at once: its clients get an
	// error now instead of a timeout later.
	w("    default-server inter %s fall 2 rise 1 on-marked-down shutdown-sessions", ms(c.CheckInterval))
	for _, s := range c.Backends {
		w("    server %s %s check", s.Name, s.Addr)
	}
	return b.String(), nil
}

// ms renders d in HAProxy's time format, in milliseconds.
func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }
