package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Info is stack.json: what `up` tells the other commands about the stack it
// runs: which engine runs its clusters, where the services listen and the
// DSNs of every database node. It holds the application roles' passwords,
// so it is written 0600; its administrator DSNs carry none (they name the
// home's passfile).
type Info struct {
	// Engine is the engine that made the home's clusters (EngineSocnet,
	// EnginePatroni); "" in a home made before engines were recorded,
	// which is the socnet engine's.
	Engine    string   `json:"engine,omitempty"`
	API       string   `json:"api"`        // host:port of the API
	Counter   string   `json:"counter"`    // host:port of the counter service
	MainDB    []string `json:"main_db"`    // app DSNs of the main cluster's nodes
	MainAdmin []string `json:"main_admin"` // administrator DSNs of the same, for seed and drills
	CounterDB []string `json:"counter_db"` // app DSNs of the counter cluster's nodes
	// CounterAdmin are administrator DSNs of the counter database.
	CounterAdmin []string `json:"counter_admin"`
	// Redis is host:port of the feed's Redis (password in the home's
	// redis/password); empty when the stack runs none.
	Redis string `json:"redis,omitempty"`
	// Hosts is HostsNetns when the stack runs on hosts of its own (`up
	// --hosts netns`); empty on the machine's own network.
	Hosts string `json:"hosts,omitempty"`
}

// WriteInfo replaces the home's stack.json.
func WriteInfo(h Home, info Info) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", h.Stack(), err)
	}
	return WriteFile(h.Stack(), data, 0o600)
}

// ReadInfo reads the stack that `up` runs (or ran) in the home.
func ReadInfo(h Home) (Info, error) {
	var info Info
	data, err := ReadFile(h.Stack())
	if errors.Is(err, fs.ErrNotExist) {
		return info, fmt.Errorf("no stack in %s: start it with `socnet up --home %s`", h.Dir, h.Dir)
	}
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, fmt.Errorf("read %s: %w", h.Stack(), err)
	}
	return info, nil
}

// RecordedEngine is the engine that made the home's clusters: the one in
// stack.json, EngineSocnet for a home without one (made before engines were
// recorded, or by `socnet cluster` alone, or not made yet).
func RecordedEngine(h Home) (string, error) {
	info, err := ReadInfo(h)
	if err != nil {
		if _, serr := ReadFile(h.Stack()); errors.Is(serr, fs.ErrNotExist) {
			return EngineSocnet, nil
		}
		return "", err
	}
	if info.Engine == "" {
		return EngineSocnet, nil
	}
	return info.Engine, nil
}

// recordEngine writes engine into the home's stack.json, keeping the rest,
// and refuses a home whose clusters another engine made: they cannot be
// run by this one.
func recordEngine(h Home, engine string) error {
	recorded, err := RecordedEngine(h)
	if err != nil {
		return err
	}
	info, err := ReadInfo(h)
	exists := err == nil
	if exists || clustersExist(h) {
		if recorded != engine {
			return fmt.Errorf("%s was made by the %s engine and cannot run under --engine %s: use --engine %s, or another --home", h.Dir, recorded, engine, recorded)
		}
	}
	if exists && info.Engine == engine {
		return nil
	}
	info.Engine = engine
	return WriteInfo(h, info)
}

// clustersExist reports whether the home holds any cluster directory.
func clustersExist(h Home) bool {
	for _, dir := range []string{h.Clusters(), h.Path(patroniDir)} {
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			return true
		}
	}
	return false
}

// patroniDir is where the Patroni engine keeps its clusters' state in a
// home (internal/patroni).
const patroniDir = "patroni"
