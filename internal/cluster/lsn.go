package cluster

import "socnet/internal/pglsn"

// LSN is a position in the write-ahead log; the zero LSN means unknown.
type LSN = pglsn.LSN

// ParseLSN parses PostgreSQL's text form of an LSN; "" is the zero LSN.
func ParseLSN(s string) (LSN, error) { return pglsn.Parse(s) }
