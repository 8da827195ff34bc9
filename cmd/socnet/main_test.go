package main

import (
	"os"
	"testing"

	"socnet/internal/pgtest"
)

// beMainEnv makes the test binary act as the socnet binary, so that `up`
// started by a test can run its services (`serve`, `counterd`, `relay`) by
// re-executing itself, as the real binary does.
const beMainEnv = "SOCNET_TEST_BE_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(beMainEnv) == "1" {
		main()
		return
	}
	pgtest.Main(m)
}
