package dbroute

import (
	"fmt"
	"strconv"
	"strings"
)

// lsn is a WAL position (pg_lsn) as a number; 0 means unknown.
type lsn uint64

// lsnPrimaryOnly marks a session whose last write position is unknown: its
// reads go to the primary until the session expires.
const lsnPrimaryOnly = lsn(^uint64(0))

// parseLSN parses PostgreSQL's text form of pg_lsn, "16/B374D848".
func parseLSN(s string) (lsn, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("parse lsn %q: no slash", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse lsn %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse lsn %q: %w", s, err)
	}
	return lsn(h<<32 | l), nil
}

// parseNullLSN parses a nullable pg_lsn text; NULL is 0 (unknown).
func parseNullLSN(s *string) (lsn, error) {
	if s == nil {
		return 0, nil
	}
	return parseLSN(*s)
}

func (l lsn) String() string {
	if l == 0 {
		return ""
	}
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF)
}
