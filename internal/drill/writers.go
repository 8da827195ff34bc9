package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/dbroute"
	"socnet/internal/load"
)

// APIWriter registers users through the socnet API, each with its tag as
// the biography.
type APIWriter struct {
	base   string
	client *http.Client
}

// NewAPIWriter returns a writer to the API at addr (host:port or a base
// URL). timeout bounds one request; it should exceed the API's own write
// timeout so that the API, not the client, reports a commit in doubt.
func NewAPIWriter(addr string, conns int, timeout time.Duration) *APIWriter {
	base := strings.TrimSuffix(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     30 * time.Second,
	}
	return &APIWriter{base: base, client: &http.Client{Transport: tr, Timeout: timeout}}
}

// Describe says what a write is.
func (w *APIWriter) Describe() string {
	return "POST /user/register through the API at " + w.base + " (tag in the biography)"
}

// apiPassword is the password of every user a drill registers.
const apiPassword = "drill-password"

// Write registers one user whose biography is tag. POST is not idempotent,
// so net/http never resends it on its own.
func (w *APIWriter) Write(ctx context.Context, tag string) WriteResult {
	body, _ := json.Marshal(map[string]string{
		"first_name":  "Drill",
		"second_name": "Writer",
		"birthdate":   "1990-01-01",
		"biography":   tag,
		"city":        "Drill",
		"password":    apiPassword,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+"/user/register", bytes.NewReader(body))
	if err != nil {
		return WriteResult{Outcome: Failed, Error: "request"}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return WriteResult{Outcome: ClassifyHTTP(0, err), Error: load.Classify(0, err).String()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	out := WriteResult{Outcome: ClassifyHTTP(resp.StatusCode, err)}
	switch {
	case out.Outcome != Acknowledged && err != nil:
		out.Error = load.Classify(0, err).String()
	case out.Outcome != Acknowledged:
		out.Error = strconv.Itoa(resp.StatusCode)
	default:
		var ans struct {
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(data, &ans) == nil {
			out.ID = ans.UserID
		}
	}
	return out
}

// Tagged returns the users whose biography starts with prefix.
func (w *APIWriter) Tagged(ctx context.Context, conn *pgx.Conn, prefix string) ([]Row, error) {
	return queryRows(ctx, conn, `SELECT biography, id::text FROM users WHERE biography LIKE $1`, likePrefix(prefix))
}

// SQLWriter inserts rows into the table drill_writes of a cluster through a
// dbroute.DB, which finds the primary again after a failover. It is the
// drill's write path for a database without an API of its own.
type SQLWriter struct {
	db *dbroute.DB
}

// DrillTable is the DDL of the table SQLWriter writes. The tag is not
// unique on purpose: a write applied twice must show as two rows.
const DrillTable = `CREATE TABLE IF NOT EXISTS drill_writes (
	id         bigserial   PRIMARY KEY,
	tag        text        NOT NULL,
	written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS drill_writes_tag_idx ON drill_writes (tag text_pattern_ops)`

// NewSQLWriter creates drill_writes on the primary of db when missing.
func NewSQLWriter(ctx context.Context, db *dbroute.DB) (*SQLWriter, error) {
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, DrillTable)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create drill_writes: %w", err)
	}
	return &SQLWriter{db: db}, nil
}

// Describe says what a write is.
func (w *SQLWriter) Describe() string {
	return "INSERT INTO drill_writes on the primary (direct SQL, one transaction per write)"
}

// Write inserts one row with tag and commits. A COMMIT that returned is an
// acknowledgement; an error of the statement itself (bad data) is a
// definite failure; a lost connection, a shutdown, a timeout or a refused
// write on a demoted node leaves the write in doubt.
func (w *SQLWriter) Write(ctx context.Context, tag string) WriteResult {
	var id int64
	err := w.db.Transact(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO drill_writes (tag) VALUES ($1) RETURNING id`, tag).Scan(&id)
	})
	if err == nil {
		return WriteResult{Outcome: Acknowledged, ID: strconv.FormatInt(id, 10)}
	}
	return WriteResult{Outcome: classifySQL(err), Error: sqlErrorClass(err)}
}

// Tagged returns the drill_writes rows whose tag starts with prefix.
func (w *SQLWriter) Tagged(ctx context.Context, conn *pgx.Conn, prefix string) ([]Row, error) {
	return queryRows(ctx, conn, `SELECT tag, id::text FROM drill_writes WHERE tag LIKE $1`, likePrefix(prefix))
}

// classifySQL returns the outcome of a failed write transaction. Only a
// write that never reached a server (dbroute.ErrNoPrimary) or an error the
// server raised for the statement, before COMMIT, proves nothing was
// written: data, integrity and syntax errors (classes 22, 23, 42).
// Everything else may have met a COMMIT that was applied.
func classifySQL(err error) Outcome {
	if errors.Is(err, dbroute.ErrNoPrimary) {
		return Failed
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && len(pe.Code) == 5 {
		switch pe.Code[:2] {
		case "22", "23", "42":
			return Failed
		}
	}
	return Unknown
}

// sqlErrorClass names a failed write for the report.
func sqlErrorClass(err error) string {
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, dbroute.ErrNoPrimary):
		return "no primary"
	case errors.Is(err, dbroute.ErrCommitUnconfirmed):
		return "commit unconfirmed"
	case errors.As(err, &pe):
		return "sqlstate " + pe.Code
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return "timeout"
	case dbroute.IsUnavailable(err):
		return "unavailable"
	default:
		return "error"
	}
}

func queryRows(ctx context.Context, conn *pgx.Conn, sql string, args ...any) ([]Row, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var row Row
		err := r.Scan(&row.Tag, &row.ID)
		return row, err
	})
}

// likePrefix returns a LIKE pattern matching strings that start with p.
func likePrefix(p string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(p) + "%"
}
