package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"time"
)

// The control API lets another socnet process (the CLI) ask the running
// supervisor to act, so that the two never fight over the nodes. It is
// HTTP with JSON bodies over a unix socket that only the owner can open:
//
//	GET  /v1/ping
//	GET  /v1/clusters                      -> {"clusters": [Status...]}
//	GET  /v1/clusters/{name}               -> Status
//	POST /v1/clusters/{name}/switchover    {"node": "main-2"}          -> Outcome
//	POST /v1/clusters/{name}/promote       {"node": "main-2", "force": false}
//	POST /v1/clusters/{name}/rejoin        {"node": "main-1"}
//	POST /v1/clusters/{name}/stop
//	POST /v1/clusters/{name}/start
//
// Errors are {"error": "...", "refused": true|false}; a refusal is 409.

// opTimeout bounds an operation asked for over the control API.
const opTimeout = 10 * time.Minute

// controlRequest is the body of an operation.
type controlRequest struct {
	Node  string `json:"node"`
	Force bool   `json:"force"`
}

type controlError struct {
	Error   string `json:"error"`
	Refused bool   `json:"refused,omitempty"`
	Op      string `json:"op,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// ServeControl serves the control API for clusters on a unix socket at
// sockPath (mode 0600) until ctx ends. It refuses to start while another
// process serves that socket, and removes a stale socket file.
func ServeControl(ctx context.Context, sockPath string, clusters map[string]*Cluster) error {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	err := NewClient(sockPath).Ping(pctx)
	cancel()
	if err == nil {
		return fmt.Errorf("serve control: another supervisor serves %s", sockPath)
	}
	if err := os.Remove(sockPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("serve control: remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", sockPath)
	if err != nil {
		return fmt.Errorf("serve control: %w", err)
	}
	defer os.Remove(sockPath)
	// Connecting needs write permission; the default umask already denies
	// it to others, this denies it to the group too.
	if err := os.Chmod(sockPath, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("serve control: %w", err)
	}
	srv := &http.Server{Handler: controlHandler(ctx, clusters), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(l)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve control: %w", err)
}

// controlHandler routes the control API. Operations run under base (the
// server's lifetime), not the request's: a client that goes away must not
// leave a switchover half done.
func controlHandler(base context.Context, clusters map[string]*Cluster) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON200(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /v1/clusters", func(w http.ResponseWriter, r *http.Request) {
		names := make([]string, 0, len(clusters))
		for n := range clusters {
			names = append(names, n)
		}
		sort.Strings(names)
		out := struct {
			Clusters []Status `json:"clusters"`
		}{Clusters: []Status{}}
		for _, n := range names {
			s, err := clusters[n].Status(r.Context())
			if err != nil {
				writeError(w, err)
				return
			}
			out.Clusters = append(out.Clusters, s)
		}
		writeJSON200(w, out)
	})
	mux.HandleFunc("GET /v1/clusters/{name}", func(w http.ResponseWriter, r *http.Request) {
		c, ok := clusters[r.PathValue("name")]
		if !ok {
			writeNotFound(w, r.PathValue("name"))
			return
		}
		s, err := c.Status(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON200(w, s)
	})
	mux.HandleFunc("POST /v1/clusters/{name}/{op}", func(w http.ResponseWriter, r *http.Request) {
		c, ok := clusters[r.PathValue("name")]
		if !ok {
			writeNotFound(w, r.PathValue("name"))
			return
		}
		var req controlRequest
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
				writeStatus(w, http.StatusBadRequest, controlError{Error: "bad request body: " + err.Error()})
				return
			}
		}
		ctx, cancel := context.WithTimeout(base, opTimeout)
		defer cancel()
		var out Outcome
		var err error
		switch op := r.PathValue("op"); op {
		case "switchover":
			out, err = c.Switchover(ctx, req.Node)
		case "promote":
			out, err = c.Promote(ctx, req.Node, req.Force)
		case "rejoin":
			out, err = c.Rejoin(ctx, req.Node)
		case "stop":
			if err = c.Stop(ctx); err == nil {
				out.Message = fmt.Sprintf("cluster %s stopped", c.Name())
			}
		case "start":
			if err = c.Start(ctx); err == nil {
				out.Message = fmt.Sprintf("cluster %s started; primary %s", c.Name(), c.Primary())
			}
		default:
			writeStatus(w, http.StatusNotFound, controlError{Error: "unknown operation " + op})
			return
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON200(w, out)
	})
	return mux
}

func writeNotFound(w http.ResponseWriter, name string) {
	writeStatus(w, http.StatusNotFound, controlError{Error: fmt.Sprintf("no cluster %q", name)})
}

func writeError(w http.ResponseWriter, err error) {
	var r *RefusedError
	if errors.As(err, &r) {
		writeStatus(w, http.StatusConflict, controlError{Error: err.Error(), Refused: true, Op: r.Op, Reason: r.Reason})
		return
	}
	writeStatus(w, http.StatusInternalServerError, controlError{Error: redactDSN(err.Error())})
}

func writeJSON200(w http.ResponseWriter, v any) { writeStatus(w, http.StatusOK, v) }

func writeStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to a supervisor's control API.
type Client struct {
	hc *http.Client
}

// NewClient returns a client of the control socket at sockPath. Nothing is
// dialled until a method is called.
func NewClient(sockPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sockPath)
		},
		DisableKeepAlives: true,
	}
	return &Client{hc: &http.Client{Transport: tr}}
}

// Ping reports whether a supervisor answers on the socket.
func (cl *Client) Ping(ctx context.Context) error {
	var out map[string]bool
	return cl.do(ctx, http.MethodGet, "/v1/ping", nil, &out)
}

// Status returns the status of every cluster the supervisor runs.
func (cl *Client) Status(ctx context.Context) ([]Status, error) {
	var out struct {
		Clusters []Status `json:"clusters"`
	}
	if err := cl.do(ctx, http.MethodGet, "/v1/clusters", nil, &out); err != nil {
		return nil, err
	}
	return out.Clusters, nil
}

// Switchover asks the supervisor for Cluster.Switchover.
func (cl *Client) Switchover(ctx context.Context, cluster, node string) (Outcome, error) {
	return cl.op(ctx, cluster, "switchover", controlRequest{Node: node})
}

// Promote asks the supervisor for Cluster.Promote.
func (cl *Client) Promote(ctx context.Context, cluster, node string, force bool) (Outcome, error) {
	return cl.op(ctx, cluster, "promote", controlRequest{Node: node, Force: force})
}

// Rejoin asks the supervisor for Cluster.Rejoin.
func (cl *Client) Rejoin(ctx context.Context, cluster, node string) (Outcome, error) {
	return cl.op(ctx, cluster, "rejoin", controlRequest{Node: node})
}

// Stop asks the supervisor for Cluster.Stop.
func (cl *Client) Stop(ctx context.Context, cluster string) (Outcome, error) {
	return cl.op(ctx, cluster, "stop", controlRequest{})
}

// Start asks the supervisor for Cluster.Start.
func (cl *Client) Start(ctx context.Context, cluster string) (Outcome, error) {
	return cl.op(ctx, cluster, "start", controlRequest{})
}

func (cl *Client) op(ctx context.Context, cluster, op string, req controlRequest) (Outcome, error) {
	var out Outcome
	err := cl.do(ctx, http.MethodPost, "/v1/clusters/"+cluster+"/"+op, req, &out)
	return out, err
}

// do sends one request; a refusal comes back as a *RefusedError.
func (cl *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("control %s: %w", path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://socnet"+path, rd)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var ce controlError
		if err := json.NewDecoder(resp.Body).Decode(&ce); err != nil {
			return fmt.Errorf("control %s: %s", path, resp.Status)
		}
		if ce.Refused {
			return &RefusedError{Op: ce.Op, Reason: ce.Reason}
		}
		return fmt.Errorf("control %s: %s", path, ce.Error)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("control %s: decode: %w", path, err)
	}
	return nil
}
