package stack

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
	"slices"
	"strings"
	"time"

	"socnet/internal/cluster"
)

// The control API lets another socnet process (the CLI) ask the running
// `up` to act on its clusters, so that the two never fight over the nodes.
// It serves any Engine: HTTP with JSON bodies over a unix socket that only
// the owner can open:
//
//	GET  /v1/ping
//	GET  /v1/clusters                      -> {"engine": "socnet", "clusters": [Status...]}
//	POST /v1/clusters/{name}/switchover    {"node": "main-2"}          -> Outcome
//	POST /v1/clusters/{name}/promote       {"node": "main-2", "force": false}
//	POST /v1/clusters/{name}/rejoin        {"node": "main-1"}
//	POST /v1/clusters/{name}/stop
//	POST /v1/clusters/{name}/start
//
// Errors are {"error": "...", "refused": true|false}: a refusal (also of an
// operation the engine does not support) is 409, an unknown cluster 404.

// Operator is an engine that also takes the operator's commands beyond
// Switchover. The socnet engine is one; an engine that is not answers those
// commands with a refusal saying the engine does not support them.
type Operator interface {
	// Promote makes node the primary of a cluster whose primary is dead;
	// it refuses when node may lack acknowledged commits, unless force.
	Promote(ctx context.Context, clusterName, node string, force bool) (cluster.Outcome, error)
	// Rejoin rewinds (or rebuilds) node and makes it follow the primary.
	Rejoin(ctx context.Context, clusterName, node string) (cluster.Outcome, error)
	// StopCluster stops every node of the cluster; its supervision leaves
	// it alone until StartCluster.
	StopCluster(ctx context.Context, clusterName string) (cluster.Outcome, error)
	// StartCluster starts a cluster that was brought up before, in its
	// persisted roles.
	StartCluster(ctx context.Context, clusterName string) (cluster.Outcome, error)
}

// Operations of the control API and of `socnet cluster`.
const (
	OpSwitchover = "switchover"
	OpPromote    = "promote"
	OpRejoin     = "rejoin"
	OpStop       = "stop"
	OpStart      = "start"
)

// Op is one operator's command on a cluster.
type Op struct {
	Kind    string // OpSwitchover, ...
	Cluster string
	Node    string // for switchover, promote, rejoin
	Force   bool   // for promote
}

// UnknownClusterError is an operation on a cluster the engine does not run.
type UnknownClusterError struct {
	Cluster string
	Known   []string
}

func (e *UnknownClusterError) Error() string {
	if len(e.Known) == 0 {
		return fmt.Sprintf("no cluster %q", e.Cluster)
	}
	return fmt.Sprintf("no cluster %q (there are: %s)", e.Cluster, strings.Join(e.Known, ", "))
}

// Do runs op on eng in this process. It returns a *cluster.RefusedError for
// an operation the cluster refused or the engine does not support, and an
// *UnknownClusterError for a cluster the engine does not run.
func Do(ctx context.Context, eng Engine, op Op) (cluster.Outcome, error) {
	if !slices.Contains(eng.Clusters(), op.Cluster) {
		return cluster.Outcome{}, &UnknownClusterError{Cluster: op.Cluster, Known: eng.Clusters()}
	}
	if op.Kind == OpSwitchover {
		return eng.Switchover(ctx, op.Cluster, op.Node)
	}
	o, ok := eng.(Operator)
	if !ok {
		switch op.Kind {
		case OpPromote, OpRejoin, OpStop, OpStart:
			return cluster.Outcome{}, &cluster.RefusedError{Op: op.Kind,
				Reason: fmt.Sprintf("not supported by the %s engine (it has switchover)", eng.Name())}
		}
	}
	switch op.Kind {
	case OpPromote:
		return o.Promote(ctx, op.Cluster, op.Node, op.Force)
	case OpRejoin:
		return o.Rejoin(ctx, op.Cluster, op.Node)
	case OpStop:
		return o.StopCluster(ctx, op.Cluster)
	case OpStart:
		return o.StartCluster(ctx, op.Cluster)
	}
	return cluster.Outcome{}, fmt.Errorf("unknown operation %q", op.Kind)
}

// opTimeout bounds an operation asked for over the control API.
const opTimeout = 10 * time.Minute

// controlRequest is the body of an operation.
type controlRequest struct {
	Node  string `json:"node"`
	Force bool   `json:"force"`
}

// controlStatus is the body of GET /v1/clusters.
type controlStatus struct {
	Engine   string           `json:"engine"`
	Clusters []cluster.Status `json:"clusters"`
}

type controlError struct {
	Error   string `json:"error"`
	Refused bool   `json:"refused,omitempty"`
	Op      string `json:"op,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Cluster is set on a 404: the cluster that does not exist.
	Cluster string   `json:"cluster,omitempty"`
	Known   []string `json:"known,omitempty"`
}

// ServeControl serves the control API for eng on the unix socket at
// sockPath (mode 0600) until ctx ends. It refuses to start while another
// process serves that socket, and removes a stale socket file. Every
// engine's Supervise serves it on the home's Control().
func ServeControl(ctx context.Context, sockPath string, eng Engine) error {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	err := NewClient(sockPath).Ping(pctx)
	cancel()
	if err == nil {
		return fmt.Errorf("serve control: another process serves %s", sockPath)
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
	srv := &http.Server{Handler: controlHandler(ctx, eng), ReadHeaderTimeout: 5 * time.Second}
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
func controlHandler(base context.Context, eng Engine) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		writeControl(w, http.StatusOK, map[string]string{"engine": eng.Name()})
	})
	mux.HandleFunc("GET /v1/clusters", func(w http.ResponseWriter, r *http.Request) {
		sts, err := eng.Status(r.Context())
		if err != nil {
			writeControlError(w, err)
			return
		}
		if sts == nil {
			sts = []cluster.Status{}
		}
		writeControl(w, http.StatusOK, controlStatus{Engine: eng.Name(), Clusters: sts})
	})
	mux.HandleFunc("POST /v1/clusters/{name}/{op}", func(w http.ResponseWriter, r *http.Request) {
		var req controlRequest
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
				writeControl(w, http.StatusBadRequest, controlError{Error: "bad request body: " + err.Error()})
				return
			}
		}
		op := Op{Kind: r.PathValue("op"), Cluster: r.PathValue("name"), Node: req.Node, Force: req.Force}
		switch op.Kind {
		case OpSwitchover, OpPromote, OpRejoin, OpStop, OpStart:
		default:
			writeControl(w, http.StatusNotFound, controlError{Error: "unknown operation " + op.Kind})
			return
		}
		ctx, cancel := context.WithTimeout(base, opTimeout)
		defer cancel()
		out, err := Do(ctx, eng, op)
		if err != nil {
			writeControlError(w, err)
			return
		}
		writeControl(w, http.StatusOK, out)
	})
	return mux
}

// writeControlError maps an error to its status: the control API's one
// error mapping.
func writeControlError(w http.ResponseWriter, err error) {
	var r *cluster.RefusedError
	var u *UnknownClusterError
	switch {
	case errors.As(err, &r):
		writeControl(w, http.StatusConflict, controlError{Error: err.Error(), Refused: true, Op: r.Op, Reason: r.Reason})
	case errors.As(err, &u):
		writeControl(w, http.StatusNotFound, controlError{Error: err.Error(), Cluster: u.Cluster, Known: u.Known})
	default:
		writeControl(w, http.StatusInternalServerError, controlError{Error: cluster.RedactDSN(err.Error())})
	}
}

func writeControl(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to the control API of a running `up`.
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

// Ping reports whether a running `up` answers on the socket.
func (cl *Client) Ping(ctx context.Context) error {
	var out map[string]string
	return cl.do(ctx, http.MethodGet, "/v1/ping", nil, &out)
}

// Status returns the running engine's name and its clusters' status.
func (cl *Client) Status(ctx context.Context) (engine string, sts []cluster.Status, err error) {
	var out controlStatus
	if err := cl.do(ctx, http.MethodGet, "/v1/clusters", nil, &out); err != nil {
		return "", nil, err
	}
	return out.Engine, out.Clusters, nil
}

// Do asks the running `up` to run op (stack.Do there).
func (cl *Client) Do(ctx context.Context, op Op) (cluster.Outcome, error) {
	var out cluster.Outcome
	err := cl.do(ctx, http.MethodPost, "/v1/clusters/"+op.Cluster+"/"+op.Kind, controlRequest{Node: op.Node, Force: op.Force}, &out)
	return out, err
}

// do sends one request; a refusal comes back as a *cluster.RefusedError,
// an unknown cluster as an *UnknownClusterError.
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
		switch {
		case ce.Refused:
			return &cluster.RefusedError{Op: ce.Op, Reason: ce.Reason}
		case ce.Cluster != "":
			return &UnknownClusterError{Cluster: ce.Cluster, Known: ce.Known}
		}
		return fmt.Errorf("control %s: %s", path, ce.Error)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("control %s: decode: %w", path, err)
	}
	return nil
}
