package stack_test

import (
	"testing"

	"socnet/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
