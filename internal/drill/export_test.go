package drill

// CheckHostFault exposes checkHostFault to the tests.
var CheckHostFault = checkHostFault

// OtherPrimary exposes otherPrimary to the tests.
var OtherPrimary = otherPrimary

// WaitAckAfter exposes waitAckAfter to the tests.
var WaitAckAfter = waitAckAfter
