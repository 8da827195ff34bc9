package load_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"socnet/internal/load"
	"socnet/internal/pgtest"
)

// healthzServerEnv makes the test binary serve GET /healthz instead of
// running tests: BenchmarkHealthz measures the generator against a server in
// another process, so that the server's CPU is not the generator's.
const healthzServerEnv = "SOCNET_LOAD_TEST_HEALTHZ_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(healthzServerEnv) == "1" {
		serveHealthz()
		return
	}
	pgtest.Main(m)
}

// serveHealthz serves /healthz on a free loopback port, prints the address
// and serves until its stdin closes.
func serveHealthz() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	body := []byte(`{"status":"ok"}`)
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}))
	}()
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // EOF when the parent goes
}

// MustHealthzProcess starts the test binary as a /healthz server in its own
// process and returns its base URL; the process ends in tb.Cleanup.
func MustHealthzProcess(tb testing.TB) string {
	tb.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), healthzServerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start healthz server: %v", err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("healthz server address: %v", err)
	}
	return "http://" + strings.TrimSpace(line)
}

// MustRun runs cfg and fails tb on error.
func MustRun(tb testing.TB, cfg load.Config) *load.Result {
	tb.Helper()
	res, err := load.Run(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Run: %v", err)
	}
	return res
}

// mix returns a workload of one scenario.
func mix(scenario string) []load.MixPart { return []load.MixPart{{Scenario: scenario, Weight: 1}} }

// fakeAPI is an in-memory stand-in for the socnet HTTP API, enough for the
// generator: it checks what the generator sends and counts it by route.
type fakeAPI struct {
	*httptest.Server
	mu     sync.Mutex
	users  map[string]fakeUser
	nextID int
	hits   map[string]*atomic.Int64
	// problems collects requests the real API would refuse.
	problems []string
}

type fakeUser struct{ first, second, password string }

func (f *fakeAPI) problem(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.problems) < 20 {
		f.problems = append(f.problems, fmt.Sprintf(format, args...))
	}
}

// AddUser makes the fake know a user that exists elsewhere (the database).
func (f *fakeAPI) AddUser(id, first, second, password string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[id] = fakeUser{first, second, password}
}

// Hits returns how many requests the route pattern served.
func (f *fakeAPI) Hits(pattern string) int64 { return f.hits[pattern].Load() }

// Problems returns the requests the real API would have refused.
func (f *fakeAPI) Problems() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.problems...)
}

// MustFakeAPI starts a fake socnet API, closed in tb.Cleanup.
func MustFakeAPI(tb testing.TB) *fakeAPI {
	tb.Helper()
	f := &fakeAPI{users: map[string]fakeUser{}, hits: map[string]*atomic.Int64{}}
	mux := http.NewServeMux()
	handle := func(pattern string, auth bool, h func(w http.ResponseWriter, r *http.Request)) {
		f.hits[pattern] = &atomic.Int64{}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			f.hits[pattern].Add(1)
			if auth {
				tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer tok-")
				f.mu.Lock()
				_, known := f.users[tok]
				f.mu.Unlock()
				if !ok || !known {
					f.problem("%s %s: bad token %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
					http.Error(w, `{"message":"unauthorized"}`, http.StatusUnauthorized)
					return
				}
			}
			if r.Method == http.MethodPost && r.Header.Get("Content-Type") != "application/json" {
				f.problem("%s %s: content type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
			}
			h(w, r)
		})
	}
	decode := func(w http.ResponseWriter, r *http.Request, v any) bool {
		if err := json.NewDecoder(r.Body).Decode(v); err != nil {
			f.problem("%s %s: body: %v", r.Method, r.URL.Path, err)
			http.Error(w, `{"message":"bad json"}`, http.StatusBadRequest)
			return false
		}
		return true
	}
	exists := func(id string) bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		_, ok := f.users[id]
		return ok
	}
	handle("POST /user/register", false, func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		if !decode(w, r, &in) {
			return
		}
		if _, err := time.Parse("2006-01-02", in["birthdate"]); err != nil || in["first_name"] == "" ||
			in["second_name"] == "" || len(in["password"]) < 6 {
			f.problem("register: bad fields %v", in)
			http.Error(w, `{"message":"invalid"}`, http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.nextID++
		id := fmt.Sprintf("00000000-0000-0000-0000-%012d", f.nextID)
		f.users[id] = fakeUser{in["first_name"], in["second_name"], in["password"]}
		f.mu.Unlock()
		fmt.Fprintf(w, `{"user_id":%q}`, id)
	})
	handle("POST /login", false, func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		if !decode(w, r, &in) {
			return
		}
		f.mu.Lock()
		u, ok := f.users[in["id"]]
		f.mu.Unlock()
		if !ok || u.password != in["password"] {
			http.Error(w, `{"message":"no"}`, http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, `{"token":"tok-%s"}`, in["id"])
	})
	handle("GET /user/get/{id}", false, func(w http.ResponseWriter, r *http.Request) {
		if !exists(r.PathValue("id")) {
			f.problem("get: unknown user %s", r.PathValue("id"))
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
			return
		}
		fmt.Fprint(w, `{"id":"x"}`)
	})
	handle("GET /user/search", false, func(w http.ResponseWriter, r *http.Request) {
		first, last := r.URL.Query().Get("first_name"), r.URL.Query().Get("last_name")
		if n, m := len([]rune(first)), len([]rune(last)); n < 2 || n > 4 || m < 2 || m > 4 {
			f.problem("search: prefixes %q %q", first, last)
		}
		found := false
		f.mu.Lock()
		for _, u := range f.users {
			if strings.HasPrefix(u.first, first) && strings.HasPrefix(u.second, last) {
				found = true
				break
			}
		}
		f.mu.Unlock()
		if !found {
			f.problem("search: no user matches %q %q", first, last)
		}
		fmt.Fprint(w, `[]`)
	})
	handle("PUT /friend/set/{id}", true, func(w http.ResponseWriter, r *http.Request) {
		if !exists(r.PathValue("id")) {
			f.problem("friend: unknown user %s", r.PathValue("id"))
		}
	})
	handle("POST /post/create", true, func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		if decode(w, r, &in) {
			if in["text"] == "" {
				f.problem("post: empty text")
			}
			fmt.Fprint(w, `"p1"`)
		}
	})
	handle("GET /post/feed", true, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `[]`) })
	handle("POST /dialog/{id}/send", true, func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		if decode(w, r, &in) && !exists(r.PathValue("id")) {
			f.problem("dialog: unknown user %s", r.PathValue("id"))
		}
	})
	handle("GET /dialog/{id}/list", true, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `[]`) })
	handle("GET /dialog/unread", true, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"total":0,"dialogs":[]}`) })
	handle("GET /healthz", false, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"status":"ok"}`) })
	f.Server = httptest.NewServer(mux)
	tb.Cleanup(f.Close)
	return f
}
