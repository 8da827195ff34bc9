package social

import (
	"errors"
	"fmt"
)

// Error codes. internal/httpapi maps each to exactly one HTTP status.
const (
	EINVALID      = "invalid"      // bad input: 400
	EUNAUTHORIZED = "unauthorized" // missing or bad credentials: 401
	EFORBIDDEN    = "forbidden"    // authenticated but not allowed: 403
	ENOTFOUND     = "not_found"    // no such thing: 404
	ECONFLICT     = "conflict"     // state does not allow it: 409
	ETOOLARGE     = "too_large"    // request body too large: 413
	ETOOMANY      = "too_many"     // too many attempts, retry later: 429
	EUNAVAILABLE  = "unavailable"  // database unreachable, failing over or stuck: 503
	EINTERNAL     = "internal"     // a bug: 500
)

// Error is the one error type of the domain. Fields, when set, maps an input
// field to what is wrong with it.
type Error struct {
	Code    string
	Message string
	Fields  map[string]string
}

func (e *Error) Error() string {
	if len(e.Fields) == 0 {
		return fmt.Sprintf("%s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("%s: %s %v", e.Code, e.Message, e.Fields)
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EINVALID error naming each bad field and its problem.
func Invalid(fields map[string]string) *Error {
	return &Error{Code: EINVALID, Message: "invalid input", Fields: fields}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the message of the first *Error in err's chain, or a
// generic text for other errors so that internals never reach a client.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
