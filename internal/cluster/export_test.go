package cluster

// SyncListed exposes syncListed to the external tests.
var SyncListed = syncListed
