package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"socnet/internal/auth"
	"socnet/internal/dbroute"
	"socnet/internal/httpapi"
	"socnet/internal/pgtest"
	"socnet/internal/postgres"
	"socnet/internal/social"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// password is the password of every user the tests register.
const password = "secret-pass"

// env is a server on a fresh, migrated database and a client that checks
// every response against api/openapi.yaml.
type env struct {
	*client
	db       *dbroute.DB
	users    *postgres.UserStore
	friends  *postgres.FriendStore
	posts    *postgres.PostStore
	dialogs  *postgres.DialogStore
	key      []byte
	tokens   *auth.Tokens
	registry *prometheus.Registry
	logs     *syncBuffer
	handler  http.Handler
}

// envOptions change what newEnv builds.
type envOptions struct {
	// dsn is the database to serve; "" means a fresh one from pgtest.
	dsn string
	// nodes, when set, are the DSNs of a replicated cluster to serve,
	// already migrated; dsn is then unused.
	nodes []string
	// db, when set, may change the router's configuration.
	db func(*dbroute.Config)
	// wrap, when set, may replace the stores the server uses.
	wrap func(*httpapi.Deps)
}

func mustEnv(tb testing.TB) *env { return mustEnvWith(tb, envOptions{}) }

func mustEnvWith(tb testing.TB, opts envOptions) *env {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	cfg := dbroute.Config{Name: "main", Nodes: opts.nodes, MaxConns: 4}
	if len(opts.nodes) == 0 {
		dsn := opts.dsn
		if dsn == "" {
			dsn = pgtest.MustDatabase(tb)
		}
		if err := postgres.Migrate(ctx, dsn, log); err != nil {
			tb.Fatalf("migrate: %v", err)
		}
		cfg.Primary = dsn
	}
	if opts.db != nil {
		opts.db(&cfg)
	}
	db, err := dbroute.Open(ctx, cfg, log)
	if err != nil {
		tb.Fatalf("open database: %v", err)
	}
	tb.Cleanup(db.Close)

	key, err := auth.LoadOrCreateKey(filepath.Join(tb.TempDir(), "token.key"))
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{
		db:       db,
		users:    postgres.NewUserStore(db),
		friends:  postgres.NewFriendStore(db),
		posts:    postgres.NewPostStore(db),
		dialogs:  postgres.NewDialogStore(db),
		key:      key,
		tokens:   auth.NewTokens(key, time.Hour, nil),
		registry: prometheus.NewRegistry(),
		logs:     logs,
	}
	deps := httpapi.Deps{
		Users: e.users, Friends: e.friends, Posts: e.posts, Dialogs: e.dialogs,
		Tokens: e.tokens, Registry: e.registry, Hasher: auth.Hasher{Cost: bcrypt.MinCost},
	}
	if opts.wrap != nil {
		opts.wrap(&deps)
	}
	e.handler = httpapi.NewServer(log, deps)
	srv := httptest.NewServer(e.handler)
	tb.Cleanup(srv.Close)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("server log:\n%s", logs.String())
		}
	})
	e.client = &client{base: srv.URL, http: srv.Client(), spec: mustSpec(tb), course: mustCourse(tb), contract: mustContract(tb)}
	return e
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// spec is api/openapi.yaml, loaded once.
type spec struct {
	doc    *openapi3.T
	router routers.Router
	opts   *openapi3filter.Options
}

var loadSpec = sync.OnceValues(func() (*spec, error) { return loadDocument("../../api/openapi.yaml") })

// loadDocument loads and validates an OpenAPI document for checking
// responses.
func loadDocument(path string) (*spec, error) {
	ctx := context.Background()
	doc, err := openapi3.NewLoader().LoadFromFile(path)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("invalid document: %w", err)
	}
	doc.Servers = nil // match the test server's address
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	// Ids on the wire are canonical lower-case UUIDs.
	uuidFormat := openapi3.NewRegexpFormatValidator(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.EnableFormatValidation(),
			openapi3.WithStringFormatValidator("uuid", uuidFormat),
		},
	}
	return &spec{doc: doc, router: router, opts: opts}, nil
}

func mustSpec(tb testing.TB) *spec {
	tb.Helper()
	s, err := loadSpec()
	if err != nil {
		tb.Fatalf("api/openapi.yaml: %v", err)
	}
	return s
}

// client sends requests to the server and checks every response against the
// OpenAPI document and the error rules of the API.
type client struct {
	base string
	http *http.Client
	spec *spec
	// course is the course's document and contract what docs/API.md
	// says of errors and of the deviations from the course.
	course   *spec
	contract *contract
	// extensionsSeen records the extension rows that answers used.
	mu             sync.Mutex
	extensionsSeen map[extension]bool
}

// reply is a response read whole.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// request describes a request for client.do.
type request struct {
	method, path string
	token        string // sent as a bearer token when not empty
	// body is sent as is when it is []byte or string, as JSON otherwise;
	// nil sends no body.
	body   any
	header map[string]string
}

// do sends req and checks the response: it must carry a sane X-Request-Id,
// match api/openapi.yaml for its route and status (a response to a path of
// no route must be an Error), and every error must be a JSON Error whose
// request_id is the header's and whose code matches the status.
func (c *client) do(tb testing.TB, req request) reply {
	tb.Helper()
	var body io.Reader
	switch b := req.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, req.method, c.base+req.path, body)
	if err != nil {
		tb.Fatal(err)
	}
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.token)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		tb.Fatalf("%s %s: %v", req.method, req.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", req.method, req.path, err)
	}
	r := reply{Status: resp.StatusCode, Header: resp.Header, Body: data}
	c.check(tb, hr, r)
	return r
}

// errorJSON is the error body of the API.
type errorJSON struct {
	Message   string            `json:"message"`
	RequestID string            `json:"request_id"`
	Code      int               `json:"code"`
	Kind      string            `json:"kind"`
	Fields    map[string]string `json:"fields"`
}

func (c *client) check(tb testing.TB, hr *http.Request, r reply) {
	tb.Helper()
	what := hr.Method + " " + hr.URL.Path
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 64 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		tb.Errorf("%s: X-Request-Id %q; want 1 to 64 of [A-Za-z0-9._-]", what, id)
	}
	if r.Status >= 400 && hr.Method != http.MethodHead {
		var e errorJSON
		dec := json.NewDecoder(bytes.NewReader(r.Body))
		dec.DisallowUnknownFields()
		switch err := dec.Decode(&e); {
		case err != nil:
			tb.Errorf("%s: %d with a body that is not an error: %v\n%s", what, r.Status, err, r.Body)
		case e.RequestID != id:
			tb.Errorf("%s: error request_id %q; header says %q", what, e.RequestID, id)
		case c.contract.kinds[e.Kind] != (errorKind{e.Code, r.Status}):
			tb.Errorf("%s: status %d with error kind %q code %d; docs/API.md says %+v", what, r.Status, e.Kind, e.Code, c.contract.kinds[e.Kind])
		case e.Message == "":
			tb.Errorf("%s: error without a message: %s", what, r.Body)
		case (e.Kind == social.EINVALID) != (e.Fields != nil):
			tb.Errorf("%s: error kind %q with fields %v; want fields exactly for %q", what, e.Kind, e.Fields, social.EINVALID)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			tb.Errorf("%s: error Content-Type %q; want application/json", what, got)
		}
	}
	if r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "1" {
		tb.Errorf("%s: 503 with Retry-After %q; want 1", what, r.Header.Get("Retry-After"))
	}
	if r.Status == http.StatusTooManyRequests {
		if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 {
			tb.Errorf("%s: 429 with Retry-After %q; want whole seconds, at least 1", what, r.Header.Get("Retry-After"))
		}
	}

	route, params, err := c.spec.router.FindRoute(hr)
	if err != nil {
		// No operation of the API: only the router's own errors may answer.
		if r.Status != 404 && r.Status != 405 {
			tb.Errorf("%s: %d for a request the API does not define (%v); want 404 or 405", what, r.Status, err)
		}
		var v any
		if err := json.Unmarshal(r.Body, &v); err != nil {
			tb.Errorf("%s: body is not JSON: %v", what, err)
			return
		}
		if err := c.spec.doc.Components.Schemas["Error"].Value.VisitJSON(v); err != nil {
			tb.Errorf("%s: body does not match Error: %v", what, err)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: hr, PathParams: params, Route: route, Options: c.spec.opts,
		},
		Status:  r.Status,
		Header:  r.Header,
		Options: c.spec.opts,
	}
	in.SetBodyBytes(r.Body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		tb.Errorf("%s: response %d does not match api/openapi.yaml: %v\nbody: %.500s", what, r.Status, err, r.Body)
	}
	if resp := route.Operation.Responses.Status(r.Status); resp != nil && len(resp.Value.Content) == 0 && len(r.Body) != 0 {
		tb.Errorf("%s: %d has a body the document does not define: %.200s", what, r.Status, r.Body)
	}
	c.checkCourse(tb, hr, r, hr.Method+" "+route.Path)
}

// wantStatus fails tb unless r has the status.
func (r reply) wantStatus(tb testing.TB, status int) reply {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d; want %d; body: %.1000s", r.Status, status, r.Body)
	}
	return r
}

// json decodes the body into v.
func (r reply) json(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.Body, err)
	}
}

// error decodes an error body.
func (r reply) error(tb testing.TB) errorJSON {
	tb.Helper()
	var e errorJSON
	r.json(tb, &e)
	return e
}

// newUser describes a registration with valid defaults.
type newUser struct {
	FirstName  string `json:"first_name"`
	SecondName string `json:"second_name"`
	Birthdate  string `json:"birthdate"`
	Biography  string `json:"biography"`
	City       string `json:"city"`
	Password   string `json:"password"`
}

func validUser(first, second string) newUser {
	return newUser{FirstName: first, SecondName: second, Birthdate: "1990-04-01",
		Biography: "reads books", City: "Moscow", Password: password}
}

// mustRegister registers u and returns the new user's id.
func (c *client) mustRegister(tb testing.TB, u newUser) string {
	tb.Helper()
	var out struct {
		UserID string `json:"user_id"`
	}
	c.do(tb, request{method: "POST", path: "/user/register", body: u}).wantStatus(tb, 200).json(tb, &out)
	if out.UserID == "" {
		tb.Fatal("register: empty user_id")
	}
	return out.UserID
}

// mustLogin logs the user in with the tests' password and returns the token.
func (c *client) mustLogin(tb testing.TB, id string) string {
	tb.Helper()
	var out struct {
		Token string `json:"token"`
	}
	c.do(tb, request{method: "POST", path: "/login", body: map[string]string{"id": id, "password": password}}).
		wantStatus(tb, 200).json(tb, &out)
	return out.Token
}

// mustUser registers a user and logs in; it returns the id and a token.
func (c *client) mustUser(tb testing.TB, first, second string) (string, string) {
	tb.Helper()
	id := c.mustRegister(tb, validUser(first, second))
	return id, c.mustLogin(tb, id)
}

// counts are the rows of each table of the social schema.
type counts struct{ Users, Friends, Posts, Messages, Outbox int }

func (e *env) mustCounts(tb testing.TB) counts {
	tb.Helper()
	var c counts
	err := e.db.ReadPrimary(context.Background(), func(q dbroute.Querier) error {
		return q.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM users), (SELECT count(*) FROM friends), (SELECT count(*) FROM posts),
			(SELECT count(*) FROM messages), (SELECT count(*) FROM outbox)`).
			Scan(&c.Users, &c.Friends, &c.Posts, &c.Messages, &c.Outbox)
	})
	if err != nil {
		tb.Fatalf("count rows: %v", err)
	}
	return c
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
