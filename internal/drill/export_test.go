package drill

// CheckHostFault exposes checkHostFault to the tests.
var CheckHostFault = checkHostFault
