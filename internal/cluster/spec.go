package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Spec describes a topology: a primary and Nodes-1 streaming replicas.
type Spec struct {
	// Name is the cluster's name ("main", "counter"); its nodes are named
	// Name-1 ... Name-N, and Name-1 is the first primary.
	Name string `json:"name"`
	// Nodes counts the nodes, the primary included: 2 to 9.
	Nodes int `json:"nodes"`
	// Settings are extra postgresql.conf settings of every node, such as
	// shared_buffers and max_connections. The replication settings are the
	// cluster's own (see ReplicationSettings) and cannot be set here.
	Settings map[string]string `json:"settings,omitempty"`
}

// MainSpec is the social network's database: a primary, a synchronous
// replica and an asynchronous one.
func MainSpec() Spec {
	return Spec{Name: "main", Nodes: 3, Settings: map[string]string{
		// A million users with their indexes take about 400 MB: most of
		// it stays in PostgreSQL's own cache on each of the three nodes.
		"shared_buffers":  "256MB",
		"max_connections": "100",
		// The API's queries are short; compiling them costs more than it saves.
		"jit": "off",
	}}
}

// CounterSpec is the counter service's database: a primary and a
// synchronous replica.
func CounterSpec() Spec {
	return Spec{Name: "counter", Nodes: 2, Settings: map[string]string{
		"shared_buffers":  "32MB",
		"max_connections": "100",
	}}
}

// managedSettings are set by the cluster and refused in Spec.Settings.
var managedSettings = map[string]bool{
	"wal_level": true, "max_wal_senders": true, "max_replication_slots": true, "wal_keep_size": true,
	"hot_standby": true, "hot_standby_feedback": true, "synchronous_commit": true,
	"synchronous_standby_names": true, "wal_retrieve_retry_interval": true,
	"primary_conninfo": true, "primary_slot_name": true, "port": true, "listen_addresses": true,
}

var clusterName = regexp.MustCompile(`^[a-z][a-z0-9]{0,30}$`)

// Validate reports what is wrong with the spec.
func (s Spec) Validate() error {
	if !clusterName.MatchString(s.Name) {
		return fmt.Errorf("cluster name %q: want lower-case letters and digits, starting with a letter", s.Name)
	}
	if s.Nodes < 2 || s.Nodes > 9 {
		return fmt.Errorf("cluster %s: %d nodes; want 2 to 9", s.Name, s.Nodes)
	}
	for k := range s.Settings {
		if managedSettings[strings.ToLower(k)] {
			return fmt.Errorf("cluster %s: setting %s is managed by the cluster", s.Name, k)
		}
	}
	return nil
}

// NodeNames returns the names of the spec's nodes in priority order.
func (s Spec) NodeNames() []string {
	names := make([]string, s.Nodes)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", s.Name, i+1)
	}
	return names
}

// AppName returns the application_name a node streams with, which is also
// the name of its replication slot: the node name with '-' replaced by '_'
// ("main-2" -> "main_2").
func AppName(node string) string { return strings.ReplaceAll(node, "-", "_") }

// ReplicationSettings returns the settings the cluster writes on every node
// at bootstrap (they matter on the primary; replicas carry them for the day
// they are promoted): WAL for replication, room for the walsenders and slots
// of every topology change, hot standby with feedback, and synchronous
// commit with the first listed connected standby as the synchronous one.
func ReplicationSettings(s Spec) map[string]string {
	names := s.NodeNames()
	return map[string]string{
		"wal_level":             "replica",
		"max_wal_senders":       "10",
		"max_replication_slots": "10",
		// Slots keep what each replica needs; this keeps a margin for a
		// replica whose slot was lost (a rejoin recreates it).
		"wal_keep_size":        "256MB",
		"hot_standby":          "on",
		"hot_standby_feedback": "on",
		"synchronous_commit":   "on",
		// A standby whose upstream vanished retries after this long; the
		// default 5 s would add up to 5 s to every failover.
		"wal_retrieve_retry_interval": "500ms",
		"synchronous_standby_names":   SyncNames("FIRST", names[1:]),
	}
}

// SyncNames renders a synchronous_standby_names value asking for one
// synchronous standby among nodes: method is FIRST (the first connected in
// list order) or ANY (any one of them).
func SyncNames(method string, nodes []string) string {
	apps := make([]string, len(nodes))
	for i, n := range nodes {
		apps[i] = AppName(n)
	}
	return fmt.Sprintf("%s 1 (%s)", method, strings.Join(apps, ", "))
}

// syncListed reports whether node is one of the standbys that the
// synchronous_standby_names value names lists (as SyncNames renders it, or
// as written by hand: quoted, in any case).
func syncListed(names, node string) bool {
	list := names
	if i := strings.IndexByte(list, '('); i >= 0 {
		list = strings.TrimSuffix(strings.TrimSpace(list[i+1:]), ")")
	}
	for _, a := range strings.Split(list, ",") {
		if strings.EqualFold(strings.Trim(strings.TrimSpace(a), `"`), AppName(node)) {
			return true
		}
	}
	return false
}

// Options tune a Cluster. The zero value is the production default.
type Options struct {
	// BinDir holds the PostgreSQL programs; "" finds them (pgnode.FindBinDir).
	BinDir string
	// LogDir receives one log file per node. "" means HOME/logs when the
	// cluster's directory is HOME/clusters/NAME, else DIR/logs.
	LogDir string
	// Output, when set, receives a copy of every node's output, each line
	// prefixed with the node name (tests pass a t.Logf writer).
	Output io.Writer
	// ProbeInterval is how often the supervisor asks every node SELECT-like
	// questions; default 150 ms.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe; default 400 ms.
	ProbeTimeout time.Duration
	// DeadAfter is how long a running primary may fail its probes before it
	// is declared dead, fenced and failed over; default 1 s. A primary
	// whose process exits is dead at once.
	DeadAfter time.Duration
	// DrainWait bounds the wait for the standbys' WAL receivers to flush
	// what they received before a promotion is decided; default 300 ms.
	DrainWait time.Duration
	// CatchUpTimeout is how long a running replica may go without streaming
	// from the primary before it is rewound (or rebuilt); default 30 s.
	CatchUpTimeout time.Duration
	// Now is the clock of the failover history; default time.Now.
	Now func() time.Time
	// NewID names failovers; default 8 random hex characters.
	NewID func() string
}

func (o Options) withDefaults(dir string) Options {
	if o.LogDir == "" {
		parent := filepath.Dir(dir)
		if filepath.Base(parent) == "clusters" {
			o.LogDir = filepath.Join(filepath.Dir(parent), "logs")
		} else {
			o.LogDir = filepath.Join(dir, "logs")
		}
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 150 * time.Millisecond
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 400 * time.Millisecond
	}
	if o.DeadAfter <= 0 {
		o.DeadAfter = time.Second
	}
	if o.DrainWait <= 0 {
		o.DrainWait = 300 * time.Millisecond
	}
	if o.CatchUpTimeout <= 0 {
		o.CatchUpTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewID == nil {
		o.NewID = func() string { return randomHex(4) }
	}
	return o
}

// randomHex returns 2n hex characters from crypto/rand.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

// Dir returns the directory of cluster name under a socnet home.
func Dir(home, name string) string { return filepath.Join(home, "clusters", name) }
