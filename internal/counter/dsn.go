package counter

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// dsnStart matches what a DSN begins with: a URL scheme or a keyword=value;
// urlStart only the URL scheme.
var (
	dsnStart = regexp.MustCompile(`^\s*(postgres(ql)?://|[A-Za-z_]+\s*=)`)
	urlStart = regexp.MustCompile(`^\s*postgres(ql)?://`)
)

// SplitDSNs splits a list of DSNs as given to --db: separated by commas
// (DSN[,DSN...]) or, for URL DSNs, by white space. A separator splits only
// where the next DSN begins (postgres://, postgresql:// or, after a comma,
// keyword=), so that multi-host DSNs (postgres://u@h1:5432,h2:5432/db,
// host=h1,h2) and keyword DSNs (host=h port=5432) stay whole. Blank entries
// are dropped.
func SplitDSNs(list string) []string {
	var out []string
	start := 0
	for i := 0; i < len(list); i++ {
		rest := list[i+1:]
		switch {
		case list[i] == ',' && dsnStart.MatchString(rest):
		case (list[i] == ' ' || list[i] == '\t' || list[i] == '\n') && urlStart.MatchString(rest):
		default:
			continue
		}
		out = appendDSN(out, list[start:i])
		start = i + 1
	}
	return appendDSN(out, list[start:])
}

func appendDSN(out []string, dsn string) []string {
	if dsn = strings.Trim(dsn, " ,\t\n"); dsn != "" {
		out = append(out, dsn)
	}
	return out
}

// connectPrimary connects to the node of dsns that accepts writes, trying
// each DSN (and each host of a multi-host DSN) in order. The error never
// holds a password.
func connectPrimary(ctx context.Context, dsns []string) (*pgx.Conn, error) {
	if len(dsns) == 0 {
		return nil, errors.New("connect to primary: no DSN given")
	}
	var errs []error
	for i, dsn := range dsns {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			// pgx's parse errors quote no password.
			errs = append(errs, fmt.Errorf("dsn %d: %w", i+1, err))
			continue
		}
		cfg.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("dsn %d (%s:%d): %w", i+1, cfg.Host, cfg.Port, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("connect to primary: %w", errors.Join(errs...))
}
