package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"socnet/internal/pgtest"
)

// TestServeEndToEnd runs the real command on port 0 against a real database
// and walks the API as a client would: register, log in, search, follow,
// post, read the feed, send and list a message, then shut down cleanly.
func TestServeEndToEnd(t *testing.T) {
	dsn := pgtest.MustDatabase(t)
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"socnet", "serve", "--http", "127.0.0.1:0", "--db", dsn, "--admin-db", dsn,
			"--key-file", filepath.Join(dir, "token.key"), "--addr-file", addrFile, "--bcrypt-cost", "4",
			"--metrics-addr", "127.0.0.1:0"},
			func(string) string { return "" }, &stdout, &stderr)
	}()
	base := "http://" + waitAddrFile(t, addrFile, done, 30*time.Second)
	waitHealthy(t, base, 10*time.Second)

	c := &client{t: t, base: base}
	alice := c.register("Константин", "Осипов", "pw-alice")
	bob := c.register("Константин", "Осокин", "pw-bob")
	token := c.login(alice, "pw-alice")
	bobToken := c.login(bob, "pw-bob")

	var found []map[string]any
	c.do("GET", "/user/search?first_name=Конст&last_name=Ос", "", nil, 200, &found)
	if len(found) != 2 {
		t.Fatalf("search found %d users, want 2: %v", len(found), found)
	}
	c.do("PUT", "/friend/set/"+bob, token, nil, 200, nil)
	var postID string
	c.do("POST", "/post/create", bobToken, map[string]any{"text": "hello from bob"}, 200, &postID)
	var feed []map[string]any
	c.do("GET", "/post/feed?offset=0&limit=10", token, nil, 200, &feed)
	if len(feed) != 1 || feed[0]["id"] != postID || feed[0]["author_user_id"] != bob {
		t.Fatalf("feed = %v, want bob's post %s", feed, postID)
	}
	c.do("POST", "/dialog/"+bob+"/send", token, map[string]any{"text": "hi bob"}, 200, nil)
	var msgs []map[string]any
	c.do("GET", "/dialog/"+alice+"/list", bobToken, nil, 200, &msgs)
	if len(msgs) != 1 || msgs[0]["from"] != alice || msgs[0]["text"] != "hi bob" {
		t.Fatalf("dialog = %v", msgs)
	}
	c.do("GET", "/user/get/"+alice, "", nil, 200, nil)
	c.do("POST", "/user/register", "", map[string]any{"first_name": 1}, 400, nil)

	// Metrics are on their own listener, not on the API port.
	c.do("GET", "/metrics", "", nil, 404, nil)
	m := regexp.MustCompile(`metrics listening on (http://\S+)`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("stdout does not announce the metrics listener: %q", stdout.String())
	}
	resp, err := http.Get(m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `socnet_http_requests_total{code="200",route="POST /login"} 2`) {
		t.Errorf("the metrics listener does not serve the API's metrics:\n%.2000s", metrics)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop within 15s of cancellation")
	}
	if !strings.Contains(stdout.String(), "listening on") {
		t.Errorf("stdout does not announce the address: %q", stdout.String())
	}
}

func TestServeRequiresDB(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"socnet", "serve"}, func(string) string { return "" }, &out, &out)
	if err == nil || exitCode(err) != 2 {
		t.Fatalf("serve without --db: err = %v (exit %d), want a usage error", err, exitCode(err))
	}
}

func TestServeRequestTimeoutMustBePositive(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"socnet", "serve", "--db", "postgres://x@127.0.0.1:1/x",
		"--request-timeout", "0s"}, func(string) string { return "" }, &out, &out)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--request-timeout") {
		t.Fatalf("serve with --request-timeout 0: err = %v (exit %d), want a usage error", err, exitCode(err))
	}
}

// client is a tiny API client for end-to-end tests.
type client struct {
	t    *testing.T
	base string
}

func (c *client) do(method, path, token string, body any, wantStatus int, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		c.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, wantStatus, data)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		c.t.Errorf("%s %s: no X-Request-Id", method, path)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
}

func (c *client) register(first, second, password string) string {
	var r struct {
		UserID string `json:"user_id"`
	}
	c.do("POST", "/user/register", "", map[string]any{"first_name": first, "second_name": second,
		"birthdate": "1990-05-17", "biography": "тестовый пользователь", "city": "Москва", "password": password}, 200, &r)
	return r.UserID
}

func (c *client) login(id, password string) string {
	var r struct {
		Token string `json:"token"`
	}
	c.do("POST", "/login", "", map[string]any{"id": id, "password": password}, 200, &r)
	return r.Token
}

// waitAddrFile waits until the server wrote its bound address, failing early
// if a command returned. The error it took from done goes back, so that a
// cleanup that waits for every command still finds it.
func waitAddrFile(t *testing.T, path string, done chan error, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("a command returned before the server listened: %v", err)
		default:
		}
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return string(bytes.TrimSpace(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no address in %s after %v", path, timeout)
	return ""
}

// waitHealthy polls /healthz until it answers 200.
func waitHealthy(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s/healthz not healthy after %v", base, timeout)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a running command.
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
