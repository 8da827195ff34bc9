package patroni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Member is one node as Patroni's GET /cluster reports it.
type Member struct {
	Name     string          `json:"name"`
	Role     string          `json:"role"` // leader, sync_standby, replica
	State    string          `json:"state"`
	APIURL   string          `json:"api_url"`
	Host     string          `json:"host"`
	Port     int             `json:"port"`
	Timeline int             `json:"timeline"`
	Lag      json.RawMessage `json:"lag,omitempty"` // bytes, or "unknown"
	Tags     map[string]any  `json:"tags,omitempty"`
}

// ClusterState is Patroni's GET /cluster document.
type ClusterState struct {
	Members []Member `json:"members"`
}

// Leader returns the leader member, if any.
func (c ClusterState) Leader() (Member, bool) { return c.withRole("leader") }

// SyncStandby returns the synchronous standby, if any.
func (c ClusterState) SyncStandby() (Member, bool) { return c.withRole("sync_standby") }

func (c ClusterState) withRole(role string) (Member, bool) {
	for _, m := range c.Members {
		if m.Role == role {
			return m, true
		}
	}
	return Member{}, false
}

// Client talks to one agent's REST API; any agent answers for the cluster.
type Client struct {
	BaseURL string // http://127.0.0.1:RESTPORT
	HTTP    *http.Client
	// Auth is sent with every request when set (Spec.REST).
	Auth *Credential
}

// NewClient returns a client of the agent at baseURL with a short timeout.
func NewClient(baseURL string) *Client {
	return &Client{BaseURL: baseURL, HTTP: &http.Client{Timeout: 3 * time.Second}}
}

// Cluster returns the members, roles, timelines and lags.
func (c *Client) Cluster(ctx context.Context) (ClusterState, error) {
	var st ClusterState
	code, err := c.do(ctx, http.MethodGet, "/cluster", nil, &st)
	if err != nil {
		return ClusterState{}, fmt.Errorf("patroni cluster: %w", err)
	}
	if code != http.StatusOK {
		return ClusterState{}, fmt.Errorf("patroni cluster: status %d", code)
	}
	return st, nil
}

// IsPrimary reports whether this agent's node is the leader (GET /primary).
func (c *Client) IsPrimary(ctx context.Context) (bool, error) {
	code, err := c.do(ctx, http.MethodGet, "/primary", nil, nil)
	if err != nil {
		return false, fmt.Errorf("patroni primary: %w", err)
	}
	return code == http.StatusOK, nil
}

// Switchover asks Patroni to hand the leader role from leader to candidate;
// candidate "" lets Patroni choose (the synchronous standby). It returns
// once Patroni reports the switch done, with Patroni's reason when it
// refuses.
func (c *Client) Switchover(ctx context.Context, leader, candidate string) error {
	body := map[string]string{"leader": leader}
	if candidate != "" {
		body["candidate"] = candidate
	}
	// Patroni answers once the new leader runs: longer than a query.
	long := *c
	hc := *c.HTTP
	hc.Timeout = 2 * time.Minute
	long.HTTP = &hc
	var msg rawText
	code, err := long.do(ctx, http.MethodPost, "/switchover", body, &msg)
	if err != nil {
		return fmt.Errorf("patroni switchover %s -> %q: %w", leader, candidate, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("patroni switchover %s -> %q: status %d: %s", leader, candidate, code, msg)
	}
	return nil
}

// HistoryEntry is one line of GET /history: a timeline switch.
type HistoryEntry struct {
	Timeline  int
	LSN       int64
	Reason    string
	At        time.Time // zero when Patroni did not record it
	NewLeader string    // "" when Patroni did not record it
}

// History returns the cluster's timeline switches, oldest first.
func (c *Client) History(ctx context.Context) ([]HistoryEntry, error) {
	var lines [][]json.RawMessage
	code, err := c.do(ctx, http.MethodGet, "/history", nil, &lines)
	if err != nil {
		return nil, fmt.Errorf("patroni history: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("patroni history: status %d", code)
	}
	out := make([]HistoryEntry, 0, len(lines))
	for _, l := range lines {
		var h HistoryEntry
		var at string
		for i, dst := range []any{&h.Timeline, &h.LSN, &h.Reason, &at, &h.NewLeader} {
			if i < len(l) {
				_ = json.Unmarshal(l[i], dst) // a field of another type stays zero
			}
		}
		if at != "" {
			if t, err := time.Parse("2006-01-02T15:04:05.999999-07:00", at); err == nil {
				h.At = t
			} else if t, err := time.Parse(time.RFC3339Nano, at); err == nil {
				h.At = t
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// DynamicConfig returns the cluster-wide configuration kept in etcd
// (GET /config).
func (c *Client) DynamicConfig(ctx context.Context) (map[string]any, error) {
	var cfg map[string]any
	code, err := c.do(ctx, http.MethodGet, "/config", nil, &cfg)
	if err != nil {
		return nil, fmt.Errorf("patroni config: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("patroni config: status %d", code)
	}
	return cfg, nil
}

// PatchConfig changes the cluster-wide configuration (PATCH /config).
func (c *Client) PatchConfig(ctx context.Context, patch map[string]any) error {
	var msg rawText
	code, err := c.do(ctx, http.MethodPatch, "/config", patch, &msg)
	if err != nil {
		return fmt.Errorf("patroni patch config: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("patroni patch config: status %d: %s", code, msg)
	}
	return nil
}

// Reload makes the agent read its configuration file again (POST /reload).
func (c *Client) Reload(ctx context.Context) error {
	var msg rawText
	code, err := c.do(ctx, http.MethodPost, "/reload", nil, &msg)
	if err != nil {
		return fmt.Errorf("patroni reload: %w", err)
	}
	if code != http.StatusOK && code != http.StatusAccepted {
		return fmt.Errorf("patroni reload: status %d: %s", code, msg)
	}
	return nil
}

// rawText receives a response body that is not JSON.
type rawText string

func (c *Client) do(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Auth != nil {
		req.SetBasicAuth(c.Auth.Username, c.Auth.Password)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if t, ok := out.(*rawText); ok {
		*t = rawText(bytes.TrimSpace(b))
		return resp.StatusCode, nil
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w", path, err)
		}
	}
	return resp.StatusCode, nil
}

// httpGet returns the status of a GET through hc, for readiness probes.
func httpGet(ctx context.Context, hc *http.Client, url string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// post sends a POST that Patroni answers once it has acted, which may take
// longer than a query; a status other than 200 is an error with its text.
func (c *Client) post(ctx context.Context, path string, body any) error {
	long := *c
	hc := *c.HTTP
	hc.Timeout = 2 * time.Minute
	long.HTTP = &hc
	var msg rawText
	code, err := long.do(ctx, http.MethodPost, path, body, &msg)
	if err != nil {
		return fmt.Errorf("patroni %s: %w", path, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("patroni %s: status %d: %s", path, code, msg)
	}
	return nil
}

// Failover asks Patroni (POST /failover) to make candidate the leader of a
// cluster without a healthy leader.
func (c *Client) Failover(ctx context.Context, candidate string) error {
	return c.post(ctx, "/failover", map[string]string{"candidate": candidate})
}

// Reinitialize asks the member this client talks to (POST /reinitialize)
// to rebuild its data directory from the leader and follow it.
func (c *Client) Reinitialize(ctx context.Context) error {
	return c.post(ctx, "/reinitialize", map[string]bool{"force": true})
}
