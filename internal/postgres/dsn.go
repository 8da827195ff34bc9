package postgres

import (
	"strconv"
	"strings"
	"time"
)

// WithStatementTimeout returns dsn with PostgreSQL's statement_timeout set
// to d, rounded up to a millisecond, on every connection made with it: the
// server then stops any statement of those connections that runs longer,
// whatever happens to the client. It takes URL and keyword/value DSNs,
// multi-host ones included; a statement_timeout already in dsn is replaced.
func WithStatementTimeout(dsn string, d time.Duration) string {
	ms := strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + "statement_timeout=" + ms
	}
	return strings.TrimSpace(dsn) + " statement_timeout=" + ms
}
