package dbroute

import "socnet/internal/pglsn"

// lsn is a WAL position (pg_lsn) as a number; 0 means unknown.
type lsn = pglsn.LSN

// lsnPrimaryOnly marks a session whose last write position is unknown: its
// reads go to the primary until the session expires.
const lsnPrimaryOnly = lsn(^uint64(0))

// parseLSN parses PostgreSQL's text form of pg_lsn, "16/B374D848".
func parseLSN(s string) (lsn, error) { return pglsn.Parse(s) }

// parseNullLSN parses a nullable pg_lsn text; NULL is 0 (unknown).
func parseNullLSN(s *string) (lsn, error) {
	if s == nil {
		return 0, nil
	}
	return parseLSN(*s)
}

// lsnText is the LSN's text form for status output, "" when unknown.
func lsnText(l lsn) string {
	if l == 0 {
		return ""
	}
	return l.String()
}
