package counter

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"socnet/internal/auth"
	"socnet/internal/social"
)

// Headers of a signed internal request (docs/COUNTER.md, "Service
// authentication").
const (
	HeaderTimestamp = "X-Socnet-Timestamp" // Unix milliseconds when signed
	HeaderNonce     = "X-Socnet-Nonce"     // 32 hex digits, new per request
	HeaderSignature = "X-Socnet-Signature" // hex HMAC-SHA256, see signature
)

// Defaults of a Verifier.
const (
	// DefaultAuthWindow is how far a request's timestamp may be from
	// counterd's clock, either way: network delay plus clock skew between
	// hosts kept by NTP.
	DefaultAuthWindow = 30 * time.Second
	// DefaultMaxNonces bounds the replay cache: enough for 10,000 requests a
	// second over twice the default window, about 40 MB at most.
	DefaultMaxNonces = 600_000
)

// signatureVersion starts the signed text, so that a signature made for
// anything else with the same key never verifies here.
const signatureVersion = "socnet-service-v1"

// LoadServiceKey reads the shared service key from the file at path with
// internal/auth's key loader, which refuses a file that others may read or
// write, that is not a regular file or that holds a key of the wrong size.
// Unlike the token key it is never created here: a service that made its own
// key would only ever be refused by its peers. `socnet up` creates it.
func LoadServiceKey(path string) ([]byte, error) {
	if _, err := os.Lstat(path); err != nil {
		return nil, fmt.Errorf("service key: %w", err)
	}
	key, err := auth.LoadOrCreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("service key: %w", err)
	}
	return key, nil
}

// Signer signs the requests of a Client with the shared service key.
type Signer struct {
	key []byte
	now func() time.Time
}

// NewSigner returns a Signer with key; now nil means time.Now.
func NewSigner(key []byte, now func() time.Time) *Signer {
	if now == nil {
		now = time.Now
	}
	return &Signer{key: bytes.Clone(key), now: now}
}

// Sign sets the authentication headers of req, whose body is body.
func (s *Signer) Sign(req *http.Request, body []byte) error {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	ts := strconv.FormatInt(s.now().UnixMilli(), 10)
	n := hex.EncodeToString(nonce[:])
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderNonce, n)
	req.Header.Set(HeaderSignature, signature(s.key, req.Method, req.URL.RequestURI(), ts, n, sha256.Sum256(body)))
	return nil
}

// signature is the hex HMAC-SHA256, under key, of the request's method, its
// target (path and query as sent), the timestamp, the nonce and the SHA-256
// of the body, one per line after the version.
func signature(key []byte, method, target, ts, nonce string, bodySum [sha256.Size]byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s\n%s\n%s\n%s\n%s\n%x", signatureVersion, method, target, ts, nonce, bodySum)
	return hex.EncodeToString(m.Sum(nil))
}

// Verifier checks signed requests: a valid signature under the shared key,
// a timestamp within the window of the local clock, and a nonce not seen in
// that window. It remembers at most a bounded number of nonces; when full it
// forgets the oldest and from then on refuses requests signed no later than
// the forgotten one, so that no replay can slip through a forgotten nonce.
type Verifier struct {
	key    []byte
	window time.Duration
	max    int
	now    func() time.Time

	mu    sync.Mutex
	seen  map[string]int64 // nonce -> timestamp (Unix ms)
	order []seenNonce      // in the order they were seen
	head  int              // order[:head] are forgotten
	floor int64            // requests signed at or before are refused
}

type seenNonce struct {
	nonce string
	ts    int64
}

// NewVerifier returns a Verifier for key; zero window and maxNonces mean
// the defaults, now nil means time.Now.
func NewVerifier(key []byte, window time.Duration, maxNonces int, now func() time.Time) *Verifier {
	if window <= 0 {
		window = DefaultAuthWindow
	}
	if maxNonces <= 0 {
		maxNonces = DefaultMaxNonces
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{key: bytes.Clone(key), window: window, max: maxNonces, now: now, seen: map[string]int64{}}
}

// Wrap returns h behind the check: a request that fails it is answered 401
// with the JSON error body and never reaches h; a body over maxEventsBody
// is 413. The body h reads is the one that was verified.
func (v *Verifier) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := v.verify(w, r); err != nil {
			if social.ErrorCode(err) == social.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Socnet-HMAC-SHA256 realm="socnet-internal"`)
			}
			writeError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// unauthorized is the error of a request that fails the check.
func unauthorized(msg string) error {
	return &social.Error{Code: social.EUNAUTHORIZED, Message: msg}
}

func (v *Verifier) verify(w http.ResponseWriter, r *http.Request) error {
	tsText, nonce, sig := r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderNonce), r.Header.Get(HeaderSignature)
	if tsText == "" || nonce == "" || sig == "" {
		return unauthorized("the request is not signed with the service key")
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil || len(nonce) != 32 || !isHex(nonce) {
		return unauthorized("malformed service signature headers")
	}
	now := v.now().UnixMilli()
	switch d := time.Duration(now-ts) * time.Millisecond; {
	case d > v.window:
		return unauthorized(fmt.Sprintf("the request was signed %v ago by this server's clock; at most %v is accepted", d, v.window))
	case d < -v.window:
		return unauthorized(fmt.Sprintf("the request was signed %v ahead of this server's clock; at most %v is accepted", -d, v.window))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEventsBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return social.Errorf(social.ETOOLARGE, "request body is larger than %d bytes", maxEventsBody)
		}
		return social.Invalid(map[string]string{"body": "could not be read"})
	}
	want := signature(v.key, r.Method, r.RequestURI, tsText, nonce, sha256.Sum256(body))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return unauthorized("bad service signature")
	}
	if !v.remember(nonce, ts, now) {
		return unauthorized("replayed request")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return nil
}

// remember records nonce, signed at ts, and reports whether it is new: not
// seen within the window and signed after everything forgotten.
func (v *Verifier) remember(nonce string, ts, now int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	// Forget what has left the window: such requests are refused anyway.
	expired := now - v.window.Milliseconds()
	for v.head < len(v.order) && v.order[v.head].ts < expired {
		delete(v.seen, v.order[v.head].nonce)
		v.head++
	}
	if ts <= v.floor {
		return false
	}
	if _, dup := v.seen[nonce]; dup {
		return false
	}
	for len(v.seen) >= v.max {
		old := v.order[v.head]
		delete(v.seen, old.nonce)
		v.head++
		v.floor = max(v.floor, old.ts)
	}
	if ts <= v.floor {
		return false
	}
	v.seen[nonce] = ts
	v.order = append(v.order, seenNonce{nonce, ts})
	if v.head > len(v.order)/2 && v.head > 1024 {
		v.order = append(v.order[:0:0], v.order[v.head:]...)
		v.head = 0
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
