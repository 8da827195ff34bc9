package httpapi

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"socnet/internal/social"
)

// validID reports whether s is a UUID in its canonical 36-character form.
func validID(s string) bool {
	return len(s) == 36 && uuid.Validate(s) == nil
}

// normalID returns a valid id in lower case, the form the stores return.
func normalID(s string) string { return strings.ToLower(s) }

// pathID returns the path value name of r, which must be a UUID.
func pathID(r *http.Request, name string) (string, error) {
	id := r.PathValue(name)
	if !validID(id) {
		return "", social.Invalid(map[string]string{name: "must be a UUID"})
	}
	return normalID(id), nil
}

// queryInt returns the query parameter name as an int, def when it is
// absent or empty, and records a problem in p when it is not a 32-bit integer.
func queryInt(q url.Values, name string, def int, p map[string]string) int {
	s := q.Get(name)
	if s == "" {
		return def
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		p[name] = "must be an integer"
		return def
	}
	return int(n)
}
