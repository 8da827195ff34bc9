// Package pglsn is PostgreSQL's WAL position (pg_lsn) as a number: parsing,
// printing and arithmetic, shared by the cluster manager and the router.
package pglsn

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a position in the write-ahead log, PostgreSQL's pg_lsn. The zero
// LSN means "unknown" (PostgreSQL reports NULL, or the node was not seen).
type LSN uint64

// Parse parses PostgreSQL's text form of an LSN, "16/B374D848". The empty
// string parses as the zero LSN, so that a NULL cast to text maps to unknown.
func Parse(s string) (LSN, error) {
	if s == "" {
		return 0, nil
	}
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
	return LSN(h<<32 | l), nil
}

// String returns PostgreSQL's text form of the LSN.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF)
}

// MarshalText writes the LSN in PostgreSQL's text form, for state.json and
// status output.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads the LSN in PostgreSQL's text form.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Minus returns l-m in bytes, or 0 when m is at or past l.
func (l LSN) Minus(m LSN) int64 {
	if m >= l {
		return 0
	}
	return int64(l - m)
}
