package cluster

// RestartAttempts is restartAttempts for the external tests.
const RestartAttempts = restartAttempts

// SyncListed exposes syncListed to the external tests.
var SyncListed = syncListed
