package main

import (
	"os"

	"socnet/internal/stack"
)

// writeFileAtomic writes data to path so that a reader never sees a
// half-written file (stack.WriteFile).
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return stack.WriteFile(path, data, perm)
}
