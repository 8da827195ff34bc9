package patroni

// Hold keeps node's agent from being restarted by Supervise while held is
// true: a host that stays lost.
func (e *Engine) Hold(node string, held bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.agents[node].held = held
}
