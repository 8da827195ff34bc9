package dbroute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"socnet/internal/noderole"
)

// Roles of a node in Snapshot and in the role label of the metrics
// (noderole's).
const (
	RolePrimary = noderole.Primary
	RoleReplica = noderole.Replica
	RoleDown    = noderole.Down
)

// maxTxAttempts bounds how often Transact runs fn after serialization
// failures and deadlocks.
const maxTxAttempts = 6

// Querier is what a read needs: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// DB routes queries to the nodes of one database.
type DB struct {
	cfg        Config
	log        *slog.Logger
	nodes      []*node
	sess       *sessions
	m          *metrics
	staleAfter time.Duration // a replica not probed successfully for this long gets no reads
	rr         atomic.Uint64 // round-robin start among equally loaded replicas

	ctx       context.Context // ends at Close; bounds the probes
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu          sync.RWMutex
	primary     *node // nil when no node is known to be primary
	lastPrimary *node // the last node elected primary, for Primary()
	everPrimary bool
	splitBrain  bool
	history     []posSample // the last elected primary's positions, oldest first
}

// Open makes a pool for every node in cfg (connections are made on demand),
// probes every node once (each probe bounded by HealthTimeout; a replica
// probed before the primary's position was known, twice), starts the health
// loop and returns. Nodes that are down are not an error: they get
// traffic once they answer, and writes fail with ErrNoPrimary while no node
// is primary. Open fails on a bad configuration, or when ctx ends first.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*DB, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pcs, err := nodeConfigs(cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db := &DB{
		cfg:        cfg,
		log:        log,
		sess:       newSessions(cfg.SessionTTL, cfg.MaxSessions, time.Now),
		staleAfter: cfg.HealthTimeout + 2*cfg.HealthInterval,
	}
	if db.m, err = newMetrics(cfg.Registry, cfg.Name, db.Snapshot); err != nil {
		return nil, err
	}
	db.ctx, db.cancel = context.WithCancel(context.Background())
	for _, pc := range pcs {
		n, err := newNode(ctx, pc)
		if err != nil {
			db.Close()
			return nil, err
		}
		db.nodes = append(db.nodes, n)
	}
	for _, n := range db.nodes {
		db.wg.Add(1)
		go db.watch(n)
	}
	for _, n := range db.nodes {
		select {
		case <-n.probed:
		case <-ctx.Done():
			db.Close()
			return nil, fmt.Errorf("open database %s: %w", cfg.Name, ctx.Err())
		}
	}
	if err := db.settle(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", cfg.Name, err)
	}
	return db, nil
}

// settle asks for one more probe of each replica that the first round left
// without a known freshness (probed before the primary, which wrote in
// between) and waits for it, HealthTimeout at most, so that caught-up
// replicas serve reads from the first call.
func (db *DB) settle(ctx context.Context) error {
	db.mu.RLock()
	var again []*node
	if db.primary != nil {
		for _, n := range db.nodes {
			if n.st.reachable && n.st.inRecovery && n.st.freshAt.IsZero() {
				again = append(again, n)
			}
		}
	}
	db.mu.RUnlock()
	if len(again) == 0 {
		return nil
	}
	done := make([]int64, len(again))
	for i, n := range again {
		done[i] = n.probes.Load()
		n.kickNow()
	}
	deadline := time.NewTimer(db.cfg.HealthTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(again); {
		if again[i].probes.Load() > done[i] {
			i++
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
	}
	return nil
}

// Close stops the health loop and closes every pool. Calls running on the
// pools end with errors.
func (db *DB) Close() {
	db.closeOnce.Do(func() {
		db.cancel()
		db.wg.Wait()
		for _, n := range db.nodes {
			n.pool.Close()
		}
	})
}

// Primary returns the pool of the current primary, for migrations and
// tools. While no node is primary it returns the last one that was (or the
// first node), where writes fail rather than go anywhere else.
func (db *DB) Primary() *pgxpool.Pool {
	db.mu.RLock()
	defer db.mu.RUnlock()
	switch {
	case db.primary != nil:
		return db.primary.pool
	case db.lastPrimary != nil:
		return db.lastPrimary.pool
	default:
		return db.nodes[0].pool
	}
}

// currentPrimary returns the primary, or nil and asks every node for a
// probe now.
func (db *DB) currentPrimary() *node {
	db.mu.RLock()
	p := db.primary
	db.mu.RUnlock()
	if p == nil {
		db.kickAll()
	}
	return p
}

// Transact runs fn in a transaction on the primary and commits it, retrying
// the whole of fn on serialization failures and deadlocks (the transaction
// was rolled back), so fn must not keep results of an earlier call. The whole
// call, the COMMIT's wait for a synchronous standby included, is bounded by
// WriteTimeout. It never retries after a failure of the node: such errors
// satisfy IsUnavailable, and when the failure hit the COMMIT the write may
// or may not have been applied (ErrCommitUnconfirmed after a timeout). fn's
// own errors are returned as they are, after a rollback.
//
// In a session (WithSession), a successful Transact records the commit's WAL
// position for the session's later ReadReplica calls.
func (db *DB) Transact(ctx context.Context, fn func(pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.WriteTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := db.transactOnce(ctx, fn)
		if err == nil || attempt >= maxTxAttempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

func (db *DB) transactOnce(ctx context.Context, fn func(pgx.Tx) error) error {
	n := db.currentPrimary()
	if n == nil {
		return fmt.Errorf("transact: %w", ErrNoPrimary)
	}
	// When another node is elected meanwhile, the write is abandoned: its
	// context ends and its connection is closed under it, so that the
	// statements fn runs with a context of its own end too.
	abandoned := n.abandonment()
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var connMu sync.Mutex
	var live *pgxpool.Conn
	unhook := context.AfterFunc(abandoned, func() {
		cancel(errPrimaryReplaced)
		connMu.Lock()
		defer connMu.Unlock()
		if live != nil {
			_ = live.Conn().PgConn().Conn().Close()
		}
	})
	defer unhook()
	track := func(c *pgxpool.Conn) {
		connMu.Lock()
		defer connMu.Unlock()
		live = c
	}
	err := db.transactOn(wctx, n, fn, track, abandoned)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(wctx), errPrimaryReplaced) && !IsUnavailable(err) {
		// Abandoned before its COMMIT (a COMMIT cut short is already
		// ErrCommitUnconfirmed): nothing of it can commit any more.
		return fmt.Errorf("transact on %s: %w: %w", n.name, ErrUnavailable, errPrimaryReplaced)
	}
	return err
}

// transactOn runs one attempt of Transact on node n. track is told the
// connection while it is the write's; abandoned ends when the write is
// abandoned, and then the connection is not handed back.
func (db *DB) transactOn(ctx context.Context, n *node, fn func(pgx.Tx) error,
	track func(*pgxpool.Conn), abandoned context.Context) error {
	n.writes.Add(1)
	n.inflight.Add(1)
	defer n.inflight.Add(-1)
	db.m.queries.WithLabelValues(n.name, RolePrimary).Inc()

	conn, err := n.pool.Acquire(ctx)
	if err != nil {
		return db.failure(ctx, n, "transact", err, true)
	}
	track(conn)
	defer func() {
		track(nil)
		if abandoned.Err() != nil {
			closeConn(conn) // its socket may be closed under it
		}
		conn.Release()
	}()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return db.failure(ctx, n, "transact", err, conn.Conn().IsClosed())
	}
	if err := fn(tx); err != nil {
		broken := conn.Conn().IsClosed() || readOnly(err)
		// Rollback on an ended context closes the connection, which rolls
		// back as well; its error adds nothing.
		_ = tx.Rollback(ctx)
		if broken {
			return db.failure(ctx, n, "transact", err, true)
		}
		return err
	}
	// Whether the context ended while COMMIT ran decides what a success
	// means: if it did, a cancel request went to the server, and a COMMIT
	// waiting for a synchronous standby returns on it (with a warning)
	// committed locally only.
	stop := context.AfterFunc(ctx, func() {})
	err = tx.Commit(ctx)
	endedDuringCommit := !stop()
	if err == nil && endedDuringCommit {
		// Do not hand the connection back: a late cancel could hit its
		// next user.
		closeConn(conn)
		db.log.Warn("commit not confirmed before the context ended", "db", db.cfg.Name, "node", n.name,
			"write_timeout", db.cfg.WriteTimeout, "cause", context.Cause(ctx))
		if key := sessionKey(ctx); key != "" {
			db.sess.record(key, lsnPrimaryOnly)
		}
		return fmt.Errorf("commit on %s: %w: %w", n.name, ErrCommitUnconfirmed, ctx.Err())
	}
	if err != nil {
		if ctx.Err() != nil {
			closeConn(conn)
			return fmt.Errorf("commit on %s: %w: %w", n.name, ErrCommitUnconfirmed, err)
		}
		return db.failure(ctx, n, "commit", err, conn.Conn().IsClosed() || readOnly(err))
	}
	if key := sessionKey(ctx); key != "" {
		db.recordWrite(ctx, key, conn)
	}
	return nil
}

// recordWrite notes the session's write position: pg_current_wal_lsn() on
// the connection that just committed is at or past the commit record. When
// it cannot be read the session reads from the primary until it expires.
func (db *DB) recordWrite(ctx context.Context, key string, conn *pgxpool.Conn) {
	var s string
	pos := lsnPrimaryOnly
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err == nil {
		if p, err := parseLSN(s); err == nil {
			pos = p
		}
	}
	db.sess.record(key, pos)
}

// failure turns an error met on node n into the error the caller gets. When
// the node or connection failed (broken), the node is suspected and probed
// at once, and the error wraps ErrUnavailable.
func (db *DB) failure(ctx context.Context, n *node, op string, err error, broken bool) error {
	if !nodeFailed(ctx, err, broken) && !readOnly(err) {
		if IsUnavailable(err) {
			return fmt.Errorf("%s on %s: %w: %w", op, n.name, ErrUnavailable, err)
		}
		return fmt.Errorf("%s on %s: %w", op, n.name, err)
	}
	db.mu.Lock()
	n.st.suspectAt = time.Now()
	db.mu.Unlock()
	db.kickAll()
	return fmt.Errorf("%s on %s: %w: %w", op, n.name, ErrUnavailable, err)
}

// ReadPrimary runs fn against the primary, on one connection: for reads
// that must see the latest commit. fn must finish reading rows before its
// next query.
func (db *DB) ReadPrimary(ctx context.Context, fn func(Querier) error) error {
	n := db.currentPrimary()
	if n == nil {
		return fmt.Errorf("read primary: %w", ErrNoPrimary)
	}
	_, err := db.read(ctx, n, RolePrimary, 0, fn)
	return err
}

// ReadReplica runs fn, on one connection, against a replica that answers
// probes, lags at most MaxReplicaLag and has replayed the session's last
// write (see WithSession); the least busy of those, in turns. With no such
// replica the read goes to the primary, or fails with ErrNoReplica under
// NoReplicaFail (a session's read after its write still goes to the
// primary). When the replica's connection breaks or the statement is
// cancelled by a recovery conflict, fn runs again on another node, so fn
// must not keep results of an earlier call.
func (db *DB) ReadReplica(ctx context.Context, fn func(Querier) error) error {
	var need lsn
	if key := sessionKey(ctx); key != "" {
		need = db.sess.need(key)
	}
	tried := make(map[*node]bool, len(db.nodes))
	var lastErr error
	for range len(db.nodes) + 1 {
		n, role, decision := db.pickReplica(need, tried)
		verify := lsn(0)
		if role == RoleReplica {
			verify = need
		}
		if verify == 0 {
			// With a position to verify, read counts the decision.
			db.m.decisions.WithLabelValues(decision).Inc()
		}
		switch {
		case decision == DecisionNoReplicaFail:
			if lastErr != nil {
				return lastErr
			}
			return fmt.Errorf("read replica: %w", ErrNoReplica)
		case n == nil:
			if lastErr != nil {
				return lastErr
			}
			return fmt.Errorf("read replica: %w", ErrNoPrimary)
		}
		again, err := db.read(ctx, n, role, verify, fn)
		if !again {
			return err
		}
		tried[n] = true
		lastErr = err
	}
	return lastErr
}

// pickReplica chooses the node for a replica read needing position need
// (0: none), skipping tried nodes. It returns the node (nil when none), the
// role it serves in and the routing decision.
func (db *DB) pickReplica(need lsn, tried map[*node]bool) (*node, string, string) {
	now := time.Now()
	var buf [8]*node
	cands := buf[:0]
	fitAny := false
	db.mu.RLock()
	primary := db.primary
	for _, n := range db.nodes {
		if n == primary || tried[n] || !db.fitReplica(n, now) {
			continue
		}
		fitAny = true
		if need != 0 && (need == lsnPrimaryOnly || n.st.pos < need) {
			continue
		}
		cands = append(cands, n)
	}
	db.mu.RUnlock()
	if len(cands) > 0 {
		// The least busy; among equals, the next in turn.
		start := int(db.rr.Add(1) % uint64(len(cands)))
		best := cands[start]
		bestLoad := best.inflight.Load()
		for i := 1; i < len(cands); i++ {
			n := cands[(start+i)%len(cands)]
			if load := n.inflight.Load(); load < bestLoad {
				best, bestLoad = n, load
			}
		}
		return best, RoleReplica, DecisionReplica
	}
	decision := DecisionPrimaryFallback
	switch {
	case need != 0 && (fitAny || db.cfg.NoReplica == NoReplicaFail):
		decision = DecisionRYWPrimary
	case db.cfg.NoReplica == NoReplicaFail:
		return nil, "", DecisionNoReplicaFail
	}
	if primary == nil || tried[primary] {
		if primary == nil {
			db.kickAll()
		}
		return nil, "", decision
	}
	return primary, RolePrimary, decision
}

// read runs fn on a connection of n serving in role. When verify is not 0
// the replica must have replayed that position, checked on the connection;
// a replica behind it sends the read to the primary. again reports that
// the read may be tried on another node: the node failed before or while
// fn ran, or a replica cancelled fn for a recovery conflict.
func (db *DB) read(ctx context.Context, n *node, role string, verify lsn, fn func(Querier) error) (again bool, err error) {
	conn, err := n.pool.Acquire(ctx)
	if err != nil {
		return role == RoleReplica && ctx.Err() == nil, db.failure(ctx, n, "read", err, true)
	}
	defer conn.Release()
	if verify != 0 {
		var s *string
		err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&s)
		if err != nil {
			return ctx.Err() == nil, db.failure(ctx, n, "read", err, conn.Conn().IsClosed())
		}
		if pos, perr := parseNullLSN(s); perr != nil || pos < verify {
			// The replica restarted or the probe was optimistic.
			db.m.decisions.WithLabelValues(DecisionRYWPrimary).Inc()
			p := db.currentPrimary()
			if p == nil {
				return false, fmt.Errorf("read replica: %w", ErrNoPrimary)
			}
			conn.Release()
			return db.read(ctx, p, RolePrimary, 0, fn)
		}
		db.m.decisions.WithLabelValues(DecisionReplica).Inc()
	}
	n.reads.Add(1)
	db.m.queries.WithLabelValues(n.name, role).Inc()
	err = n.run(func() error { return fn(conn) })
	if err == nil {
		return false, nil
	}
	if nodeFailed(ctx, err, conn.Conn().IsClosed()) {
		return role == RoleReplica, db.failure(ctx, n, "read", err, true)
	}
	if role == RoleReplica && retryable(err) && ctx.Err() == nil {
		return true, err // a recovery conflict: another node may serve it
	}
	return false, err
}

// closeConn closes a pooled connection so that Release destroys it.
func closeConn(c *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Conn().Close(ctx)
}
