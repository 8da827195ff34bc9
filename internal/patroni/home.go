package patroni

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"socnet/internal/pgnode"
	"socnet/internal/stack"
)

// Layout of the Patroni engine's part of a home, HOME/patroni:
//
//	state.json    ports chosen at first start, last leaders, switchovers (0600)
//	secrets.json  the roles' and the REST API's passwords (0600)
//	etcd/         etcd's data (etcd-N/ on hosts)
//	tls/          etcd's CA and certificates (see ensureTLS)
//	CLUSTER/NODE/ a node: patroni.yml (0600), data/, pgpass, PostgreSQL's socket
//
// The agents' and etcd's output go to HOME/logs/patroni-NODE.log and
// HOME/logs/etcd.log.
const (
	homeDirName      = "patroni"
	stateFileName    = "state.json"
	secretsFileName  = "secrets.json"
	engineStateVer   = 1
	maxSwitchoverLog = 100
)

// nodePorts are a node's ports, chosen once.
type nodePorts struct {
	Port     int `json:"port"`
	RESTPort int `json:"rest_port"`
}

// switchoverLog is a switchover the engine asked Patroni for: it turns the
// timeline switch Patroni records into a switchover with its timings.
type switchoverLog struct {
	Cluster  string                 `json:"cluster"`
	Timeline int                    `json:"timeline"`
	Record   switchoverRecordFields `json:"record"`
}

// switchoverRecordFields are the fields of a cluster.FailoverRecord that
// Patroni's history lacks.
type switchoverRecordFields struct {
	ID          string    `json:"id"`
	At          time.Time `json:"at"`
	PromotionMS int64     `json:"promotion_ms"`
	TotalMS     int64     `json:"total_ms"`
}

// engineState is HOME/patroni/state.json.
type engineState struct {
	Version        int `json:"version"`
	EtcdClientPort int `json:"etcd_client_port"`
	EtcdPeerPort   int `json:"etcd_peer_port"`
	// EtcdTLS marks a home whose etcd speaks mutual TLS (patroni/tls/);
	// homes made before it did have none and keep plain http.
	EtcdTLS bool                 `json:"etcd_tls,omitempty"`
	Nodes   map[string]nodePorts `json:"nodes"`
	// Leaders are the last leader seen of each cluster: a resumed cluster
	// starts that node's agent first.
	Leaders     map[string]string `json:"leaders"`
	Switchovers []switchoverLog   `json:"switchovers"`
	// Timing is the timing the clusters run with, kept so that a later
	// start without a choice keeps it.
	Timing *Timing `json:"timing,omitempty"`
}

// engineSecrets is HOME/patroni/secrets.json.
type engineSecrets struct {
	Superuser   Credential `json:"superuser"`
	Replication Credential `json:"replication"`
	Rewind      Credential `json:"rewind"`
	REST        Credential `json:"rest"`
}

// loadState reads state.json, choosing the ports of nodes that have none
// (every node at first start); Up saves them.
func loadState(dir string, nodes []string) (*engineState, error) {
	path := filepath.Join(dir, stateFileName)
	st := &engineState{Version: engineStateVer}
	b, err := stack.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, st); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if st.Version != engineStateVer {
			return nil, fmt.Errorf("read %s: version %d, want %d", path, st.Version, engineStateVer)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if st.Nodes == nil {
		st.Nodes = map[string]nodePorts{}
	}
	if st.Leaders == nil {
		st.Leaders = map[string]string{}
	}
	free := func(p *int) error {
		if *p != 0 {
			pgnode.RenewPorts(*p)
			return nil
		}
		port, err := pgnode.FreePort()
		if err != nil {
			return err
		}
		*p = port
		return nil
	}
	for _, p := range []*int{&st.EtcdClientPort, &st.EtcdPeerPort} {
		if err := free(p); err != nil {
			return nil, err
		}
	}
	for _, n := range nodes {
		np := st.Nodes[n]
		if err := free(&np.Port); err != nil {
			return nil, err
		}
		if err := free(&np.RESTPort); err != nil {
			return nil, err
		}
		st.Nodes[n] = np
	}
	return st, nil
}

func saveState(dir string, st *engineState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode patroni state: %w", err)
	}
	return stack.WriteFile(filepath.Join(dir, stateFileName), append(b, '\n'), 0o600)
}

// loadSecrets reads secrets.json, or generates the passwords (created
// true: saveSecrets must keep them).
func loadSecrets(dir string) (sec engineSecrets, created bool, err error) {
	path := filepath.Join(dir, secretsFileName)
	b, err := stack.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &sec); err != nil {
			return sec, false, fmt.Errorf("read %s: %w", path, err)
		}
		for _, c := range []Credential{sec.Superuser, sec.Replication, sec.Rewind, sec.REST} {
			if c.Username == "" || c.Password == "" {
				return sec, false, fmt.Errorf("read %s: a role or password is missing", path)
			}
		}
		return sec, false, nil
	case errors.Is(err, fs.ErrNotExist):
	default:
		return sec, false, fmt.Errorf("read %s: %w", path, err)
	}
	return engineSecrets{
		Superuser:   Credential{Username: "postgres", Password: randomHex(16)},
		Replication: Credential{Username: "replicator", Password: randomHex(16)},
		Rewind:      Credential{Username: "rewinder", Password: randomHex(16)},
		REST:        Credential{Username: "socnet", Password: randomHex(16)},
	}, true, nil
}

// saveSecrets writes secrets.json (0600).
func saveSecrets(dir string, sec engineSecrets) error {
	b, err := json.MarshalIndent(sec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode patroni secrets: %w", err)
	}
	return stack.WriteFile(filepath.Join(dir, secretsFileName), append(b, '\n'), 0o600)
}

// randomHex returns 2n hex characters from crypto/rand.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}
