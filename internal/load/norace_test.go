//go:build !race

package load_test

// raceEnabled reports whether the race detector instruments this binary.
const raceEnabled = false
