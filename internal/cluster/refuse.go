package cluster

import (
	"errors"
	"fmt"
)

// RefusedError reports an operation that was refused because the cluster's
// state does not allow it (the node is already primary, a promotion could
// lose acknowledged commits, ...). A refused operation changed nothing an
// operator needs to undo.
type RefusedError struct {
	// Op is the operation: switchover, promote, rejoin, start, ...
	Op string
	// Reason says what and why, in one sentence.
	Reason string
}

func (e *RefusedError) Error() string { return fmt.Sprintf("%s refused: %s", e.Op, e.Reason) }

func refuse(op, format string, args ...any) error {
	return &RefusedError{Op: op, Reason: fmt.Sprintf(format, args...)}
}

// IsRefused reports whether err is, or wraps, a *RefusedError.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// Outcome says what an operation did, for operators.
type Outcome struct {
	// Message is one or two sentences: what was done, how long it took.
	Message string `json:"message"`
	// Record is the history entry of a change of primary, if there was one.
	Record *FailoverRecord `json:"record,omitempty"`
}
