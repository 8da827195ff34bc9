package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"

	"socnet/internal/httpapi"
	"socnet/internal/social"
)

// coursePath is the course's own contract, the document its reviewers and
// clients hold the API to (api/course/README.md names its source).
const coursePath = "../../api/course/openapi-v1.2.0.json"

var loadCourse = sync.OnceValues(func() (*spec, error) { return loadDocument(coursePath) })

func mustCourse(tb testing.TB) *spec {
	tb.Helper()
	s, err := loadCourse()
	if err != nil {
		tb.Fatalf("%s: %v", coursePath, err)
	}
	return s
}

// errorKind is a row of docs/API.md's table of error kinds.
type errorKind struct{ code, status int }

// extension is a row of docs/API.md's table of extensions to the course:
// an operation ("POST /login", as api/openapi.yaml spells its path) and a
// status, or "any" for an operation the course does not have.
type extension struct{ op, status string }

// contract is what docs/API.md promises about errors and about the course.
type contract struct {
	kinds      map[string]errorKind
	extensions map[extension]string // -> reason
}

var loadContract = sync.OnceValues(func() (*contract, error) {
	f, err := os.Open("../../docs/API.md")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c := &contract{kinds: map[string]errorKind{}, extensions: map[extension]string{}}
	var table string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			table = ""
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		switch {
		case strings.HasPrefix(cells[0], "---"):
			continue
		case table == "" && len(cells) >= 3 && cells[0] == "kind" && cells[1] == "code" && cells[2] == "status":
			table = "kinds"
			continue
		case table == "" && len(cells) >= 3 && cells[0] == "operation" && cells[1] == "status" && cells[2] == "reason":
			table = "extensions"
			continue
		}
		switch table {
		case "kinds":
			code, err1 := strconv.Atoi(cells[1])
			status, err2 := strconv.Atoi(cells[2])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("docs/API.md: bad error kind row %q", line)
			}
			c.kinds[cells[0]] = errorKind{code, status}
		case "extensions":
			if cells[2] == "" {
				return nil, fmt.Errorf("docs/API.md: extension %q without a reason", line)
			}
			c.extensions[extension{cells[0], cells[1]}] = cells[2]
		}
	}
	if len(c.kinds) == 0 || len(c.extensions) == 0 {
		return nil, fmt.Errorf("docs/API.md: no table of error kinds or of extensions")
	}
	return c, sc.Err()
})

func mustContract(tb testing.TB) *contract {
	tb.Helper()
	c, err := loadContract()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// checkCourse checks a response of operation op against the course's
// document: an operation or a status the course lacks must be an extension
// listed in docs/API.md, and every other response must match the course's
// schema.
func (c *client) checkCourse(tb testing.TB, hr *http.Request, r reply, op string) {
	tb.Helper()
	what := hr.Method + " " + hr.URL.Path
	route, params, err := c.course.router.FindRoute(hr)
	if err != nil {
		if !c.extensionUsed(extension{op, "any"}) {
			tb.Errorf("%s: operation %s is neither in the course document nor an extension in docs/API.md", what, op)
		}
		return
	}
	if route.Operation.Responses.Status(r.Status) == nil {
		if !c.extensionUsed(extension{op, strconv.Itoa(r.Status)}) {
			tb.Errorf("%s: status %d of %s is neither in the course document nor an extension in docs/API.md; body: %.300s",
				what, r.Status, op, r.Body)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: hr, PathParams: params, Route: route, Options: c.course.opts,
		},
		Status:  r.Status,
		Header:  r.Header,
		Options: c.course.opts,
	}
	in.SetBodyBytes(r.Body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		tb.Errorf("%s: response %d does not match the course's document: %v\nbody: %.500s", what, r.Status, err, r.Body)
	}
}

// extensionUsed reports whether x is listed in docs/API.md and records that
// an answer used it.
func (c *client) extensionUsed(x extension) bool {
	if _, ok := c.contract.extensions[x]; !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.extensionsSeen == nil {
		c.extensionsSeen = map[extension]bool{}
	}
	c.extensionsSeen[x] = true
	return true
}

// TestCourseExtensions asserts each decision of docs/API.md's table of
// extensions to the course: every row is answered as documented, and the
// client's course check accepts it only because the row is there.
func TestCourseExtensions(t *testing.T) {
	e := mustEnvWith(t, envOptions{wrap: func(d *httpapi.Deps) {
		d.Limits = httpapi.Limits{PerAddr: httpapi.RateLimit{Rate: 0.001, Burst: 1000}, PerUser: httpapi.RateLimit{Rate: 0.001, Burst: 2}}
	}})
	alice, aliceToken := e.mustUser(t, "Alice", "A")
	_, bobToken := e.mustUser(t, "Bob", "B")
	var post string
	e.do(t, request{method: "POST", path: "/post/create", token: aliceToken, body: map[string]string{"text": "mine"}}).
		wantStatus(t, 200).json(t, &post)
	ghostToken, err := e.tokens.Issue(missingID) // a user that does not exist
	if err != nil {
		t.Fatal(err)
	}
	huge := `{"text":"` + strings.Repeat("a", httpapi.MaxBodyBytes) + `"}`
	tests := []struct {
		name   string
		req    request
		status int
		kind   string
	}{
		{"login, wrong password", request{method: "POST", path: "/login", body: map[string]string{"id": alice, "password": "wrong-pw"}}, 401, social.EUNAUTHORIZED},
		{"login, unknown user (the course's 404)", request{method: "POST", path: "/login", body: map[string]string{"id": missingID, "password": password}}, 404, social.ENOTFOUND},
		{"login, too large", request{method: "POST", path: "/login", body: huge}, 413, social.ETOOLARGE},
		{"login, limit of the user", request{method: "POST", path: "/login", body: map[string]string{"id": alice, "password": password}}, 429, social.ETOOMANY},
		{"register, too large", request{method: "POST", path: "/user/register", body: huge}, 413, social.ETOOLARGE},
		{"follow nobody", request{method: "PUT", path: "/friend/set/" + missingID, token: aliceToken}, 404, social.ENOTFOUND},
		{"post as nobody", request{method: "POST", path: "/post/create", token: ghostToken, body: map[string]string{"text": "x"}}, 404, social.ENOTFOUND},
		{"post too large", request{method: "POST", path: "/post/create", token: aliceToken, body: huge}, 413, social.ETOOLARGE},
		{"update another's post", request{method: "PUT", path: "/post/update", token: bobToken, body: map[string]string{"id": post, "text": "x"}}, 403, social.EFORBIDDEN},
		{"update no post", request{method: "PUT", path: "/post/update", token: bobToken, body: map[string]string{"id": missingID, "text": "x"}}, 404, social.ENOTFOUND},
		{"update too large", request{method: "PUT", path: "/post/update", token: bobToken, body: huge}, 413, social.ETOOLARGE},
		{"delete another's post", request{method: "PUT", path: "/post/delete/" + post, token: bobToken}, 403, social.EFORBIDDEN},
		{"delete no post", request{method: "PUT", path: "/post/delete/" + missingID, token: bobToken}, 404, social.ENOTFOUND},
		{"get no post", request{method: "GET", path: "/post/get/" + missingID}, 404, social.ENOTFOUND},
		{"write to nobody", request{method: "POST", path: "/dialog/" + missingID + "/send", token: aliceToken, body: map[string]string{"text": "x"}}, 404, social.ENOTFOUND},
		{"message too large", request{method: "POST", path: "/dialog/" + missingID + "/send", token: aliceToken, body: huge}, 413, social.ETOOLARGE},
		{"unread without a counter", request{method: "GET", path: "/dialog/unread", token: aliceToken}, 503, social.EUNAVAILABLE},
		{"read without a counter", request{method: "PUT", path: "/dialog/" + missingID + "/read", token: aliceToken}, 503, social.EUNAVAILABLE},
		{"healthz", request{method: "GET", path: "/healthz"}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.req).wantStatus(t, tt.status)
			if tt.kind != "" && r.error(t).Kind != tt.kind {
				t.Errorf("kind %q; want %q", r.error(t).Kind, tt.kind)
			}
		})
	}
	// Registration's own limit: a burst of one per address.
	e2 := mustEnvWith(t, envOptions{wrap: func(d *httpapi.Deps) {
		d.Limits = httpapi.Limits{PerAddr: httpapi.RateLimit{Rate: 0.001, Burst: 1}}
	}})
	e2.mustRegister(t, validUser("C", "D"))
	e2.do(t, request{method: "POST", path: "/user/register", body: validUser("C", "D")}).wantStatus(t, 429)

	// Every row of the table was answered.
	seen := map[extension]bool{}
	for _, c := range []*client{e.client, e2.client} {
		for x := range c.extensionsSeen {
			seen[x] = true
		}
	}
	for x := range e.contract.extensions {
		if !seen[x] {
			t.Errorf("docs/API.md lists %s %s as an extension, but no answer of the test used it", x.op, x.status)
		}
	}
}

// TestCourseCheckBites shows that the course check refuses a status the
// course lacks unless docs/API.md lists it, and a body that breaks the
// course's schema.
func TestCourseCheckBites(t *testing.T) {
	e := mustEnv(t)
	full := e.contract
	without := &contract{kinds: full.kinds, extensions: maps.Clone(full.extensions)}
	delete(without.extensions, extension{"POST /login", "401"})
	hdr := http.Header{"X-Request-Id": {"r1"}, "Content-Type": {"application/json"}, "Www-Authenticate": {"Bearer"}}
	wrongPassword := reply{401, hdr, []byte(`{"message":"wrong password","request_id":"r1","code":4010,"kind":"unauthorized"}`)}
	hr, _ := http.NewRequest("POST", e.base+"/login", nil)

	for _, tt := range []struct {
		name     string
		contract *contract
		reply    reply
		refused  bool
	}{
		{"a listed extension", full, wrongPassword, false},
		{"the extension not listed", without, wrongPassword, true},
		{"a string code on a 503", full, reply{503, http.Header{"X-Request-Id": {"r1"}, "Content-Type": {"application/json"}, "Retry-After": {"1"}},
			[]byte(`{"message":"m","request_id":"r1","code":"unavailable"}`)}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			c := &client{base: e.base, http: e.http, spec: e.spec, course: e.course, contract: tt.contract}
			c.checkCourse(rec, hr, tt.reply, "POST /login")
			if got := len(rec.errs) > 0; got != tt.refused {
				t.Errorf("refused %v (%v); want %v", got, rec.errs, tt.refused)
			}
		})
	}
}
