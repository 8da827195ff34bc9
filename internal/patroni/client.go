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

// Switchover asks Patroni to hand the leader role from leader to candidate.
func (c *Client) Switchover(ctx context.Context, leader, candidate string) error {
	body := map[string]string{"leader": leader, "candidate": candidate}
	code, err := c.do(ctx, http.MethodPost, "/switchover", body, nil)
	if err != nil {
		return fmt.Errorf("patroni switchover %s -> %s: %w", leader, candidate, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("patroni switchover %s -> %s: status %d", leader, candidate, code)
	}
	return nil
}

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
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w", path, err)
		}
	}
	return resp.StatusCode, nil
}

// httpGet returns the status of a GET, for readiness probes.
func httpGet(ctx context.Context, url string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
