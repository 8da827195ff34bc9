package cluster

// RestartAttempts is restartAttempts for the external tests.
const RestartAttempts = restartAttempts
