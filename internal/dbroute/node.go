package dbroute

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// node is one PostgreSQL server: its pool, its probe connection and what the
// last probe found.
type node struct {
	name     string
	pool     *pgxpool.Pool
	probeCfg *pgx.ConnConfig
	probe    *pgx.Conn // owned by the node's watch goroutine

	kick       chan struct{} // asks the watch goroutine for a probe now
	probed     chan struct{} // closed after the first probe
	probedOnce sync.Once
	probes     atomic.Int64 // probes done, successful or not

	inflight atomic.Int64 // calls running on the node now
	// writesCtx ends when another node is elected primary (abandonWrites):
	// every write still waiting on this node then ends in doubt at once,
	// instead of at WriteTimeout. A primary cut off from the network
	// answers nothing, so its writes would otherwise hold their callers
	// for the whole timeout after the failover.
	writesMu     sync.Mutex
	writesCtx    context.Context
	writesCancel context.CancelCauseFunc
	reads        atomic.Int64 // ReadPrimary and ReadReplica calls served
	writes       atomic.Int64 // Transact calls served

	st nodeState // guarded by DB.mu
}

// nodeState is what the probes found out about a node.
type nodeState struct {
	reachable  bool
	inRecovery bool
	timeline   uint32 // the primary's current timeline; 0 on replicas
	pos        lsn    // primary: pg_current_wal_lsn(); replica: pg_last_wal_replay_lsn()
	// freshAt, on a replica: every write the primary acknowledged before
	// this time is replayed there (zero: not known). Reads on the replica
	// may miss writes at most now - freshAt old.
	freshAt   time.Time
	lagBytes  int64     // replicas: the primary's last known position minus pos
	checkedAt time.Time // end of the last probe
	okAt      time.Time // end of the last successful probe
	err       string    // the last probe's error
	// suspectAt is when a call met a broken connection on the node; the
	// node gets no reads until a probe sent after it succeeds.
	suspectAt time.Time
}

// probeResult is one probe's answer.
type probeResult struct {
	inRecovery bool
	timeline   uint32
	pos        lsn
}

// probeSQL asks in one round trip what routing needs. On a primary the
// timeline comes from the name of the current WAL file, which changes at the
// moment of promotion, where pg_control_checkpoint() would show the new
// timeline only after the next checkpoint.
const probeSQL = `SELECT r,
  CASE WHEN r THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
  CASE WHEN r THEN 0 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END
FROM pg_is_in_recovery() AS r`

func newNode(ctx context.Context, pc *pgxpool.Config) (*node, error) {
	name := nodeName(pc)
	// uuid.UUID arguments and results go over the wire in binary; without
	// the codec pgx would format and parse text through driver.Valuer on
	// every query.
	after := pc.AfterConnect
	pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		pgxuuid.Register(conn.TypeMap())
		if after != nil {
			return after(ctx, conn)
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open pool %s: %w", name, err)
	}
	probeCfg := pc.ConnConfig.Copy()
	// A probe that times out just drops its connection; the next reconnects.
	probeCfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	n := &node{
		name:     name,
		pool:     pool,
		probeCfg: probeCfg,
		kick:     make(chan struct{}, 1),
		probed:   make(chan struct{}),
	}
	n.writesCtx, n.writesCancel = context.WithCancelCause(context.Background())
	return n, nil
}

// errPrimaryReplaced ends the writes still running on a primary once
// another node is elected.
var errPrimaryReplaced = errors.New("another node was elected primary while the write waited on this one")

// abandonment is the context that ends when the node's writes running now
// are abandoned (abandonWrites).
func (n *node) abandonment() context.Context {
	n.writesMu.Lock()
	defer n.writesMu.Unlock()
	return n.writesCtx
}

// abandonWrites ends every write running on the node now with cause; later
// writes (the node elected again, say) are not affected.
func (n *node) abandonWrites(cause error) {
	n.writesMu.Lock()
	defer n.writesMu.Unlock()
	n.writesCancel(cause)
	n.writesCtx, n.writesCancel = context.WithCancelCause(context.Background())
}

// ask runs the probe query on the node's probe connection, connecting
// first when needed; a failure drops the connection.
func (n *node) ask(ctx context.Context) (probeResult, error) {
	var res probeResult
	if n.probe == nil {
		c, err := pgx.ConnectConfig(ctx, n.probeCfg)
		if err != nil {
			return res, fmt.Errorf("connect: %w", err)
		}
		n.probe = c
	}
	var (
		pos *string
		tl  int64
	)
	err := n.probe.QueryRow(ctx, probeSQL).Scan(&res.inRecovery, &pos, &tl)
	if err != nil {
		n.closeProbe()
		return res, fmt.Errorf("probe: %w", err)
	}
	if res.pos, err = parseNullLSN(pos); err != nil {
		return res, err
	}
	res.timeline = uint32(tl)
	return res, nil
}

func (n *node) closeProbe() {
	if n.probe == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	n.probe.Close(ctx)
	n.probe = nil
}

// run runs fn counted as in flight on the node.
func (n *node) run(fn func() error) error {
	n.inflight.Add(1)
	defer n.inflight.Add(-1)
	return fn()
}

// kickNow asks for a probe without waiting for it.
func (n *node) kickNow() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}
