package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/dbroute"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
)

func TestWithStatementTimeout(t *testing.T) {
	dsn := pgtest.MustDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	keywords := fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=%s", u.Hostname(), u.Port(), u.User.Username(), pw, u.Path[1:])
	for _, tt := range []struct{ name, dsn string }{{"url", dsn}, {"keywords", keywords}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := dbroute.Open(ctx, dbroute.Config{Name: "main", Primary: postgres.WithStatementTimeout(tt.dsn, 250*time.Millisecond)}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var got string
			err = db.ReadReplica(ctx, func(q dbroute.Querier) error {
				return q.QueryRow(ctx, "SHOW statement_timeout").Scan(&got)
			})
			if err != nil || got != "250ms" {
				t.Fatalf("statement_timeout %q, %v; want 250ms", got, err)
			}
			// The server itself stops a statement that runs longer, although
			// the caller's context has no deadline.
			err = db.ReadReplica(ctx, func(q dbroute.Querier) error {
				_, err := q.Exec(ctx, "SELECT pg_sleep(30)")
				return err
			})
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "57014" || !dbroute.IsUnavailable(err) {
				t.Fatalf("a long read: %v; want query_canceled (57014), unavailable", err)
			}
		})
	}
}
