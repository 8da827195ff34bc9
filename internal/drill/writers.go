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
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/dbroute"
	"socnet/internal/load"
)

// APIWriter creates posts through the socnet API, each with its tag as the
// text, as one drill user. Posts, not registrations, so that the write rate
// is the database's and not bcrypt's.
type APIWriter struct {
	api *apiClient

	mu    sync.Mutex
	token string // bearer token of the drill's author, once logged in
}

// NewAPIWriter returns a writer to the API at addr (host:port or a base
// URL). timeout bounds one request; it should exceed the API's own write
// timeout so that the API, not the client, reports a commit in doubt.
func NewAPIWriter(addr string, conns int, timeout time.Duration) *APIWriter {
	return &APIWriter{api: newAPIClient(addr, conns, timeout)}
}

// Describe says what a write is.
func (w *APIWriter) Describe() string {
	return "POST /post/create through the API at " + w.api.base + " (tag as the text)"
}

// apiPassword is the password of the users a drill writes as.
const apiPassword = "drill-password"

// Write creates one post whose text is tag. POST is not idempotent, so
// net/http never resends it on its own. Until the drill's author is
// registered and logged in, a write fails without reaching the database.
func (w *APIWriter) Write(ctx context.Context, tag string) WriteResult {
	token, err := w.session(ctx)
	if err != nil {
		return WriteResult{Outcome: Failed, Error: "no session"}
	}
	body, _ := json.Marshal(map[string]string{"text": tag})
	status, data, err := w.api.do(ctx, http.MethodPost, "/post/create", token, body)
	out := httpResult(status, err)
	if out.Outcome != Acknowledged {
		return out
	}
	var id string
	if json.Unmarshal(data, &id) == nil {
		out.ID = id
	}
	return out
}

// session returns the author's token, registering and logging in first.
func (w *APIWriter) session(ctx context.Context) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.token != "" {
		return w.token, nil
	}
	u, err := w.api.signUp(ctx, "Writer")
	if err != nil {
		return "", fmt.Errorf("the drill's author: %w", err)
	}
	w.token = u.token
	return w.token, nil
}

// Tagged returns the posts whose text starts with prefix.
func (w *APIWriter) Tagged(ctx context.Context, conn *pgx.Conn, prefix string) ([]Row, error) {
	return queryRows(ctx, conn, `SELECT text, id::text FROM posts WHERE text LIKE $1`, likePrefix(prefix))
}

// httpResult is the WriteResult of a write request that got status or
// failed with err; the caller adds the id of an acknowledgement.
func httpResult(status int, err error) WriteResult {
	if err != nil {
		return WriteResult{Outcome: ClassifyHTTP(0, err), Error: load.Classify(0, err).String()}
	}
	out := WriteResult{Outcome: ClassifyHTTP(status, nil)}
	if out.Outcome != Acknowledged {
		out.Error = strconv.Itoa(status)
	}
	return out
}

// apiClient talks to the socnet API as drill users.
type apiClient struct {
	base   string
	client *http.Client
}

// newAPIClient returns a client of the API at addr (host:port or a base
// URL) keeping up to conns idle connections; timeout bounds one request.
func newAPIClient(addr string, conns int, timeout time.Duration) *apiClient {
	base := strings.TrimSuffix(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     30 * time.Second,
	}
	return &apiClient{base: base, client: &http.Client{Transport: tr, Timeout: timeout}}
}

// apiUser is a drill user the API knows, logged in.
type apiUser struct {
	id    string
	token string
}

// signUp registers a drill user (first name Drill, second name second)
// with apiPassword and logs it in.
func (c *apiClient) signUp(ctx context.Context, second string) (apiUser, error) {
	reg, _ := json.Marshal(map[string]string{"first_name": "Drill", "second_name": second,
		"birthdate": "1990-01-01", "biography": "", "city": "Drill", "password": apiPassword})
	status, data, err := c.do(ctx, http.MethodPost, "/user/register", "", reg)
	var user struct {
		UserID string `json:"user_id"`
	}
	if err != nil || status != http.StatusOK || json.Unmarshal(data, &user) != nil {
		return apiUser{}, fmt.Errorf("register: status %d: %v", status, err)
	}
	login, _ := json.Marshal(map[string]string{"id": user.UserID, "password": apiPassword})
	status, data, err = c.do(ctx, http.MethodPost, "/login", "", login)
	var tok struct {
		Token string `json:"token"`
	}
	if err != nil || status != http.StatusOK || json.Unmarshal(data, &tok) != nil {
		return apiUser{}, fmt.Errorf("log in %s: status %d: %v", user.UserID, status, err)
	}
	return apiUser{id: user.UserID, token: tok.Token}, nil
}

// signUpGroup signs up a drill user named first and n more named
// "others 1" to "others n".
func (c *apiClient) signUpGroup(ctx context.Context, first, others string, n int) (apiUser, []apiUser, error) {
	one, err := c.signUp(ctx, first)
	if err != nil {
		return apiUser{}, nil, fmt.Errorf("sign up drill user %s: %w", first, err)
	}
	more := make([]apiUser, 0, n)
	for i := range n {
		name := others + " " + strconv.Itoa(i+1)
		u, err := c.signUp(ctx, name)
		if err != nil {
			return apiUser{}, nil, fmt.Errorf("sign up drill user %s: %w", name, err)
		}
		more = append(more, u)
	}
	return one, more, nil
}

// do sends a request, with a JSON body unless body is nil and with the
// bearer token unless it is "", and returns the status and up to 64 KiB
// of the answer.
func (c *apiClient) do(ctx context.Context, method, path, token string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, data, err
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

// Write inserts one row with tag and commits, and names the server that
// acknowledged it. A COMMIT that returned is an acknowledgement; an error of the statement itself (bad data) is a
// definite failure; a lost connection, a shutdown, a timeout or a refused
// write on a demoted node leaves the write in doubt.
func (w *SQLWriter) Write(ctx context.Context, tag string) WriteResult {
	var id int64
	var server string
	err := w.db.Transact(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO drill_writes (tag) VALUES ($1)
			RETURNING id, coalesce(host(inet_server_addr()) || ':' || inet_server_port(), '')`, tag).Scan(&id, &server)
	})
	if err == nil {
		return WriteResult{Outcome: Acknowledged, ID: strconv.FormatInt(id, 10), Server: server}
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
