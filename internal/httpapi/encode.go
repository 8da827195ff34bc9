package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"socnet/internal/httpserve"
	"socnet/internal/social"
)

// MaxBodyBytes bounds a request body; a larger one is refused with 413.
const MaxBodyBytes = 1 << 20

// codeMethodNotAllowed is the error code of a request whose path exists with
// other methods. It is not a social code: only routing produces it.
const codeMethodNotAllowed = "method_not_allowed"

// errorKind is what the API tells a client about one kind of error: its
// HTTP status (httpserve.Status, the one mapping every service shares) and
// its stable numeric code (the course contract's integer "code"; docs/API.md
// lists them). Numbers are never reused or changed.
type errorKind struct {
	status int
	number int
}

// errorNumbers are the stable numbers of the error codes.
var errorNumbers = map[string]int{
	social.EINVALID:      4000,
	social.EUNAUTHORIZED: 4010,
	social.EFORBIDDEN:    4030,
	social.ENOTFOUND:     4040,
	codeMethodNotAllowed: 4050,
	social.ECONFLICT:     4090,
	social.ETOOLARGE:     4130,
	social.ETOOMANY:      4290,
	social.EINTERNAL:     5000,
	social.EUNAVAILABLE:  5030,
}

// errorKindOf returns the kind of code; an unknown code is internal.
func errorKindOf(code string) errorKind {
	n, ok := errorNumbers[code]
	switch {
	case !ok:
		return errorKind{http.StatusInternalServerError, errorNumbers[social.EINTERNAL]}
	case code == codeMethodNotAllowed:
		return errorKind{http.StatusMethodNotAllowed, n}
	}
	return errorKind{httpserve.Status(code), n}
}

// errorCode is httpserve.ErrorCode: an unclassified database error is
// EUNAVAILABLE, not a bug.
func errorCode(err error) string { return httpserve.ErrorCode(err) }

// errorBody is the JSON of every error response.
type errorBody struct {
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	// Code is the kind's stable number and Kind its name (social.E*).
	Code int    `json:"code"`
	Kind string `json:"kind"`
	// Fields, for EINVALID only, maps each bad input to its problem.
	Fields any `json:"fields,omitempty"`
}

// writeError answers the request with err. Errors that are not the client's
// fault (5xx) get a generic message and are kept for the access log, so that
// internals reach the log and never the client.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := errorCode(err)
	kind := errorKindOf(code)
	status := kind.status
	info := infoFrom(r.Context())
	if status == http.StatusInternalServerError {
		code = social.EINTERNAL
	}
	body := errorBody{Message: social.ErrorMessage(err), RequestID: info.id, Code: kind.number, Kind: code}
	switch {
	case code == social.EINVALID:
		var e *social.Error
		fields := map[string]string{}
		if errors.As(err, &e) && e.Fields != nil {
			fields = e.Fields
		}
		body.Fields = fields
	case code == social.EUNAVAILABLE:
		w.Header().Set("Retry-After", "1")
		if social.ErrorCode(err) != social.EUNAVAILABLE {
			body.Message = "service unavailable, retry later"
		}
	case status == http.StatusInternalServerError:
		body.Message = "internal error"
	case code == social.EUNAUTHORIZED:
		w.Header().Set("WWW-Authenticate", "Bearer")
	case code == social.ETOOMANY:
		w.Header().Set("Retry-After", retryAfterSeconds(err))
	}
	if status >= 500 && info.err == nil {
		info.err = err
	}
	writeJSON(w, r, status, body)
}

// encode answers 200 with v as JSON.
func encode(w http.ResponseWriter, r *http.Request, v any) {
	writeJSON(w, r, http.StatusOK, v)
}

// writeEmpty answers 200 with no body.
func writeEmpty(w http.ResponseWriter) {
	w.Header()["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusOK)
}

var (
	contentTypeJSON = []string{"application/json"}
	bufPool         = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// maxPooledBuf keeps the pool from holding on to the memory of rare large
// bodies.
const maxPooledBuf = 64 << 10

func getBuf() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

func putBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBuf {
		b.Reset()
		bufPool.Put(b)
	}
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	buf := getBuf()
	defer putBuf(buf)
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		// Only a bug can make the API's own types unencodable.
		if _, ok := v.(errorBody); !ok {
			writeError(w, r, fmt.Errorf("encode response: %w", err))
		}
		return
	}
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(buf.Len())}
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// decode reads the request body as exactly one JSON value into v, which must
// point to a struct of the API. It refuses, with EINVALID or ETOOLARGE: a
// body over MaxBodyBytes, invalid UTF-8 (encoding/json would silently
// replace it), malformed JSON, a value of the wrong type, unknown fields and
// anything after the value.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	buf := getBuf()
	defer putBuf(buf)
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxBodyBytes)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			refuseRest(w, r)
			return social.Errorf(social.ETOOLARGE, "request body is larger than %d bytes", MaxBodyBytes)
		}
		return invalidBody("could not be read")
	}
	body := buf.Bytes()
	if !utf8.Valid(body) {
		return invalidBody("must be valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	for _, c := range body[dec.InputOffset():] {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return invalidBody("must hold a single JSON object")
		}
	}
	return nil
}

func invalidBody(problem string) error {
	return social.Invalid(map[string]string{"body": problem})
}

// decodeError turns an encoding/json error into an EINVALID naming the field.
func decodeError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return invalidBody("is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidBody("is truncated JSON")
	case errors.As(err, &syntax):
		return invalidBody(fmt.Sprintf("is malformed JSON near byte %d", syntax.Offset))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return invalidBody("must be a JSON object")
		}
		return social.Invalid(map[string]string{typ.Field: "must be " + jsonType(typ.Type.Kind())})
	}
	// encoding/json reports unknown fields only as text.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, err := strconv.Unquote(name); err == nil {
			name = n
		}
		return social.Invalid(map[string]string{truncate(name, maxEchoedName): "is not a known field"})
	}
	return fmt.Errorf("decode request body: %w", err)
}

// maxEchoedName bounds how much of a client's unknown field name an error
// repeats back.
const maxEchoedName = 64

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func jsonType(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	case reflect.Bool:
		return "a boolean"
	default:
		return "a number"
	}
}
