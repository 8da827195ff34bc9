package dbroute

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/social"
)

// Errors that mean "the database cannot serve this now; retry shortly".
// Each is a *social.Error with code EUNAVAILABLE, so that the HTTP layer
// answers 503; errors that wrap them satisfy IsUnavailable.
var (
	// ErrNoPrimary: no reachable node is a primary (it died and no replica
	// has been promoted yet). Nothing was sent to any node.
	ErrNoPrimary = &social.Error{Code: social.EUNAVAILABLE, Message: "no primary database is reachable; retry shortly"}
	// ErrNoReplica: no replica is fit for reads and the policy is
	// NoReplicaFail. Nothing was sent to any node.
	ErrNoReplica = &social.Error{Code: social.EUNAVAILABLE, Message: "no database replica can serve reads now; retry shortly"}
	// ErrCommitUnconfirmed: the COMMIT did not finish within WriteTimeout,
	// typically because no synchronous standby acknowledged it. PostgreSQL
	// may have committed locally: the write may or may not be visible and
	// may or may not survive a failover.
	ErrCommitUnconfirmed = &social.Error{Code: social.EUNAVAILABLE, Message: "the write was not confirmed in time; it may or may not have been applied"}
	// ErrUnavailable wraps the failure of a node or a connection during a
	// call (the node died, shut down, was demoted, or timed out).
	ErrUnavailable = &social.Error{Code: social.EUNAVAILABLE, Message: "the database is unavailable; retry shortly"}
)

// IsUnavailable reports whether err means the database could not serve the
// request now (unreachable, shutting down, read-only after a demotion, or a
// write that timed out waiting for a synchronous standby): the caller should
// answer 503 and the client may retry.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var se *social.Error
	if errors.As(err, &se) && se.Code == social.EUNAVAILABLE {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "57": // connection exception, operator intervention (shutdown, cancel)
			return true
		}
		return pe.Code == "25006" // read_only_sql_transaction: a node in recovery
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || isConnectError(err) || isNetFailure(err)
}

func isConnectError(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// isNetFailure reports a broken network connection: the server went away
// in the middle of a conversation.
func isNetFailure(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE)
}

// nodeFailed reports whether err, met on a connection of a node, means the
// node or the connection failed (as opposed to the statement, or the
// caller's context ending). closed tells whether the connection is now
// closed.
func nodeFailed(ctx context.Context, err error, closed bool) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if closed {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P01", "57P02", "57P03": // admin shutdown, crash shutdown, cannot connect now
			return true
		}
		return pe.Code[:2] == "08"
	}
	return isConnectError(err) || isNetFailure(err) || pgconn.SafeToRetry(err)
}

// readOnly reports SQLSTATE 25006: a write met a node in recovery.
func readOnly(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "25006"
}

// retryable reports a serialization failure or a deadlock: the transaction
// was rolled back and may be run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}
