// Package pgrole creates PostgreSQL login roles whose passwords reach the
// server only as SCRAM-SHA-256 verifiers, so that no clear-text password
// ever appears in a statement, a server log or a statistics view.
package pgrole

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/text/secure/precis"
)

// iterations is PostgreSQL's default scram_iterations.
const iterations = 4096

// SCRAMVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password (RFC 5802/7677, the rolpassword format), with a fresh salt. The
// password is normalised with SASLprep as PostgreSQL does.
func SCRAMVerifier(password string) (string, error) {
	if p, err := precis.OpaqueString.String(password); err == nil {
		password = p
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("scram salt: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("scram key: %w", err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	storedKey := sha256.Sum256(mac(salted, "Client Key"))
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

// Querier is a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// attrsRE allows only role attribute keywords, never anything a caller
// could use to smuggle SQL into the statement.
var attrsRE = regexp.MustCompile(`^[A-Z ]*$`)

// Ensure creates the LOGIN role with the password and attributes (for
// example "REPLICATION NOSUPERUSER"), or, when it exists, sets its password
// and attributes again. It refuses a role that is a superuser: an
// application or replication role must never be one.
func Ensure(ctx context.Context, q Querier, role, password, attrs string) error {
	if !roleName.MatchString(role) || strings.HasPrefix(role, "pg_") {
		return fmt.Errorf("role %q: want a lower-case identifier not starting with pg_", role)
	}
	if !attrsRE.MatchString(attrs) {
		return fmt.Errorf("role %s: bad attributes %q", role, attrs)
	}
	if password == "" {
		return fmt.Errorf("role %s: empty password", role)
	}
	verifier, err := SCRAMVerifier(password)
	if err != nil {
		return fmt.Errorf("role %s: %w", role, err)
	}
	var exists, super bool
	err = q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
		EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolsuper)`, role).Scan(&exists, &super)
	if err != nil {
		return fmt.Errorf("look up role %s: %w", role, err)
	}
	if super {
		return fmt.Errorf("role %s is a superuser; refusing to change it", role)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	// The verifier holds only base64 characters, '$' and ':', so quoting it is plain.
	stmt := fmt.Sprintf("%s ROLE %s WITH LOGIN %s PASSWORD '%s'", verb, pgx.Identifier{role}.Sanitize(), attrs, verifier)
	if _, err := q.Exec(ctx, stmt); err != nil {
		// The statement holds the verifier: name only the verb.
		return fmt.Errorf("%s role %s: %w", strings.ToLower(verb), role, err)
	}
	return nil
}
