package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"socnet/internal/dbroute"
	"socnet/internal/stack"
)

// stackInfo is what `up` tells the other commands about the stack it runs:
// where the services listen and the application DSNs of every database node.
// It holds the application roles' passwords, so it is written 0600 under
// home; its administrator DSNs carry none (they name the home's passfile).
type stackInfo struct {
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
}

func stackPath(home string) string { return stack.Home{Dir: home}.Stack() }

func writeStack(home string, s stackInfo) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return stack.WriteFile(stackPath(home), data, 0o600)
}

// readStack reads the stack that `up` runs (or ran) in home.
func readStack(home string) (stackInfo, error) {
	var s stackInfo
	data, err := stack.ReadFile(stackPath(home))
	if errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("no stack in %s: start it with `socnet up --home %s`", home, home)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("read %s: %w", stackPath(home), err)
	}
	return s, nil
}

// mainAdminNodes returns administrator DSNs of the main database's nodes:
// --db when given, else those of the stack in home.
func mainAdminNodes(db, home string) ([]string, error) {
	if nodes := dbroute.SplitDSNList(db); len(nodes) > 0 {
		return nodes, nil
	}
	s, err := readStack(home)
	if err != nil {
		return nil, err
	}
	return s.MainAdmin, nil
}
