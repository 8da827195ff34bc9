package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/feed/feedtest"
	"socnet/internal/httpapi"
	"socnet/internal/pgtest"
	"socnet/internal/social"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// limitedEnv is a server with the limits, whose clock the test moves.
func limitedEnv(t *testing.T, limits httpapi.Limits) (*env, *fakeClock) {
	clock := &fakeClock{now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	e := mustEnvWith(t, envOptions{wrap: func(d *httpapi.Deps) {
		d.Limits = limits
		d.Now = clock.Now
	}})
	return e, clock
}

func from(addr string) map[string]string { return map[string]string{"X-Forwarded-For": addr} }

func loginAs(id, pw, addr string) request {
	return request{method: "POST", path: "/login", body: map[string]string{"id": id, "password": pw}, header: from(addr)}
}

func TestBruteForceLoginIsLimited(t *testing.T) {
	e, clock := limitedEnv(t, httpapi.Limits{
		PerAddr:        httpapi.RateLimit{Rate: 1, Burst: 5},
		PerUser:        httpapi.RateLimit{Rate: 0.1, Burst: 3},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	register := func(first, addr string) string {
		var out struct {
			UserID string `json:"user_id"`
		}
		e.do(t, request{method: "POST", path: "/user/register", body: validUser(first, "P"), header: from(addr)}).
			wantStatus(t, 200).json(t, &out)
		return out.UserID
	}
	victim := register("Victim", "198.51.100.1")
	other := register("Other", "198.51.100.2")
	const attacker = "203.0.113.7"

	var got []int
	for i := range 6 {
		got = append(got, e.do(t, loginAs(victim, fmt.Sprintf("guess-%d", i), attacker)).Status)
	}
	// Three guesses spend the victim's bucket, two more the attacker's own.
	if diff := cmp.Diff([]int{401, 401, 401, 429, 429, 429}, got); diff != "" {
		t.Errorf("statuses of 6 guesses (-want +got):\n%s", diff)
	}
	r := e.do(t, loginAs(victim, "guess-7", attacker)).wantStatus(t, 429)
	if e := r.error(t); e.Kind != social.ETOOMANY || e.Code != 4290 || !strings.Contains(e.Message, "address") {
		t.Errorf("a flooded address: %+v; want too_many naming the address", e)
	}
	// Other users log in, from anywhere but the flooding address.
	e.do(t, loginAs(other, password, "198.51.100.9")).wantStatus(t, 200)
	// The victim's own logins wait for the user's bucket: every attempt
	// counts, which is what stops a guess spread over many addresses.
	r = e.do(t, loginAs(victim, password, "198.51.100.1")).wantStatus(t, 429)
	if got := r.Header.Get("Retry-After"); got != "10" {
		t.Errorf("Retry-After %q; want 10 (one attempt per 10 s)", got)
	}
	clock.Advance(10 * time.Second)
	e.do(t, loginAs(victim, password, "198.51.100.1")).wantStatus(t, 200)
	// The attacker's address refilled too, but the victim's bucket is
	// empty again.
	e.do(t, loginAs(victim, "guess-8", attacker)).wantStatus(t, 429)
}

func TestForwardedForIgnoredFromUntrustedPeers(t *testing.T) {
	e, _ := limitedEnv(t, httpapi.Limits{PerAddr: httpapi.RateLimit{Rate: 1, Burst: 2}})
	// No trusted proxy: every request is from the test's 127.0.0.1,
	// whatever the headers claim.
	for i := range 3 {
		e.do(t, request{method: "POST", path: "/user/register", body: map[string]string{"first_name": "x"},
			header: map[string]string{"X-Forwarded-For": fmt.Sprintf("192.0.2.%d", i)}}).wantStatus(t, 400)
	}
	// Bad input spends nothing; valid registrations do.
	for i, want := range []int{200, 200, 429} {
		r := e.do(t, request{method: "POST", path: "/user/register", body: validUser("A", "B"),
			header: map[string]string{"X-Forwarded-For": fmt.Sprintf("192.0.2.%d", i), "X-Real-IP": fmt.Sprintf("192.0.2.%d", i)}})
		if r.Status != want {
			t.Fatalf("registration %d: %d; want %d: %s", i, r.Status, want, r.Body)
		}
	}
	if got := e.mustCounts(t).Users; got != 2 {
		t.Errorf("%d users; want 2: a refused registration writes nothing", got)
	}
}

func TestTrustedProxyChain(t *testing.T) {
	e, _ := limitedEnv(t, httpapi.Limits{
		PerAddr:        httpapi.RateLimit{Rate: 0.001, Burst: 1},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
	})
	tests := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"client behind two proxies", map[string]string{"X-Forwarded-For": "192.0.2.1, 10.1.1.1"}, 404},
		// The same client, whatever it claims before the first proxy.
		{"spoofed hop", map[string]string{"X-Forwarded-For": "1.1.1.1, 192.0.2.1, 10.1.1.1"}, 429},
		{"another client", map[string]string{"X-Forwarded-For": "192.0.2.2"}, 404},
		{"X-Real-IP", map[string]string{"X-Real-IP": "192.0.2.3"}, 404},
		{"X-Real-IP again", map[string]string{"X-Real-IP": "192.0.2.3"}, 429},
		{"IPv6 client by its /64", map[string]string{"X-Forwarded-For": "2001:db8:1:2::1"}, 404},
		{"same /64", map[string]string{"X-Forwarded-For": "2001:db8:1:2::ffff"}, 429},
		{"no header: the proxy itself", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request{method: "POST", path: "/login", body: map[string]string{"id": missingID, "password": password}, header: tt.header}
			e.do(t, req).wantStatus(t, tt.want)
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := httpapi.ParseTrustedProxies("10.0.0.0/8, 192.168.1.7,fd00::/8 ::ffff:10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("10.1.2.3/32")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := httpapi.ParseTrustedProxies("10.0.0.0/8,proxy.local"); err == nil {
		t.Error("a host name was accepted as a trusted proxy")
	}
}

func TestSearchOffsetIsCapped(t *testing.T) {
	e := mustEnv(t)
	e.mustRegister(t, validUser("Ivan", "Petrov"))
	search := func(offset int) reply {
		return e.do(t, request{method: "GET", path: fmt.Sprintf("/user/search?first_name=I&last_name=P&offset=%d", offset)})
	}
	search(social.MaxSearchOffset).wantStatus(t, 200)
	for _, offset := range []int{social.MaxSearchOffset + 1, 1<<31 - 1} {
		r := search(offset).wantStatus(t, 400)
		if diff := cmp.Diff(map[string]string{"offset": "must be from 0 to 10000"}, r.error(t).Fields); diff != "" {
			t.Errorf("offset %d (-want +got):\n%s", offset, diff)
		}
	}
}

// TestOversizedBodyGets413 sends an 8 MiB body as Python's urllib does:
// the whole body first, and only then reads. The server must drain the
// excess so that the client reads the 413 instead of a connection reset.
func TestOversizedBodyGets413(t *testing.T) {
	e := mustEnv(t)
	for _, path := range []string{"/user/register", "/login"} {
		t.Run(path, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(2 * time.Minute))
			const size = 8 << 20
			body := `{"biography":"` + strings.Repeat("a", size-len(`{"biography":""}`)) + `"}`
			head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, len(body))
			if _, err := conn.Write([]byte(head + body)); err != nil {
				t.Fatalf("writing the whole body: %v", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 413 || !resp.Close {
				t.Fatalf("status %d, close %v; want 413 and the connection closed", resp.StatusCode, resp.Close)
			}
			var got errorJSON
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.Kind != social.ETOOLARGE || got.Code != 4130 {
				t.Errorf("body %+v, %v; want kind too_large, code 4130", got, err)
			}
		})
	}
}

// TestLimitsSharedAcrossServers: two API servers over one Redis spend from
// one bucket per address and one per user, as they do behind a balancer;
// each server's own buckets take over while Redis is down.
func TestLimitsSharedAcrossServers(t *testing.T) {
	rds := feedtest.MustRedis(t)
	rdb := rds.Client(t)
	dsn := pgtest.MustDatabase(t)
	limits := httpapi.Limits{
		// Rates low enough that nothing refills during the test.
		PerAddr:        httpapi.RateLimit{Rate: 0.001, Burst: 4},
		PerUser:        httpapi.RateLimit{Rate: 0.001, Burst: 3},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Shared:         rdb,
	}
	servers := make([]*env, 2)
	for i := range servers {
		servers[i] = mustEnvWith(t, envOptions{dsn: dsn, wrap: func(d *httpapi.Deps) { d.Limits = limits }})
	}
	var out struct {
		UserID string `json:"user_id"`
	}
	// One address, alternating servers: the address's burst (4) in all,
	// not 4 per server.
	var got []int
	for i := range 6 {
		r := servers[i%2].do(t, request{method: "POST", path: "/user/register", body: validUser(fmt.Sprintf("Shared%c", 'a'+i), "P"), header: from("203.0.113.7")})
		got = append(got, r.Status)
		if r.Status == 200 {
			r.json(t, &out)
		}
	}
	if diff := cmp.Diff([]int{200, 200, 200, 200, 429, 429}, got); diff != "" {
		t.Errorf("registrations from one address over two servers (-want +got):\n%s", diff)
	}
	victim := out.UserID

	// One user, from a new address each time, alternating servers: the
	// user's burst (3) in all. Wrong passwords, so 401 until limited.
	got = nil
	for i := range 5 {
		got = append(got, servers[i%2].do(t, loginAs(victim, fmt.Sprintf("guess-%d", i), fmt.Sprintf("198.51.100.%d", 10+i))).Status)
	}
	if diff := cmp.Diff([]int{401, 401, 401, 429, 429}, got); diff != "" {
		t.Errorf("guesses at one user over two servers (-want +got):\n%s", diff)
	}
	n, err := rdb.Exists(context.Background(), "ratelimit:v1:user:"+victim).Result()
	if err != nil || n != 1 {
		t.Errorf("the user's bucket in Redis: exists=%d err=%v", n, err)
	}

	// Redis down: each server limits alone, with buckets of its own
	// (full at first): a fresh user gets its burst per server, no more.
	servers[0].do(t, request{method: "POST", path: "/user/register", body: validUser("Later", "P"), header: from("198.51.100.2")}).
		wantStatus(t, 200).json(t, &out)
	later := out.UserID
	rds.Kill(t)
	for _, s := range servers {
		for i := range 3 {
			s.do(t, loginAs(later, fmt.Sprintf("g-%d", i), fmt.Sprintf("192.0.2.%d", 10+i))).wantStatus(t, 401)
		}
		s.do(t, loginAs(later, "g-x", "192.0.2.99")).wantStatus(t, 429)
	}
}

// TestSharedBucketRefills: a shared bucket refills at its rate by Redis's
// clock, and expires from Redis once it would be full again.
func TestSharedBucketRefills(t *testing.T) {
	rdb := feedtest.MustRedis(t).Client(t)
	e := mustEnvWith(t, envOptions{wrap: func(d *httpapi.Deps) {
		d.Limits = httpapi.Limits{PerAddr: httpapi.RateLimit{Rate: 10, Burst: 1}, Shared: rdb,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	}})
	register := func(first string) reply {
		return e.do(t, request{method: "POST", path: "/user/register", body: validUser(first, "P"), header: from("203.0.113.9")})
	}
	register("Ra").wantStatus(t, 200)
	if got := register("Rb").wantStatus(t, 429).Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1 (a token back within 100 ms)", got)
	}
	time.Sleep(200 * time.Millisecond) // two tokens' worth; the burst holds one
	register("Rc").wantStatus(t, 200)
	ttl, err := rdb.PTTL(context.Background(), "ratelimit:v1:addr:203.0.113.9").Result()
	if err != nil || ttl <= 0 || ttl > 2*time.Second {
		t.Errorf("the bucket's expiry: %v (%v), want within the time to refill plus a second", ttl, err)
	}
}
