package feed

// SetDemoteHook makes fn run after each step of a demotion, for tests that
// look at the timelines between the steps; it returns the undo.
func SetDemoteHook(fn func(step string)) (undo func()) {
	old := testHookDemote
	testHookDemote = fn
	return func() { testHookDemote = old }
}
