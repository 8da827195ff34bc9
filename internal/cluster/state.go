package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"socnet/internal/noderole"
)

// Roles a node is assigned in state.json (noderole's).
const (
	RolePrimary = noderole.Primary
	RoleReplica = noderole.Replica
	// RoleDown is reported by Status for a node that does not answer.
	RoleDown = noderole.Down
)

const (
	stateFile    = "state.json"
	secretsFile  = "secrets.json"
	stateVersion = 1
	// maxHistory bounds the failover history kept in state.json.
	maxHistory = 100
)

// nodeState is one node as persisted.
type nodeState struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	// DataDir is relative to the cluster's directory.
	DataDir string `json:"data_dir"`
	Role    string `json:"role"`
	// Timeline is the node's timeline when its role last changed.
	Timeline int `json:"timeline"`
	// Slot is the replication slot the node streams from on the primary.
	Slot string `json:"slot"`
	// Initialized is set once initdb or the base backup completed.
	Initialized bool `json:"initialized"`
	// NeedsRejoin marks a node that may have diverged from the primary (a
	// fenced old primary): it must be rewound before it runs again, and it
	// never runs as a primary.
	NeedsRejoin bool `json:"needs_rejoin,omitempty"`
}

// state is the content of state.json: everything needed to resume the
// topology as it was.
type state struct {
	Version      int         `json:"version"`
	Spec         Spec        `json:"spec"`
	Bootstrapped bool        `json:"bootstrapped"`
	Nodes        []nodeState `json:"nodes"`
	// SyncNames is the synchronous_standby_names last set on the primary.
	SyncNames string `json:"synchronous_standby_names"`
	// Promoting names a node whose promotion started and was not recorded
	// as finished; resuming checks whether it happened.
	Promoting string           `json:"promoting,omitempty"`
	Failovers []FailoverRecord `json:"failovers"`
}

// FailoverRecord is one change of primary in the history.
type FailoverRecord struct {
	// ID names the change in logs.
	ID string `json:"id"`
	// Kind is failover (by the supervisor), switchover (planned) or
	// promote (an operator's promotion).
	Kind string `json:"kind"`
	// At is when the primary was declared dead (or the change started).
	At         time.Time `json:"at"`
	OldPrimary string    `json:"old_primary"`
	NewPrimary string    `json:"new_primary"`
	// LSN is the new primary's WAL position when it was promoted.
	LSN LSN `json:"lsn"`
	// Timeline is the new primary's timeline.
	Timeline int `json:"timeline"`
	// DetectionMS is from the first sign of trouble to declaring the
	// primary dead (0 for planned changes).
	DetectionMS int64 `json:"detection_ms"`
	// PromotionMS is from the decision to the new primary accepting writes.
	PromotionMS int64 `json:"promotion_ms"`
	// TotalMS is from the first sign of trouble (or the start of a planned
	// change) to the other replicas following the new primary.
	TotalMS int64 `json:"total_ms"`
	// RejoinMS is how long the old primary took to rejoin as a replica; 0
	// while it has not.
	RejoinMS int64 `json:"rejoin_ms"`
	// MayLoseBytes is, for a forced promotion, how much WAL seen elsewhere
	// the new primary lacked.
	MayLoseBytes int64 `json:"may_lose_bytes,omitempty"`
	// Reason says why the primary changed and why this node was chosen.
	Reason string `json:"reason"`
}

// secrets is the content of secrets.json (mode 0600).
type secrets struct {
	Superuser          string `json:"superuser"`
	SuperuserPassword  string `json:"superuser_password"`
	ReplicatorPassword string `json:"replicator_password"`
}

// replicationUser is the role the replicas stream as.
const replicationUser = "replicator"

func newState(spec Spec) state {
	st := state{Version: stateVersion, Spec: spec}
	for i, name := range spec.NodeNames() {
		role := RoleReplica
		if i == 0 {
			role = RolePrimary
		}
		st.Nodes = append(st.Nodes, nodeState{Name: name, DataDir: name, Role: role, Timeline: 1, Slot: AppName(name)})
	}
	st.SyncNames = SyncNames("FIRST", spec.NodeNames()[1:])
	return st
}

// primary returns the node assigned the primary role.
func (st *state) primary() *nodeState {
	for i := range st.Nodes {
		if st.Nodes[i].Role == RolePrimary {
			return &st.Nodes[i]
		}
	}
	return nil
}

// node returns the named node, nil when there is none.
func (st *state) node(name string) *nodeState {
	for i := range st.Nodes {
		if st.Nodes[i].Name == name {
			return &st.Nodes[i]
		}
	}
	return nil
}

// others returns the names of the nodes other than name, in priority order.
func (st *state) others(name string) []string {
	var out []string
	for _, n := range st.Nodes {
		if n.Name != name {
			out = append(out, n.Name)
		}
	}
	return out
}

func (st *state) validate() error {
	if st.Version != stateVersion {
		return fmt.Errorf("state version %d, want %d", st.Version, stateVersion)
	}
	if err := st.Spec.Validate(); err != nil {
		return err
	}
	if len(st.Nodes) != st.Spec.Nodes {
		return fmt.Errorf("%d nodes in state, spec says %d", len(st.Nodes), st.Spec.Nodes)
	}
	primaries := 0
	for _, n := range st.Nodes {
		switch n.Role {
		case RolePrimary:
			primaries++
		case RoleReplica:
		default:
			return fmt.Errorf("node %s: unknown role %q", n.Name, n.Role)
		}
		if n.DataDir == "" || filepath.IsAbs(n.DataDir) {
			return fmt.Errorf("node %s: data dir %q must be relative", n.Name, n.DataDir)
		}
	}
	if primaries != 1 {
		return fmt.Errorf("%d primaries in state, want 1", primaries)
	}
	return nil
}

// readJSON loads path into v; it reports fs.ErrNotExist when path is missing.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// writeJSON replaces path with v, durably: a temporary file is written and
// fsynced, renamed over path, and the directory fsynced, so that a crash
// leaves the old or the new content, never a mix.
func writeJSON(path string, v any, perm fs.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// loadOrCreateSecrets reads secrets.json, creating it with fresh random
// passwords when missing.
func loadOrCreateSecrets(dir string) (secrets, error) {
	path := filepath.Join(dir, secretsFile)
	var sec secrets
	err := readJSON(path, &sec)
	switch {
	case err == nil:
		if sec.Superuser == "" || sec.SuperuserPassword == "" || sec.ReplicatorPassword == "" {
			return sec, fmt.Errorf("%s: incomplete", path)
		}
		return sec, nil
	case !errors.Is(err, fs.ErrNotExist):
		return sec, err
	}
	sec = secrets{Superuser: "postgres", SuperuserPassword: randomHex(16), ReplicatorPassword: randomHex(16)}
	if err := writeJSON(path, sec, 0o600); err != nil {
		return sec, err
	}
	return sec, nil
}

// Promoted returns when the new primary accepted writes.
func (r FailoverRecord) Promoted() time.Time {
	return r.At.Add(time.Duration(r.PromotionMS) * time.Millisecond)
}
