package stack

// RecordEngine exposes recordEngine to the external tests.
var RecordEngine = recordEngine

// CheckHostsMode exposes checkHostsMode to the external tests.
var CheckHostsMode = checkHostsMode
