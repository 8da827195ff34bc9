package load

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/noderole"
	"socnet/internal/pgnode"
)

// clockTicks is USER_HZ, the unit of CPU times in /proc: 100 on Linux.
const clockTicks = 100

// sampleSQL reads, in one statement (so one transaction of the sampler per
// sample), the database counters of the node, its replication lag, and
// whether the sampler's own transactions fall among the counted ones.
const sampleSQL = `
WITH d AS (
  SELECT COALESCE(sum(xact_commit + xact_rollback), 0)::bigint AS xacts,
         COALESCE(sum(tup_returned), 0)::bigint AS tup_returned,
         COALESCE(sum(tup_fetched), 0)::bigint AS tup_fetched,
         COALESCE(sum(tup_inserted), 0)::bigint AS tup_inserted,
         COALESCE(sum(tup_updated), 0)::bigint AS tup_updated,
         COALESCE(sum(tup_deleted), 0)::bigint AS tup_deleted
  FROM pg_stat_database
  WHERE datname IS NOT NULL AND datname NOT LIKE 'template%' AND ($1::text = '' OR datname = $1::text)
), r AS (
  SELECT COALESCE(max(pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
           replay_lsn)), 0)::bigint AS lag_bytes,
         COALESCE(max(EXTRACT(epoch FROM replay_lag)), 0)::float8 AS lag_seconds
  FROM pg_stat_replication
)
SELECT d.xacts, d.tup_returned, d.tup_fetched, d.tup_inserted, d.tup_updated, d.tup_deleted,
  pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery()
       THEN COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint
       ELSE r.lag_bytes END,
  CASE WHEN NOT pg_is_in_recovery() THEN r.lag_seconds
       WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
       ELSE COALESCE(EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 END,
  $1::text = '' OR current_database() = $1::text
FROM d, r`

// rawSample is one reading of a node.
type rawSample struct {
	at                                 time.Time
	xacts, ret, fetched, ins, upd, del int64
	recovery                           bool
	lagBytes                           int64
	lagSeconds                         float64
	cpuTicks                           int64
	cpuOK                              bool
	// ownBefore counts the sampler's own counted transactions on the node
	// before this reading's, which the next reading includes.
	ownBefore int64
}

// sampler reads every node's counters once per interval while a run lasts.
type sampler struct {
	db    string
	log   *slog.Logger
	nodes []*nodeSampler
	stopc chan struct{}
	wg    sync.WaitGroup
	start time.Time
	every time.Duration
}

type nodeSampler struct {
	node       Node
	conn       *pgx.Conn
	own        int64 // the sampler's transactions counted in the node's xacts
	fresh      bool  // conn has not run a query yet
	pendingOwn int64 // own transactions not yet seen in the statistics
	pid        int
	startRole  string
	first      *rawSample
	prev       *rawSample
	samples    []NodeSample
	res        NodeResult
	covered    float64 // seconds between the first and the last good sample
	cpuCover   float64 // of which with CPU figures
	cpuTicks   int64
}

func newSampler(nodes []Node, database string, log *slog.Logger) *sampler {
	s := &sampler{db: database, log: log, stopc: make(chan struct{})}
	for _, n := range nodes {
		s.nodes = append(s.nodes, &nodeSampler{node: n, pid: n.PID, startRole: n.Role})
	}
	return s
}

// begin connects to every node and takes the baseline sample.
func (s *sampler) begin(ctx context.Context) {
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		wg.Go(func() {
			cur, err := s.read(ctx, n)
			if err != nil {
				s.log.Warn("sample node", "node", n.node.Name, "err", err)
				n.startRole = "down"
				return
			}
			n.startRole = roleOf(cur)
			n.first, n.prev = cur, cur
		})
	}
	wg.Wait()
}

// run samples each node every interval from start until finish.
func (s *sampler) run(ctx context.Context, start time.Time, every time.Duration) {
	s.start, s.every = start, every
	for _, n := range s.nodes {
		s.wg.Go(func() {
			t := time.NewTimer(time.Until(start.Add(every)))
			defer t.Stop()
			for k := 2; ; k++ {
				select {
				case <-s.stopc:
					return
				case <-ctx.Done():
					return
				case <-t.C:
				}
				s.sample(ctx, n, false)
				t.Reset(time.Until(start.Add(time.Duration(k) * every)))
			}
		})
	}
}

// finish takes a last sample of each node and returns the results.
func (s *sampler) finish(ctx context.Context) []NodeResult {
	close(s.stopc)
	s.wg.Wait()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		wg.Go(func() {
			s.sample(fctx, n, true)
			if n.conn != nil {
				n.conn.Close(fctx)
				n.conn = nil
			}
		})
	}
	wg.Wait()
	out := make([]NodeResult, len(s.nodes))
	clusterXacts := map[string]int64{}
	for i, n := range s.nodes {
		out[i] = n.result()
		clusterXacts[n.node.Cluster] += out[i].Xacts
	}
	for i := range out {
		if t := clusterXacts[out[i].Cluster]; t > 0 {
			out[i].TPSShare = round3(float64(out[i].Xacts) / float64(t))
		}
	}
	return out
}

// sample reads node n and appends the interval since its previous reading.
// The final reading, taken when the load ends, only adds to the totals when
// it closes an interval too short for meaningful rates.
func (s *sampler) sample(ctx context.Context, n *nodeSampler, final bool) {
	cur, err := s.read(ctx, n)
	t := round3(time.Since(s.start).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("sample node", "node", n.node.Name, "err", err)
		}
		if !final {
			n.res.DownSamples++
			n.samples = append(n.samples, NodeSample{T: t, Role: "down"})
		}
		return
	}
	t = round3(cur.at.Sub(s.start).Seconds())
	smp := NodeSample{T: t, Up: true, Role: roleOf(cur), LagBytes: cur.lagBytes, LagSeconds: round3(cur.lagSeconds)}
	if p := n.prev; p != nil {
		dt := cur.at.Sub(p.at).Seconds()
		if dt > 0 {
			// The sampler's own transactions are not the load. They show in
			// the statistics when its backend flushes them, maybe a reading
			// later: take them off as they appear.
			n.pendingOwn += cur.ownBefore - p.ownBefore
			dx := delta(cur.xacts, p.xacts)
			if cur.xacts < p.xacts {
				n.pendingOwn = 0
			}
			own := min(dx, n.pendingOwn)
			dx -= own
			n.pendingOwn -= own
			dr, df, di := delta(cur.ret, p.ret), delta(cur.fetched, p.fetched), delta(cur.ins, p.ins)
			n.res.Xacts += dx
			n.res.TupReturned += dr
			n.res.TupFetched += df
			n.res.TupInserted += di
			n.res.TupUpdated += delta(cur.upd, p.upd)
			n.res.TupDeleted += delta(cur.del, p.del)
			n.covered += dt
			smp.TPS = round3(float64(dx) / dt)
			smp.TupReturned = round3(float64(dr) / dt)
			smp.TupFetched = round3(float64(df) / dt)
			smp.TupInserted = round3(float64(di) / dt)
			if cur.cpuOK && p.cpuOK {
				ticks := delta(cur.cpuTicks, p.cpuTicks)
				n.cpuTicks += ticks
				n.cpuCover += dt
				pct := round3(100 * float64(ticks) / clockTicks / dt)
				smp.CPUPercent = &pct
			}
		}
	}
	n.res.MaxLagBytes = max(n.res.MaxLagBytes, cur.lagBytes)
	n.res.MaxLagSeconds = max(n.res.MaxLagSeconds, round3(cur.lagSeconds))
	short := n.prev != nil && cur.at.Sub(n.prev.at) < s.every/2
	n.prev = cur
	if final && short {
		return
	}
	n.samples = append(n.samples, smp)
}

// delta is the growth of a counter; a counter that went back (statistics
// reset by a crash) counts as no growth.
func delta(cur, prev int64) int64 { return max(0, cur-prev) }

func roleOf(s *rawSample) string {
	if s.recovery {
		return noderole.Replica
	}
	return noderole.Primary
}

// read takes one reading of node n, connecting first when needed.
func (s *sampler) read(ctx context.Context, n *nodeSampler) (*rawSample, error) {
	// A node busy with the load answers slowly; only one that cannot answer
	// for seconds counts as down.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n.conn == nil {
		cfg, err := pgx.ParseConfig(n.node.DSN)
		if err != nil {
			return nil, fmt.Errorf("node %s: parse dsn: %w", n.node.Name, err)
		}
		cfg.RuntimeParams["application_name"] = "socnet-load-sampler"
		// One transaction per sample, with no extra one to prepare it.
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = 2 * time.Second
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("node %s: connect: %w", n.node.Name, err)
		}
		n.conn = conn
		n.fresh = true
	}
	r := rawSample{ownBefore: n.own}
	var counted bool
	err := n.conn.QueryRow(ctx, sampleSQL, s.db).Scan(&r.xacts, &r.ret, &r.fetched, &r.ins, &r.upd, &r.del,
		&r.recovery, &r.lagBytes, &r.lagSeconds, &counted)
	r.at = time.Now()
	if err != nil {
		n.conn.Close(context.WithoutCancel(ctx))
		n.conn = nil
		return nil, fmt.Errorf("node %s: sample: %w", n.node.Name, err)
	}
	if counted {
		n.own++
		if n.fresh {
			n.own++ // the backend's start ran a transaction too
		}
	}
	n.fresh = false
	if n.pid == 0 && isLocalHost(n.conn.Config().Host) {
		n.pid = findPostmaster(ctx, n.conn)
		if counted {
			n.own++
		}
	}
	if n.pid > 0 {
		r.cpuTicks, r.cpuOK = processTreeTicks(n.pid)
	}
	return &r, nil
}

func (n *nodeSampler) result() NodeResult {
	res := n.res
	res.Name, res.Cluster, res.Role, res.PID = n.node.Name, n.node.Cluster, n.startRole, n.pid
	res.Samples = n.samples
	if res.Samples == nil {
		res.Samples = []NodeSample{}
	}
	if n.covered > 0 {
		res.TPS = round3(float64(res.Xacts) / n.covered)
	}
	if n.cpuCover > 0 {
		sec := round3(float64(n.cpuTicks) / clockTicks)
		pct := round3(100 * sec / n.cpuCover)
		res.CPUSeconds, res.CPUPercent = &sec, &pct
	}
	return res
}

// isLocalHost reports whether a libpq host is this machine.
func isLocalHost(host string) bool {
	if strings.HasPrefix(host, "/") || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// findPostmaster returns the pid of the local server conn talks to, read
// from postmaster.pid in its data directory, or 0 when that is not possible
// (no privilege to see the directory or the process, or the file is not
// readable).
func findPostmaster(ctx context.Context, conn *pgx.Conn) int {
	var dir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dir); err != nil {
		return 0
	}
	return pgnode.RunningPostmaster(dir)
}

// processTreeTicks returns the CPU time, in clock ticks, of process pid and
// its children, including children it has already reaped (cutime, cstime):
// for a postmaster that covers backends that come and go.
func processTreeTicks(pid int) (int64, bool) {
	_, total, err := readProcStat(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total, true
	}
	for _, e := range entries {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' || name == strconv.Itoa(pid) {
			continue
		}
		ppid, ticks, err := readProcStat(filepath.Join("/proc", name, "stat"))
		if err == nil && ppid == pid {
			total += ticks
		}
	}
	return total, true
}

// readProcStat returns the parent pid and utime+stime+cutime+cstime of a
// /proc/PID/stat file.
func readProcStat(path string) (ppid int, ticks int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime..cstime fields 14..17.
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("%s: %d fields", path, len(f))
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, fmt.Errorf("%s: ppid: %w", path, err)
	}
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: cpu time: %w", path, err)
		}
		ticks += v
	}
	return ppid, ticks, nil
}
