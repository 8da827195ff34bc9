package main

import (
	"socnet/internal/dbroute"
	"socnet/internal/stack"
)

// stackInfo is stack.json: where the services listen, the nodes' DSNs.
type stackInfo = stack.Info

// readStack reads the stack that `up` runs (or ran) in home.
func readStack(home string) (stackInfo, error) {
	h, err := stack.NewHome(home)
	if err != nil {
		return stackInfo{}, err
	}
	return stack.ReadInfo(h)
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
