package counter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"socnet/internal/social"
)

// DefaultClientTimeout bounds one request of a Client, connecting included.
const DefaultClientTimeout = 2 * time.Second

// Client talks to counterd's HTTP API. It implements social.UnreadCounter.
// Every error it returns is a *social.Error in the chain: EUNAVAILABLE when
// counterd cannot be reached, times out, answers 5xx or refuses the
// service signature (401), else the code counterd answered with.
type Client struct {
	base   string
	http   *http.Client
	signer *Signer
}

var _ social.UnreadCounter = (*Client)(nil)

// ClientOption changes a Client.
type ClientOption func(*Client)

// WithTimeout bounds each request (default DefaultClientTimeout).
func WithTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.http.Timeout = d }
}

// WithServiceKey signs every request with the shared service key, as a
// counterd that authenticates requires.
func WithServiceKey(key []byte) ClientOption {
	return func(c *Client) { c.signer = NewSigner(key, nil) }
}

// NewClient returns a client of the counterd at baseURL
// (http://127.0.0.1:8091), with its own pool of keep-alive connections.
func NewClient(baseURL string, opts ...ClientOption) *Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	c := &Client{
		base: strings.TrimRight(baseURL, "/"),
		http: &http.Client{Transport: tr, Timeout: DefaultClientTimeout},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Close drops the idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Apply posts a batch to POST /events and returns counterd's answer.
func (c *Client) Apply(ctx context.Context, b Batch) (BatchResult, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return BatchResult{}, fmt.Errorf("apply events: %w", err)
	}
	var res BatchResult
	if err := c.do(ctx, http.MethodPost, "/events", body, &res); err != nil {
		return BatchResult{}, fmt.Errorf("apply events: %w", err)
	}
	if len(res.Results) != len(b.Events) {
		return BatchResult{}, fmt.Errorf("apply events: %d results for %d events", len(res.Results), len(b.Events))
	}
	return res, nil
}

// Unread returns userID's counters (GET /counters/{user_id}).
func (c *Client) Unread(ctx context.Context, userID string) (social.Unread, error) {
	var out CountersJSON
	if err := c.do(ctx, http.MethodGet, "/counters/"+url.PathEscape(userID), nil, &out); err != nil {
		return social.Unread{}, fmt.Errorf("read counters: %w", err)
	}
	u := social.Unread{Total: out.Total, Dialogs: make([]social.DialogUnread, len(out.Dialogs))}
	for i, d := range out.Dialogs {
		u.Dialogs[i] = social.DialogUnread{PeerID: d.UserID, Unread: d.Unread}
	}
	return u, nil
}

// ApplyRead applies the event of r directly, in the reader's session, so
// that the reader's next Unread reflects it. The relay delivers the same
// event later; counterd then finds it a duplicate.
func (c *Client) ApplyRead(ctx context.Context, r social.ReadReceipt) error {
	res, err := c.Apply(ctx, Batch{Events: []Event{EventFromReceipt(r)}, Session: r.UserID})
	if err != nil {
		return err
	}
	switch got := res.Results[0]; {
	case got.Delivered():
		return nil
	case got.Outcome == OutcomeFailed:
		return fmt.Errorf("apply read: %w", &social.Error{Code: social.EUNAVAILABLE, Message: "counter service could not apply the read"})
	default:
		return fmt.Errorf("apply read: counterd answered %s: %s", got.Outcome, got.Reason)
	}
}

// Healthy asks GET /healthz.
func (c *Client) Healthy(ctx context.Context) error {
	var out map[string]string
	return c.do(ctx, http.MethodGet, "/healthz", nil, &out)
}

// do sends one request and decodes a 200 answer into out.
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.signer != nil {
		if err := c.signer.Sign(req, body); err != nil {
			return err
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnavailable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%w: read answer: %w", errUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorJSON
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			e = errorJSON{Code: social.EINTERNAL, Message: http.StatusText(resp.StatusCode)}
		}
		if resp.StatusCode >= 500 {
			return fmt.Errorf("%w: counterd answered %d %s: %s", errUnavailable, resp.StatusCode, e.Code, e.Message)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			// This service's key is not counterd's (missing, rotated on one
			// side only): an operator's problem, not the caller's
			// credentials, and a retry may succeed once the keys agree.
			return fmt.Errorf("%w: counterd refused this service's signature (are both given the same service key?): %s",
				errUnavailable, e.Message)
		}
		return &social.Error{Code: e.Code, Message: e.Message, Fields: e.Fields}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// errUnavailable is the error of a counterd that cannot be reached or
// cannot serve.
var errUnavailable = &social.Error{Code: social.EUNAVAILABLE, Message: "counter service unavailable"}

// IsUnavailable reports whether err says counterd could not be reached or
// could not serve (the caller may retry).
func IsUnavailable(err error) bool {
	return social.ErrorCode(err) == social.EUNAVAILABLE || errors.Is(err, context.DeadlineExceeded)
}
