package postgres

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// constraintFields names the input field and the problem behind each
// constraint of the schema that bad input can break.
var constraintFields = map[string][2]string{
	"users_first_name_length":     {"first_name", "must be 1 to 100 characters"},
	"users_second_name_length":    {"second_name", "must be 1 to 100 characters"},
	"users_birthdate_range":       {"birthdate", "must be between 1900-01-01 and 2099-12-31"},
	"users_biography_length":      {"biography", "must be at most 4000 characters"},
	"users_city_length":           {"city", "must be at most 100 characters"},
	"users_password_hash_present": {"password", "must be set"},
	"friends_not_self":            {"id", "cannot follow yourself"},
	"posts_text_length":           {"text", "must be 1 to 10000 characters"},
	"messages_text_length":        {"text", "must be 1 to 10000 characters"},
	"messages_not_self":           {"user_id", "cannot send a message to yourself"},
}

// mapError turns the error of operation op into what the stores return:
//
//   - a *social.Error passes unchanged (an EUNAVAILABLE one from dbroute,
//     such as "the write was not confirmed in time", wrapped with op);
//   - no row, or a foreign key to a missing user: ENOTFOUND with notFound;
//   - a check, not-null or data error (SQLSTATE 22xxx, 23502, 23514): EINVALID,
//     naming the field when the constraint is known;
//   - a unique violation: ECONFLICT;
//   - the database unreachable, failing over or too slow
//     (dbroute.IsUnavailable): EUNAVAILABLE "database unavailable", still
//     wrapping the cause for logs;
//   - anything else: wrapped with op, which callers treat as internal.
func mapError(op, notFound string, err error) error {
	if err == nil {
		return nil
	}
	var se *social.Error
	if errors.As(err, &se) {
		if se.Code == social.EUNAVAILABLE {
			return fmt.Errorf("%s: %w", op, err) // dbroute's own, more precise word
		}
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return social.Errorf(social.ENOTFOUND, "%s", notFound)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23503": // foreign_key_violation
			return social.Errorf(social.ENOTFOUND, "%s", notFound)
		case pe.Code == "23502" && pe.ColumnName != "": // not_null_violation
			field := pe.ColumnName
			if field == "password_hash" {
				field = "password" // the input it comes from
			}
			return social.Invalid(map[string]string{field: "is required"})
		case pe.Code == "23514" || pe.Code == "23502": // check_violation
			if f, ok := constraintFields[pe.ConstraintName]; ok {
				return social.Invalid(map[string]string{f[0]: f[1]})
			}
			return social.Errorf(social.EINVALID, "invalid input: %s", pe.Message)
		case strings.HasPrefix(pe.Code, "22"): // data exception: bad encoding, NUL byte, out of range
			return social.Errorf(social.EINVALID, "invalid input: %s", pe.Message)
		case pe.Code == "23505": // unique_violation
			return social.Errorf(social.ECONFLICT, "%s: already exists", op)
		}
	}
	if dbroute.IsUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, &social.Error{Code: social.EUNAVAILABLE, Message: "database unavailable"}, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// parseID parses a user, post or message id. Malformed text is the caller's
// mistake: EINVALID naming field.
func parseID(field, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.UUID{}, social.Invalid(map[string]string{field: "must be a UUID"})
	}
	return id, nil
}

// newID returns a UUIDv7: time-ordered, so inserts stay at the right edge
// of the primary key index.
func newID() (uuid.UUID, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("new id: %w", err)
	}
	return id, nil
}
