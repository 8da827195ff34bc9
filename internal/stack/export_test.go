package stack

// RecordEngine exposes recordEngine to the external tests.
var RecordEngine = recordEngine
