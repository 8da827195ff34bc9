package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
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
