package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
)

// cmdRelay runs the outbox relay: it delivers the dialogs database's
// outbox to counterd while it holds the relay lock.
func cmdRelay(ctx context.Context, e *env, args []string) error {
	fs := newFlags("relay", e)
	mainDB := fs.String("main-db", "", "DSNs of the dialogs database's nodes, DSN[,DSN...]; the relay works on the primary")
	counterURL := fs.String("counter", "http://127.0.0.1:8091", "base URL of counterd")
	httpAddr := fs.String("http", "127.0.0.1:8092", "address of the relay's /metrics and /healthz (empty: none)")
	batch := fs.Int("batch", counter.DefaultRelayBatch, "most events per delivery")
	poll := fs.Duration("poll", counter.DefaultRelayPoll, "pause when nothing is due")
	attempts := fs.Int("max-attempts", counter.DefaultRelayMaxAttempts, "failures of one event before it moves to the dead-letter table")
	backoffMax := fs.Duration("backoff-max", counter.DefaultRelayBackoffMax, "longest pause between retries")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on one delivery to counterd")
	maxBacklog := fs.Int("max-backlog", counter.DefaultMaxBacklog, "outbox backlog above which the relay alerts (log, metric, /healthz); messages are still accepted")
	keyFile := fs.String("service-key-file", "", "file (0600) holding the key requests to counterd are signed with (without it they are unsigned)")
	if err := fs.parse(args); err != nil {
		return err
	}
	mains := dbroute.SplitDSNList(*mainDB)
	switch {
	case len(mains) == 0:
		return usageError{errors.New("relay: --main-db (or SOCNET_MAIN_DB) is required")}
	case !strings.HasPrefix(*counterURL, "http://") && !strings.HasPrefix(*counterURL, "https://"):
		return usageError{fmt.Errorf("relay: --counter %q: want an http:// or https:// URL", *counterURL)}
	case *batch < 1 || *batch > counter.MaxBatch:
		return usageError{fmt.Errorf("relay: --batch must be from 1 to %d", counter.MaxBatch)}
	case *attempts < 1:
		return usageError{errors.New("relay: --max-attempts must be at least 1")}
	case *maxBacklog < 1:
		return usageError{errors.New("relay: --max-backlog must be at least 1")}
	}
	warnArgvPasswords(e, args, "main-db")

	var relay *counter.Relay
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	clientOpts, err := counterClientOptions(e, *keyFile)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	client := counter.NewClient(*counterURL, append(clientOpts, counter.WithTimeout(*timeout))...)
	defer client.Close()
	relay, err = counter.NewRelay(counter.RelayConfig{
		MainDSNs: mains, Counter: client, Batch: *batch, Poll: *poll, MaxAttempts: *attempts,
		Backoff: counter.Backoff{Max: *backoffMax}, MaxBacklog: int64(*maxBacklog), Registry: reg,
	}, e.log)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return runBesideHTTP(ctx, e, "relay", *httpAddr, reg, func() string {
		return fmt.Sprintf(`{"status":"ok","active":%t,"backlog_over_max":%t}`, relay.Active(), relay.OverMaxBacklog())
	}, relay.Run)
}

// runBesideHTTP runs work until it returns or ctx ends. When addr is set it
// serves /metrics from reg and /healthz (health's JSON) there meanwhile; the
// first of the two to end stops the other, and work's error comes first.
func runBesideHTTP(ctx context.Context, e *env, name, addr string, reg *prometheus.Registry, health func() string, work func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	if addr != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, health())
		})
		go func() {
			served <- listenAndServe(ctx, e, name, addr, "", mux, 5*time.Second)
			cancel()
		}()
	} else {
		close(served)
	}
	err := work(ctx)
	cancel()
	if serr := <-served; serr != nil && err == nil {
		err = serr
	}
	return err
}

// counterClientOptions returns the options that make a counterd client sign
// its requests with the key in keyFile; without a key file the requests go
// unsigned, which only a counterd run with --insecure-no-auth accepts.
func counterClientOptions(e *env, keyFile string) ([]counter.ClientOption, error) {
	if keyFile == "" {
		e.log.Warn("no --service-key-file: requests to counterd are not signed and only an unauthenticated counterd accepts them")
		return nil, nil
	}
	key, err := counter.LoadServiceKey(keyFile)
	if err != nil {
		return nil, err
	}
	return []counter.ClientOption{counter.WithServiceKey(key)}, nil
}
