package dbroute

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// NoReplica policies: what ReadReplica does when no replica is fit to serve.
const (
	// NoReplicaPrimary sends the read to the primary (the default).
	NoReplicaPrimary = "primary"
	// NoReplicaFail refuses the read with ErrNoReplica (EUNAVAILABLE), for
	// deployments where read load must never reach the primary.
	NoReplicaFail = "fail"
)

// Defaults applied by Open to zero fields of Config.
const (
	DefaultMaxReplicaLag  = time.Second
	DefaultWriteTimeout   = 5 * time.Second
	DefaultHealthInterval = 200 * time.Millisecond
	DefaultHealthTimeout  = time.Second
	DefaultSessionExtra   = 5 * time.Second // SessionTTL = MaxReplicaLag + this
	DefaultMaxSessions    = 100_000
)

// cancelDeadlineDelay is how long a query whose context ended may wait for
// the server to honour the cancel request before the connection is cut.
const cancelDeadlineDelay = 500 * time.Millisecond

// Config says where the nodes are and how to treat them. Every DSN may be a
// single-host DSN or a multi-host one (postgres://u:p@h1:5432,h2:5432/db or
// host=h1,h2 port=5432,5432); a multi-host DSN is split into one node per
// host. The primary is found by probing, never configured: Primary and
// Replicas are only more nodes.
type Config struct {
	// Name names the database in logs and metrics (label db), e.g. "main".
	Name string
	// Nodes are DSNs of all nodes of the database, in any role.
	Nodes []string
	// Primary is a DSN of the expected primary or a multi-host DSN of all
	// nodes. It is probed like any other node.
	Primary string
	// Replicas are DSNs of read replicas.
	Replicas []string
	// MaxConns bounds each node's pool; 0 lets pgxpool choose.
	MaxConns int32
	// WriteTimeout bounds a write transaction, including a commit that waits
	// for a synchronous standby; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxReplicaLag bounds staleness: a replica gets reads only while it is
	// known to have every write acknowledged longer ago than this; 0 means
	// DefaultMaxReplicaLag.
	MaxReplicaLag time.Duration
	// NoReplica is NoReplicaPrimary (default, "") or NoReplicaFail.
	NoReplica string
	// HealthInterval is how often each node is probed; 0 means
	// DefaultHealthInterval.
	HealthInterval time.Duration
	// HealthTimeout bounds one probe, connecting included; 0 means
	// DefaultHealthTimeout.
	HealthTimeout time.Duration
	// SessionTTL is how long a session's last write position is kept for
	// read-your-writes; 0 means MaxReplicaLag + DefaultSessionExtra.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions remembered; 0 means DefaultMaxSessions.
	MaxSessions int
	// Registry receives the metrics when set (a *prometheus.Registry).
	Registry prometheus.Registerer
}

// withDefaults returns cfg with zero fields set to defaults, or an error
// naming the first bad field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxReplicaLag == 0 {
		cfg.MaxReplicaLag = DefaultMaxReplicaLag
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = DefaultHealthTimeout
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = cfg.MaxReplicaLag + DefaultSessionExtra
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.NoReplica == "" {
		cfg.NoReplica = NoReplicaPrimary
	}
	switch {
	case cfg.NoReplica != NoReplicaPrimary && cfg.NoReplica != NoReplicaFail:
		return cfg, fmt.Errorf("config: NoReplica %q: want %q or %q", cfg.NoReplica, NoReplicaPrimary, NoReplicaFail)
	case cfg.WriteTimeout < 0, cfg.MaxReplicaLag < 0, cfg.HealthInterval < 0,
		cfg.HealthTimeout < 0, cfg.SessionTTL < 0, cfg.MaxSessions < 0, cfg.MaxConns < 0:
		return cfg, fmt.Errorf("config: durations and sizes must not be negative")
	case cfg.Primary == "" && len(cfg.Nodes) == 0 && len(cfg.Replicas) == 0:
		return cfg, fmt.Errorf("config: no nodes: set Nodes, Primary or Replicas")
	}
	return cfg, nil
}

// SplitDSN splits a DSN into one pool configuration per host, in the order
// the hosts are given. A single-host DSN yields one. target_session_attrs is
// dropped: dbroute decides where a query goes. The result carries the
// password: never log it, log Host and Port.
func SplitDSN(dsn string) ([]*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	cc := pc.ConnConfig
	// pgconn lists every host once per TLS attempt (sslmode=prefer gives
	// two); group them back per host:port.
	all := append([]*pgconn.FallbackConfig{{Host: cc.Host, Port: cc.Port, TLSConfig: cc.TLSConfig}}, cc.Fallbacks...)
	var order []string
	byAddr := map[string][]*pgconn.FallbackConfig{}
	for _, fb := range all {
		a := addr(fb.Host, fb.Port)
		if _, ok := byAddr[a]; !ok {
			order = append(order, a)
		}
		byAddr[a] = append(byAddr[a], fb)
	}
	out := make([]*pgxpool.Config, 0, len(order))
	for _, a := range order {
		fbs := byAddr[a]
		c := pc.Copy()
		c.ConnConfig.Host = fbs[0].Host
		c.ConnConfig.Port = fbs[0].Port
		c.ConnConfig.TLSConfig = fbs[0].TLSConfig
		c.ConnConfig.Fallbacks = fbs[1:]
		c.ConnConfig.ValidateConnect = nil
		out = append(out, c)
	}
	return out, nil
}

// nodeConfigs turns every DSN of cfg into per-node pool configurations,
// without duplicates (same host, port and database).
func nodeConfigs(cfg Config) ([]*pgxpool.Config, error) {
	var dsns []string
	dsns = append(dsns, cfg.Nodes...)
	if cfg.Primary != "" {
		dsns = append(dsns, cfg.Primary)
	}
	dsns = append(dsns, cfg.Replicas...)
	seen := map[string]bool{}
	var out []*pgxpool.Config
	for i, dsn := range dsns {
		pcs, err := SplitDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("node dsn %d: %w", i+1, err)
		}
		for _, pc := range pcs {
			key := nodeName(pc) + "/" + pc.ConnConfig.Database
			if seen[key] {
				continue
			}
			seen[key] = true
			if cfg.MaxConns > 0 {
				pc.MaxConns = cfg.MaxConns
			}
			// On a context's end, ask the server to cancel the statement
			// (a COMMIT waiting for a synchronous standby then returns and
			// releases its locks) and cut the connection only if the server
			// does not answer soon.
			pc.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
				return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelDeadlineDelay}
			}
			out = append(out, pc)
		}
	}
	return out, nil
}

// nodeName is how a node appears in logs, metrics and Snapshot: host:port.
func nodeName(pc *pgxpool.Config) string {
	return addr(pc.ConnConfig.Host, pc.ConnConfig.Port)
}

func addr(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// dsnStart matches what a DSN begins with: a URL scheme or a keyword=value;
// urlStart only the URL scheme.
var (
	dsnStart = regexp.MustCompile(`^\s*(postgres(ql)?://|[A-Za-z_]+\s*=)`)
	urlStart = regexp.MustCompile(`^\s*postgres(ql)?://`)
)

// SplitDSNList splits a list of DSNs as given to --db: separated by commas
// (DSN[,DSN...]) or, for URL DSNs, by white space. A separator splits only
// where the next DSN begins (postgres://, postgresql:// or, after a comma,
// keyword=), so that multi-host DSNs (postgres://u@h1:5432,h2:5432/db,
// host=h1,h2) and keyword DSNs (host=h port=5432) stay whole. Blank entries
// are dropped.
func SplitDSNList(list string) []string {
	var out []string
	start := 0
	for i := 0; i < len(list); i++ {
		rest := list[i+1:]
		switch {
		case list[i] == ',' && dsnStart.MatchString(rest):
		case (list[i] == ' ' || list[i] == '\t' || list[i] == '\n') && urlStart.MatchString(rest):
		default:
			continue
		}
		out = appendDSN(out, list[start:i])
		start = i + 1
	}
	return appendDSN(out, list[start:])
}

func appendDSN(out []string, dsn string) []string {
	if dsn = strings.Trim(dsn, " ,\t\n"); dsn != "" {
		out = append(out, dsn)
	}
	return out
}
