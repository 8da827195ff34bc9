package load

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// ErrorKind says why a request failed.
type ErrorKind uint8

// Kinds of outcome. A request is an error when its kind is not KindNone.
const (
	KindNone    ErrorKind = iota // a 2xx response
	KindStatus                   // a response with a status other than 2xx
	KindTimeout                  // no response within the timeout
	KindRefused                  // connection refused: nothing listens
	KindReset                    // connection reset or closed mid-request
	KindOther                    // any other transport error
	numKinds
)

var kindNames = [numKinds]string{"none", "status", "timeout", "refused", "reset", "other"}

// String returns the kind's name as it appears in reports.
func (k ErrorKind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "unknown"
}

// Classify returns the kind of outcome of a request that got status (0 when
// there was no response) or failed with err.
func Classify(status int, err error) ErrorKind {
	if err == nil {
		if status >= 200 && status < 300 {
			return KindNone
		}
		return KindStatus
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return KindReset
	default:
		return KindOther
	}
}
