package counter

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

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
