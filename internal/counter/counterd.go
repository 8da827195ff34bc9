package counter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"socnet/internal/dbroute"
	"socnet/internal/httpserve"
)

// Counterd defaults, applied by RunCounterd to zero fields.
const (
	DefaultInboxRetention = 24 * time.Hour
	// DefaultReconcileEvery is how often counterd reconciles when it knows
	// the dialogs database: a drift is repaired and reported within minutes
	// without anyone watching, at the cost of one pass over the unread
	// messages each time.
	DefaultReconcileEvery = 5 * time.Minute
	DefaultCounterdConns  = 16
	inboxPruneEvery       = time.Hour
	shutdownTimeout       = 5 * time.Second
)

// CounterdConfig configures the counter service process.
type CounterdConfig struct {
	// HTTPAddr is where the API listens, e.g. 127.0.0.1:8091.
	HTTPAddr string
	// DBs are the nodes of the counter database (any roles, multi-host
	// DSNs allowed): writes go to the primary, counter reads to a replica
	// fresh enough for the caller.
	DBs []string
	// AdminDBs, when set, are DSNs (of the same nodes) with the right to
	// create tables: the embedded migrations are applied with them at start.
	AdminDBs []string
	// MaxConns bounds each node's pool; 0 means DefaultCounterdConns.
	MaxConns int32
	// MaxReplicaLag is the replica staleness beyond which reads go to the
	// primary; 0 means dbroute's default.
	MaxReplicaLag time.Duration
	// MainDBs are the nodes of the dialogs database; with ReconcileEvery > 0
	// counterd reconciles and repairs that often.
	MainDBs        []string
	ReconcileEvery time.Duration
	// InboxRetention is how long inbox rows are kept; 0 means
	// DefaultInboxRetention.
	InboxRetention time.Duration
	// Registry receives every metric and is served at /metrics; nil means a
	// new one with the Go and process collectors.
	Registry *prometheus.Registry
	// ServiceKey is the shared secret every request but GET /healthz must
	// be signed with (LoadServiceKey). Without it counterd refuses to start
	// unless InsecureNoAuth is set.
	ServiceKey []byte
	// InsecureNoAuth serves every route to anyone who can connect. Only for
	// a counterd that no untrusted user or host can reach.
	InsecureNoAuth bool
	// AuthWindow is how far a signed request's timestamp may be from the
	// local clock; 0 means DefaultAuthWindow.
	AuthWindow time.Duration
}

// ErrNoServiceKey is RunCounterd's refusal to serve unauthenticated
// without being told to.
var ErrNoServiceKey = errors.New("counterd: no service key given; refusing to serve unauthenticated requests (give a key file, or --insecure-no-auth on a trusted network only)")

// RunCounterd runs counterd until ctx ends: it migrates the counter database
// (waiting for it to come up), serves the HTTP API, prunes the inbox and,
// when configured, reconciles periodically. It shuts down gracefully and
// returns nil when ctx ends.
func RunCounterd(ctx context.Context, cfg CounterdConfig, log *slog.Logger) error {
	if len(cfg.DBs) == 0 {
		return errors.New("counterd: no counter database given")
	}
	var serverOpts []ServerOption
	switch {
	case len(cfg.ServiceKey) > 0:
		serverOpts = append(serverOpts, WithVerifier(NewVerifier(cfg.ServiceKey, cfg.AuthWindow, 0, nil)))
	case cfg.InsecureNoAuth:
		log.Warn("counterd serves without authentication: anyone who can connect can change any counter")
	default:
		return ErrNoServiceKey
	}
	if cfg.ReconcileEvery > 0 && len(cfg.MainDBs) == 0 {
		return errors.New("counterd: periodic reconciliation needs the dialogs database")
	}
	if cfg.InboxRetention <= 0 {
		cfg.InboxRetention = DefaultInboxRetention
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultCounterdConns
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if len(cfg.AdminDBs) > 0 {
		if err := migrateWhenUp(ctx, cfg.AdminDBs, log); err != nil {
			return err
		}
	}
	db, err := dbroute.Open(ctx, dbroute.Config{
		Name: "counter", Nodes: cfg.DBs, MaxConns: cfg.MaxConns, MaxReplicaLag: cfg.MaxReplicaLag, Registry: reg,
	}, log)
	if err != nil {
		return fmt.Errorf("counterd: open counter database: %w", err)
	}
	defer db.Close()
	store, err := NewStore(db, reg)
	if err != nil {
		return fmt.Errorf("counterd: %w", err)
	}
	h, err := NewServer(log, store, reg, serverOpts...)
	if err != nil {
		return fmt.Errorf("counterd: %w", err)
	}
	var rc *Reconciler
	if cfg.ReconcileEvery > 0 {
		if rc, err = NewReconciler(cfg.MainDBs, db, reg, log); err != nil {
			return fmt.Errorf("counterd: %w", err)
		}
	}

	jctx, stopJobs := context.WithCancel(ctx)
	defer stopJobs()
	jobs := make(chan struct{})
	go func() {
		defer close(jobs)
		runJobs(jctx, store, rc, cfg, log)
	}()
	err = httpserve.ListenAndServe(ctx, log, httpserve.Server{Name: "counterd", Addr: cfg.HTTPAddr, Handler: h, Grace: shutdownTimeout})
	stopJobs()
	<-jobs
	if err != nil {
		return err // named "counterd: " by httpserve
	}
	log.Info("counterd stopped")
	return nil
}

// migrateWhenUp migrates, retrying with backoff while the database is not
// reachable yet (a counter cluster still starting or failing over).
func migrateWhenUp(ctx context.Context, dsns []string, log *slog.Logger) error {
	b := Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		err := Migrate(ctx, dsns, log)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !dbroute.IsUnavailable(err) {
			return err
		}
		d := b.Delay(attempt)
		log.Warn("counter database not ready; retrying migration", "err", err, "retry_in", d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// runJobs prunes the inbox and reconciles on their schedules until ctx ends.
func runJobs(ctx context.Context, store *Store, rc *Reconciler, cfg CounterdConfig, log *slog.Logger) {
	prune := time.NewTicker(inboxPruneEvery)
	defer prune.Stop()
	var reconcile <-chan time.Time
	if rc != nil {
		t := time.NewTicker(cfg.ReconcileEvery)
		defer t.Stop()
		reconcile = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			n, err := store.PruneInbox(ctx, time.Now().Add(-cfg.InboxRetention))
			if err != nil {
				log.Warn("prune inbox", "err", err)
			} else if n > 0 {
				log.Info("inbox pruned", "rows", n)
			}
		case <-reconcile:
			rep, err := rc.Run(ctx, ReconcileOptions{Repair: true, DrainTimeout: min(cfg.ReconcileEvery/2, DefaultDrainTimeout)})
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("reconciliation failed", "err", err)
				}
				continue
			}
			level := slog.LevelInfo
			if len(rep.Drifts) > 0 {
				level = slog.LevelWarn
			}
			log.Log(ctx, level, "reconciliation done", "compared", rep.Compared, "drifts", len(rep.Drifts),
				"drift_messages", rep.DriftMessages(), "remaining", rep.Remaining, "unsettled", rep.Unsettled,
				"dead_letters", rep.DeadLetters, "duration", rep.Duration)
		}
	}
}
