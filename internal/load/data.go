package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"socnet/internal/seed"
)

// SeedPassword is the password `socnet seed` gives every user it creates,
// and the one the generator gives the users it registers, so that any of
// them can be logged in.
const SeedPassword = seed.Password

// User is an existing user whose profile the generator reads and whose
// names it searches by.
type User struct {
	ID         string
	FirstName  string
	SecondName string
}

// Session is a logged-in user.
type Session struct {
	UserID string
	Token  string
}

// Dataset is what a workload needs from the system under load.
type Dataset struct {
	Source   string // "api" or "db": where Users came from
	Users    []User
	Sessions []Session
}

// PrepareConfig says how to obtain a Dataset.
type PrepareConfig struct {
	// Target is the base URL of the socnet API.
	Target string
	// AllowRemote permits a target that is not a loopback address.
	AllowRemote bool
	// DSN, when set, is a PostgreSQL connection string of a node holding the
	// users table: users are sampled from it. Without it they are registered
	// through the API.
	DSN string
	// Database, when set, replaces the database of DSN.
	Database string
	// UsersTable, when set, names the table users are sampled from instead
	// of users (columns id, first_name, second_name): a chosen set of users.
	UsersTable string
	// Sample bounds how many users are read from the database (default 10000).
	Sample int
	// Sessions is how many users to log in (default 20); also how many users
	// to register when the users come from the API.
	Sessions int
	// Password is the password of seeded users (default SeedPassword).
	Password string
	// NeedUsers and NeedSessions say what the workload uses (see NeedsData).
	NeedUsers, NeedSessions bool
	// Timeout bounds each request and the database query (default 10 s).
	Timeout time.Duration
	// Log receives progress notes; nil discards them.
	Log *slog.Logger
}

// Prepare obtains the users and sessions a workload needs: users sampled
// from the database when cfg.DSN is set, else registered through the API;
// sessions by logging in (seeded users with cfg.Password, registering more
// when too few log in). Session users follow each other and have one post
// each, so that feeds and dialogs have something to show.
func Prepare(ctx context.Context, cfg PrepareConfig) (*Dataset, error) {
	if cfg.Sample <= 0 {
		cfg.Sample = 10000
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = 20
	}
	if cfg.Sessions > 1000 {
		return nil, fmt.Errorf("prepare: at most 1000 sessions, not %d", cfg.Sessions)
	}
	if cfg.NeedSessions && cfg.Sessions < 2 {
		cfg.Sessions = 2 // dialogs need a partner
	}
	if cfg.Password == "" {
		cfg.Password = SeedPassword
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	base, err := parseTarget(cfg.Target)
	if err != nil {
		return nil, err
	}
	if err := checkLoopback(base, cfg.AllowRemote); err != nil {
		return nil, err
	}
	c := &apiClient{base: base, hc: &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{Proxy: nil}}}
	defer c.hc.CloseIdleConnections()

	ds := &Dataset{Source: "api"}
	if !cfg.NeedUsers && !cfg.NeedSessions {
		return ds, nil
	}
	if cfg.DSN != "" {
		ds.Source = "db"
		qctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		ds.Users, err = readUsers(qctx, cfg.DSN, cfg.Database, cfg.UsersTable, cfg.Sample)
		cancel()
		if err != nil {
			return nil, err
		}
		if len(ds.Users) == 0 {
			return nil, fmt.Errorf("prepare: the users table is empty: seed it, or register users through the API (no DSN)")
		}
		cfg.Log.Info("users sampled from the database", "users", len(ds.Users))
	}
	if cfg.NeedSessions && ds.Source == "db" {
		ds.Sessions = c.loginSome(ctx, ds.Users, cfg.Sessions, cfg.Password)
		if len(ds.Sessions) < cfg.Sessions {
			cfg.Log.Info("too few seeded users log in with the seed password; registering the rest",
				"logged_in", len(ds.Sessions), "wanted", cfg.Sessions)
		}
	}
	need := 0
	if ds.Source == "api" {
		need = cfg.Sessions
	} else if cfg.NeedSessions {
		need = cfg.Sessions - len(ds.Sessions)
	}
	users := make([]User, need)
	sessions := make([]Session, need)
	err = forEach(ctx, need, func(ctx context.Context, i int) error {
		u, err := c.register(ctx, cfg.Password)
		if err != nil {
			return err
		}
		users[i] = u
		if cfg.NeedSessions {
			tok, err := c.login(ctx, u.ID, cfg.Password)
			if err != nil {
				return err
			}
			sessions[i] = Session{UserID: u.ID, Token: tok}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ds.Source == "api" {
		ds.Users = users
	}
	if cfg.NeedSessions {
		ds.Sessions = append(ds.Sessions, sessions...)
	}
	if cfg.NeedSessions {
		if err := c.connect(ctx, ds.Sessions); err != nil {
			return nil, err
		}
		cfg.Log.Info("sessions ready", "sessions", len(ds.Sessions))
	}
	return ds, nil
}

// parseTarget checks that target is an http URL with a host.
func parseTarget(target string) (*url.URL, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", target, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("target %q: want http://host:port", target)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

// readUsers samples users from the users table (or table, when set): 1 % of
// its pages, or, when that finds few rows (a small table), a random choice of
// all of them.
func readUsers(ctx context.Context, dsn, database, table string, limit int) ([]User, error) {
	if table == "" {
		table = "users"
	}
	from := pgx.Identifier(strings.Split(table, ".")).Sanitize()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("read users: parse dsn: %w", err)
	}
	if database != "" {
		cfg.Database = database
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("read users: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	users, err := queryUsers(ctx, conn,
		`SELECT id::text, first_name, second_name FROM `+from+` TABLESAMPLE SYSTEM (1) LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	if len(users) < min(limit, 1000) {
		users, err = queryUsers(ctx, conn,
			`SELECT id::text, first_name, second_name FROM `+from+` ORDER BY random() LIMIT $1`, limit)
	}
	return users, err
}

func queryUsers(ctx context.Context, conn *pgx.Conn, sql string, limit int) ([]User, error) {
	rows, err := conn.Query(ctx, sql, limit)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (User, error) {
		var u User
		err := r.Scan(&u.ID, &u.FirstName, &u.SecondName)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	return users, nil
}

// apiClient makes the few setup calls of Prepare.
type apiClient struct {
	base *url.URL
	hc   *http.Client
}

// call sends body (JSON-encoded unless nil) and decodes a 2xx answer into out.
//
// A 429 (the API limits logins and registrations per client address) is
// waited out as its Retry-After asks, up to maxRetriesOn429 times: setup
// registers and logs in many users from one address.
func (c *apiClient) call(ctx context.Context, method, path, token string, body, out any) error {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		payload = b
	}
	var (
		status int
		data   []byte
	)
	for attempt := 0; ; attempt++ {
		var (
			retryAfter time.Duration
			err        error
		)
		status, data, retryAfter, err = c.do(ctx, method, path, token, payload)
		if err != nil {
			return err
		}
		if status != http.StatusTooManyRequests || attempt == maxRetriesOn429 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s: waiting out 429: %w", method, path, ctx.Err())
		case <-time.After(retryAfter):
		}
	}
	if status < 200 || status > 299 {
		return &statusError{method: method, path: path, status: status, body: snippet(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer %q: %w", method, path, snippet(data), err)
		}
	}
	return nil
}

// maxRetriesOn429 bounds how often one setup call waits out a 429.
const maxRetriesOn429 = 30

// do sends one request and returns its status, its body (at most 1 MiB) and,
// for a 429, how long the server asks to wait (1 s when it does not say).
func (c *apiClient) do(ctx context.Context, method, path, token string, payload []byte) (int, []byte, time.Duration, error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	wait := time.Second
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		wait = time.Duration(secs) * time.Second
	}
	return resp.StatusCode, data, wait, nil
}

// statusError is a setup call answered with a status other than 2xx.
type statusError struct {
	method, path string
	status       int
	body         string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.method, e.path, e.status, e.body)
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// flexibleID decodes an id given as a JSON string or number.
type flexibleID string

func (f *flexibleID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = flexibleID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("id %s is neither a string nor a number", b)
	}
	*f = flexibleID(n.String())
	return nil
}

// register creates a user with made-up names and the password.
func (c *apiClient) register(ctx context.Context, password string) (User, error) {
	// The package-level generator is safe for the concurrent setup calls.
	first := firstNames[rand.IntN(len(firstNames))]
	second := secondNames[rand.IntN(len(secondNames))]
	req := registerBody(first, second, rand.IntN(20000), password)
	var out struct {
		UserID flexibleID `json:"user_id"`
	}
	if err := c.call(ctx, http.MethodPost, "/user/register", "", req, &out); err != nil {
		return User{}, fmt.Errorf("register a user: %w", err)
	}
	if out.UserID == "" {
		return User{}, fmt.Errorf("register a user: the answer has no user_id")
	}
	return User{ID: string(out.UserID), FirstName: first, SecondName: second}, nil
}

// login returns a token for the user.
func (c *apiClient) login(ctx context.Context, id, password string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	err := c.call(ctx, http.MethodPost, "/login", "", map[string]string{"id": id, "password": password}, &out)
	if err != nil {
		return "", fmt.Errorf("log in user %s: %w", id, err)
	}
	if out.Token == "" {
		return "", fmt.Errorf("log in user %s: the answer has no token", id)
	}
	return out.Token, nil
}

// setupParallelism bounds the concurrent setup calls: logins and
// registrations cost a bcrypt hash each on the server.
const setupParallelism = 8

// forEach calls fn for 0..n-1, a few at a time, and returns the first error.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(setupParallelism)
	for i := range n {
		g.Go(func() error { return fn(ctx, i) })
	}
	return g.Wait()
}

// loginSome logs in up to n of users, trying at most 3n of them; users
// whose password differs are passed over.
func (c *apiClient) loginSome(ctx context.Context, users []User, n int, password string) []Session {
	var sessions []Session
	for next := 0; next < len(users) && next < 3*n && len(sessions) < n && ctx.Err() == nil; {
		batch := users[next:min(len(users), 3*n, next+n-len(sessions))]
		next += len(batch)
		got := make([]Session, len(batch))
		_ = forEach(ctx, len(batch), func(ctx context.Context, i int) error {
			if tok, err := c.login(ctx, batch[i].ID, password); err == nil {
				got[i] = Session{UserID: batch[i].ID, Token: tok}
			}
			return nil
		})
		for _, s := range got {
			if s.Token != "" {
				sessions = append(sessions, s)
			}
		}
	}
	return sessions
}

// connect makes each session follow the next few and publish one post.
func (c *apiClient) connect(ctx context.Context, sessions []Session) error {
	return forEach(ctx, len(sessions), func(ctx context.Context, i int) error {
		s := sessions[i]
		for j := 1; j <= 3 && j < len(sessions); j++ {
			friend := sessions[(i+j)%len(sessions)].UserID
			if err := c.call(ctx, http.MethodPut, "/friend/set/"+url.PathEscape(friend), s.Token, nil, nil); err != nil {
				return fmt.Errorf("befriend session users: %w", err)
			}
		}
		post := map[string]string{"text": postTexts[i%len(postTexts)]}
		if err := c.call(ctx, http.MethodPost, "/post/create", s.Token, post, nil); err != nil {
			return fmt.Errorf("publish a post: %w", err)
		}
		return nil
	})
}

// registerBody is the JSON of POST /user/register for a made-up user.
func registerBody(first, second string, ageDays int, password string) map[string]string {
	birth := time.Date(2005, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -ageDays)
	return map[string]string{
		"first_name":  first,
		"second_name": second,
		"birthdate":   birth.Format("2006-01-02"),
		"biography":   "Load test user " + strconv.Itoa(ageDays),
		"city":        cities[ageDays%len(cities)],
		"password":    password,
	}
}

var (
	firstNames  = []string{"Иван", "Пётр", "Анна", "Мария", "Алексей", "Ольга", "Дмитрий", "Елена", "Сергей", "Наталья", "Andrew", "Maria", "Nikolai", "Sofia"}
	secondNames = []string{"Иванов", "Петрова", "Смирнов", "Кузнецова", "Попов", "Соколова", "Лебедев", "Козлова", "Новиков", "Морозова", "Volkov", "Orlova", "Pavlov", "Fedorova"}
	cities      = []string{"Москва", "Санкт-Петербург", "Казань", "Новосибирск", "Екатеринбург", "Самара"}
	postTexts   = []string{"Hello from socnet load", "Привет! Это тестовый пост.", "A day in the life of a load generator", "Replication is working, reads go to the replicas"}
)

// mustJSON encodes a value that cannot fail to encode.
func mustJSON(v map[string]string) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
