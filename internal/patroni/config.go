// Package patroni builds the pieces of a PostgreSQL cluster run by Patroni
// agents over etcd (one member, or three on hosts of their own): each node's configuration, the check that the
// configuration cannot acknowledge a write lost in a failover, the etcd and
// agent processes, and a client of Patroni's REST API. It does not decide
// failovers itself; Patroni does.
package patroni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// Timing is Patroni's leader-lease timing, in seconds.
type Timing struct {
	// TTL is the leader key's lease: a dead leader is noticed at most TTL
	// seconds after its last renewal.
	TTL int
	// LoopWait is the pause between two HA cycles of an agent.
	LoopWait int
	// RetryTimeout bounds a retried etcd or PostgreSQL operation; a leader
	// that cannot renew within it demotes itself.
	RetryTimeout int
	// CrashFailover hands the lead to the synchronous standby as soon as
	// the leader's agent finds its PostgreSQL crashed (Patroni's
	// primary_start_timeout 0) instead of recovering and restarting it in
	// place (primary_start_timeout 300, Patroni's default). Synchronous
	// mode strict makes both lose nothing acknowledged; see
	// docs/CLUSTER.md for what each costs.
	CrashFailover bool
}

// FastTiming fails over as fast as Patroni safely allows on one machine:
// TTL >= LoopWait + 2*RetryTimeout holds with one second to spare.
var FastTiming = Timing{TTL: 10, LoopWait: 1, RetryTimeout: 4}

// primaryStartTimeout is Patroni's primary_start_timeout for t.
func (t Timing) primaryStartTimeout() int {
	if t.CrashFailover {
		return 0
	}
	return defaultPrimaryStartTimeout
}

// defaultPrimaryStartTimeout is Patroni's default primary_start_timeout:
// how long a crashed leader may take to restart in place before its
// agent fails over.
const defaultPrimaryStartTimeout = 300

// DefaultTiming is Patroni's own default.
var DefaultTiming = Timing{TTL: 30, LoopWait: 10, RetryTimeout: 10}

// Credential is a PostgreSQL role and its password.
type Credential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// NodeSpec is one PostgreSQL node and its agent.
type NodeSpec struct {
	Name     string
	Port     int // PostgreSQL port on Host
	RESTPort int // Patroni REST API port on Host
	// Host is the address PostgreSQL and the REST API listen on; ""
	// means 127.0.0.1.
	Host   string
	Dir    string // the node's directory: data/, the socket, pgpass, patroni.yml
	NoSync bool   // never picked as synchronous standby
	// Log is the agent's log (its output and PostgreSQL's); "" means
	// patroni.log in Dir.
	Log string
}

// LogPath is where the agent's output goes.
func (n NodeSpec) LogPath() string {
	if n.Log != "" {
		return n.Log
	}
	return filepath.Join(n.Dir, "patroni.log")
}

// DataDir is the node's PostgreSQL data directory.
func (n NodeSpec) DataDir() string { return filepath.Join(n.Dir, "data") }

// ConfigPath is where the node's Patroni configuration is written.
func (n NodeSpec) ConfigPath() string { return filepath.Join(n.Dir, "patroni.yml") }

// Spec is a whole cluster.
type Spec struct {
	Cluster string   // Patroni scope
	BinDir  string   // PostgreSQL server programs
	Etcd    []string // etcd client endpoints, host:port
	// EtcdTLS, when set, makes the agents reach etcd over https with this
	// client certificate; nil means plain http.
	EtcdTLS     *TLSFiles
	Superuser   Credential
	Replication Credential
	Rewind      Credential
	// REST, when set, guards the agents' REST API: Patroni asks for it on
	// every request that changes something (switchover, reload, config).
	REST   *Credential
	Timing Timing // zero means FastTiming
	// Parameters are cluster-wide PostgreSQL settings (shared_buffers,
	// max_connections...) added to the defaults; CheckSafe checks them.
	Parameters map[string]string
	// ClientNet is the network (a CIDR) pg_hba admits scram logins and
	// replication from, the hosts' bridge network; "" means 127.0.0.1/32.
	ClientNet string
	Nodes     []NodeSpec
}

// Addr is the node's address: Host, or 127.0.0.1.
func (n NodeSpec) Addr() string {
	if n.Host != "" {
		return n.Host
	}
	return "127.0.0.1"
}

// Config is one node's Patroni configuration, the subset socnet uses.
// Encoded as JSON it is valid YAML for Patroni.
type Config struct {
	Scope      string     `json:"scope"`
	Name       string     `json:"name"`
	RESTAPI    RESTAPI    `json:"restapi"`
	Etcd3      Etcd3      `json:"etcd3"`
	Bootstrap  Bootstrap  `json:"bootstrap"`
	PostgreSQL PostgreSQL `json:"postgresql"`
	Tags       Tags       `json:"tags"`
}

// RESTAPI is the agent's HTTP endpoint.
type RESTAPI struct {
	Listen         string      `json:"listen"`
	ConnectAddress string      `json:"connect_address"`
	Authentication *Credential `json:"authentication,omitempty"`
}

// Etcd3 points the agent at etcd's v3 API, over https with a client
// certificate when Protocol is https.
type Etcd3 struct {
	Hosts    []string `json:"hosts"`
	Protocol string   `json:"protocol,omitempty"`
	CACert   string   `json:"cacert,omitempty"`
	Cert     string   `json:"cert,omitempty"`
	Key      string   `json:"key,omitempty"`
}

// Bootstrap is applied once, when the cluster is first initialised.
type Bootstrap struct {
	DCS    DCS   `json:"dcs"`
	InitDB []any `json:"initdb"`
}

// DCS is the cluster-wide dynamic configuration kept in etcd.
type DCS struct {
	TTL                   int           `json:"ttl"`
	LoopWait              int           `json:"loop_wait"`
	RetryTimeout          int           `json:"retry_timeout"`
	PrimaryStartTimeout   int           `json:"primary_start_timeout"`
	MaximumLagOnFailover  *int64        `json:"maximum_lag_on_failover,omitempty"`
	SynchronousMode       bool          `json:"synchronous_mode"`
	SynchronousModeStrict bool          `json:"synchronous_mode_strict"`
	SynchronousNodeCount  int           `json:"synchronous_node_count,omitempty"`
	PostgreSQL            DCSPostgreSQL `json:"postgresql"`
}

// DCSPostgreSQL is the cluster-wide PostgreSQL part of DCS.
type DCSPostgreSQL struct {
	UsePgRewind bool              `json:"use_pg_rewind"`
	UseSlots    bool              `json:"use_slots"`
	Parameters  map[string]string `json:"parameters"`
}

// PostgreSQL is the node-local PostgreSQL part.
type PostgreSQL struct {
	Listen         string            `json:"listen"`
	ConnectAddress string            `json:"connect_address"`
	DataDir        string            `json:"data_dir"`
	BinDir         string            `json:"bin_dir"`
	PgPass         string            `json:"pgpass"`
	PgHBA          []string          `json:"pg_hba"`
	Authentication Authentication    `json:"authentication"`
	Parameters     map[string]string `json:"parameters"`
}

// Authentication holds the roles Patroni itself uses.
type Authentication struct {
	Superuser   Credential `json:"superuser"`
	Replication Credential `json:"replication"`
	Rewind      Credential `json:"rewind"`
}

// Tags are the node's Patroni tags.
type Tags struct {
	NoSync bool `json:"nosync"`
}

// Configs returns each node's configuration, in the order of spec.Nodes.
func Configs(spec Spec) ([]Config, error) {
	if spec.Cluster == "" || len(spec.Nodes) == 0 || len(spec.Etcd) == 0 {
		return nil, errors.New("patroni spec: cluster name, nodes and etcd endpoints are required")
	}
	t := spec.Timing
	if t == (Timing{}) {
		t = FastTiming
	}
	clientNet := spec.ClientNet
	if clientNet == "" {
		clientNet = "127.0.0.1/32"
	}
	etcd3 := Etcd3{Hosts: spec.Etcd}
	if t := spec.EtcdTLS; t != nil {
		etcd3.Protocol, etcd3.CACert, etcd3.Cert, etcd3.Key = "https", t.CA, t.Cert, t.Key
	}
	out := make([]Config, 0, len(spec.Nodes))
	for _, n := range spec.Nodes {
		if n.Name == "" || n.Port == 0 || n.RESTPort == 0 || n.Dir == "" {
			return nil, fmt.Errorf("patroni spec: node %q needs a name, a port, a REST port and a directory", n.Name)
		}
		rest := net.JoinHostPort(n.Addr(), strconv.Itoa(n.RESTPort))
		pg := net.JoinHostPort(n.Addr(), strconv.Itoa(n.Port))
		params := map[string]string{
			"wal_log_hints":      "on",
			"synchronous_commit": "on",
			"max_connections":    "50",
			"shared_buffers":     "16MB",
			"wal_keep_size":      "64MB",
			// A standby whose upstream vanished retries after this long;
			// the default 5 s would add up to 5 s to every failover.
			"wal_retrieve_retry_interval": "500ms",
			"hot_standby_feedback":        "on",
		}
		for k, v := range spec.Parameters {
			params[k] = v
		}
		out = append(out, Config{
			Scope:   spec.Cluster,
			Name:    n.Name,
			RESTAPI: RESTAPI{Listen: rest, ConnectAddress: rest, Authentication: spec.REST},
			Etcd3:   etcd3,
			Bootstrap: Bootstrap{
				DCS: DCS{
					TTL: t.TTL, LoopWait: t.LoopWait, RetryTimeout: t.RetryTimeout,
					PrimaryStartTimeout: t.primaryStartTimeout(),
					SynchronousMode:     true, SynchronousModeStrict: true,
					PostgreSQL: DCSPostgreSQL{
						UsePgRewind: true, UseSlots: true,
						Parameters: params,
					},
				},
				InitDB: []any{"data-checksums", map[string]string{"auth-host": "scram-sha-256"}, map[string]string{"auth-local": "peer"}},
			},
			PostgreSQL: PostgreSQL{
				Listen:         pg,
				ConnectAddress: pg,
				DataDir:        n.DataDir(),
				BinDir:         spec.BinDir,
				PgPass:         filepath.Join(n.Dir, "pgpass"),
				PgHBA: []string{
					"local all all peer",
					"host replication " + spec.Replication.Username + " " + clientNet + " scram-sha-256",
					"host all all " + clientNet + " scram-sha-256",
				},
				Authentication: Authentication{Superuser: spec.Superuser, Replication: spec.Replication, Rewind: spec.Rewind},
				Parameters: map[string]string{
					"unix_socket_directories": n.Dir,
					"password_encryption":     "scram-sha-256",
				},
			},
			Tags: Tags{NoSync: n.NoSync},
		})
	}
	return out, nil
}

// WriteConfig writes cfg to path, readable by its owner only, since it holds
// passwords.
func WriteConfig(path string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode patroni config %s: %w", cfg.Name, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write patroni config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write patroni config: %w", err)
	}
	return nil
}
