package counter_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/jackc/pgx/v5"

	"socnet/internal/counter"
	"socnet/internal/dbroute"
	"socnet/internal/pgnode"
	"socnet/internal/pgtest"
	"socnet/internal/social"
)

// benchReaders is how many concurrent readers BenchmarkCounterReads runs.
const benchReaders = 32

// BenchmarkCounterReads measures the hot path of GET /dialog/unread behind
// the API: GET /counters/{id} of a counterd process whose reads go to a
// streaming replica, with 32 concurrent keep-alive connections, over 20 000
// users with 5 dialogs each. It reports reads/s and latency percentiles.
//
//	go test -run '^$' -bench CounterReads -benchtime 20000x ./internal/counter/
func BenchmarkCounterReads(b *testing.B) {
	ctx := context.Background()
	primary := pgtest.MustNode(b, "bench-p", map[string]string{"shared_buffers": "64MB"})
	replica := mustReplica(b, ctx, "bench-r", primary)
	port, err := pgnode.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	startProc(b, "counterd", nil, envHTTP+"="+addr, envDB+"="+primary.DSN("")+","+replica.DSN(""), envAdminDB+"="+primary.DSN(""))
	client := newClient("http://" + addr)
	defer client.Close()
	waitFor(b, time.Minute, "counterd healthy", func() error { return client.Healthy(ctx) })

	const users, dialogs = 20000, 5
	ids := make([]string, users)
	for i := range ids {
		ids[i] = newUUID(b)
	}
	var batch []counter.Event
	flush := func() {
		if _, err := client.Apply(ctx, counter.Batch{Events: batch}); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i, u := range ids {
		for d := 1; d <= dialogs; d++ {
			batch = append(batch, counter.Event{ID: newUUID(b), Kind: counter.KindMessageSent, UserID: u,
				PeerID: ids[(i+d)%users], Seq: int64(d), Unread: d})
			if len(batch) == counter.MaxBatch {
				flush()
			}
		}
	}
	flush()
	// The replica itself, not a router: a router with no primary to compare
	// it with cannot show it fresh and sends it no reads.
	rconn := mustConn(b, replica.DSN(""))
	waitFor(b, time.Minute, "the replica caught up", func() error {
		var n int
		if err := rconn.QueryRow(ctx, `SELECT count(*) FROM counters`).Scan(&n); err != nil {
			return err
		}
		if n != users*dialogs {
			return context.DeadlineExceeded
		}
		return nil
	})
	base := "http://" + addr
	replicaReads := metric(b, base, `socnet_db_routing_decisions_total{db="counter",decision="replica"}`)

	hist := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	var mu sync.Mutex
	var failed atomic.Int64
	b.SetParallelism((benchReaders + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			t0 := time.Now()
			u, err := client.Unread(ctx, ids[rng.IntN(users)])
			if err != nil || len(u.Dialogs) != dialogs {
				failed.Add(1)
				continue
			}
			local.RecordValue(time.Since(t0).Microseconds())
		}
		mu.Lock()
		hist.Merge(local)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Errorf("%d reads failed", n)
	}
	served := metric(b, base, `socnet_db_routing_decisions_total{db="counter",decision="replica"}`) - replicaReads
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "reads/s")
	b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
	b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
	b.ReportMetric(served/float64(b.N), "replica-share")
}

// BenchmarkDelivery sends b.N messages as fast as 16 writers can through
// the dialogs store (one in ten followed by a read of a dialog), with
// counterd and the relay as processes, and reports the send rate, the
// delivery latency from the dialogs transaction to the counter's apply
// (p50, p99, max, from the inbox) and the largest outbox backlog seen.
//
//	go test -run '^$' -bench Delivery -benchtime 20000x ./internal/counter/
func BenchmarkDelivery(b *testing.B) {
	s := mustStack(b, stackOptions{})
	ctx := context.Background()
	ids := s.mustUsers(b, 200)
	const writers = 16
	var next atomic.Int64
	var maxBacklog atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				var n int64
				if err := s.admin.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err == nil && n > maxBacklog.Load() {
					maxBacklog.Store(n)
				}
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for next.Add(1) <= int64(b.N) {
				i := rng.IntN(len(ids))
				j := (i + 1 + rng.IntN(len(ids)-1)) % len(ids)
				if err := s.dialogs.SendMessage(ctx, &social.Message{From: ids[i], To: ids[j], Text: "bench"}); err != nil {
					b.Error(err)
					return
				}
				if rng.IntN(10) == 0 {
					if _, err := s.dialogs.MarkRead(ctx, ids[j], ids[i]); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	sent := time.Since(start)
	waitFor(b, 2*time.Minute, "the outbox drained", func() error {
		if s.outboxLen(b) > 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	b.StopTimer()
	close(stop)
	<-sampled
	var p50, p99, worst float64
	err := s.counterDB.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT
				percentile_cont(0.5) WITHIN GROUP (ORDER BY lat), percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), max(lat)
			FROM (SELECT extract(epoch FROM received_at - committed_at)::float8 AS lat FROM inbox WHERE committed_at IS NOT NULL) l`).
			Scan(&p50, &p99, &worst)
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/sent.Seconds(), "sends/s")
	b.ReportMetric(p50*1000, "p50-ms")
	b.ReportMetric(p99*1000, "p99-ms")
	b.ReportMetric(worst*1000, "max-ms")
	b.ReportMetric(float64(maxBacklog.Load()), "max-backlog")
	s.mustConverge(b, time.Minute)
}

// BenchmarkIdleOutbox measures what an idle relay costs the dialogs
// primary: b.N events are written to the outbox at once and delivered, then
// for five idle seconds it counts the outbox tuples the relay's queries read
// (pg_stat_user_tables: seq_tup_read + idx_tup_fetch) and reports them per
// second, with the dead tuples left in the table.
//
//	go test -run '^$' -bench IdleOutbox -benchtime 20000x ./internal/counter/
func BenchmarkIdleOutbox(b *testing.B) {
	s := mustStack(b, stackOptions{})
	ctx := context.Background()
	ids := s.mustUsers(b, 100)
	b.ResetTimer()
	_, err := s.admin.Exec(ctx, `INSERT INTO outbox (aggregate, kind, payload)
		SELECT 'bench', 'message_sent', jsonb_build_object('event_id', gen_random_uuid(), 'from', ($1::uuid[])[1 + i % 50], 'to', ($1::uuid[])[51 + i % 50])
		FROM generate_series(1, $2) i`, ids, b.N)
	if err != nil {
		b.Fatal(err)
	}
	waitFor(b, 2*time.Minute, "the outbox drained", func() error {
		if s.outboxLen(b) > 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	b.StopTimer()
	read := func() (tuples, blocks, dead int64) {
		// A fresh snapshot of the shared statistics.
		if _, err := s.admin.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			b.Fatal(err)
		}
		err := s.admin.QueryRow(ctx, `SELECT coalesce(t.seq_tup_read, 0) + coalesce(t.idx_tup_fetch, 0),
				coalesce(io.heap_blks_read + io.heap_blks_hit, 0) + coalesce(io.idx_blks_read + io.idx_blks_hit, 0), t.n_dead_tup
			FROM pg_stat_user_tables t JOIN pg_statio_user_tables io USING (relid) WHERE relid = 'outbox'::regclass`).
			Scan(&tuples, &blocks, &dead)
		if err != nil {
			b.Fatal(err)
		}
		return tuples, blocks, dead
	}
	const idle = 5 * time.Second
	measure := func(when string) {
		t0, b0, _ := read()
		time.Sleep(idle)
		t1, b1, dead := read()
		b.ReportMetric(float64(t1-t0)/idle.Seconds(), when+"-tuples/s")
		b.ReportMetric(float64(b1-b0)/idle.Seconds(), when+"-blocks/s")
		b.ReportMetric(float64(dead), when+"-dead")
	}
	measure("drained")
	// Then after autovacuum has been through the outbox (its naptime is a
	// minute), if it comes within two.
	start := time.Now()
	for time.Since(start) < 2*time.Minute {
		if _, _, dead := read(); dead == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	b.ReportMetric(time.Since(start).Seconds(), "vacuum-wait-s")
	measure("vacuumed")
	explain := func(sql string, args ...any) string {
		rows, err := s.admin.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) `+sql, args...)
		if err != nil {
			b.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			b.Fatal(err)
		}
		return strings.Join(plan, "\n")
	}
	plan := explain(counter.FetchDueSQL, counter.DefaultRelayBatch) + "\nthe backlog estimate:\n" + explain(counter.BacklogSQL)
	var ins, upd, del, hot int64
	var deadLetters string
	err = s.admin.QueryRow(ctx, `SELECT n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd, (SELECT count(*) FROM outbox_dead_letters) || coalesce((SELECT ' '||reason FROM outbox_dead_letters LIMIT 1), '')
		FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass`).Scan(&ins, &upd, &del, &hot, &deadLetters)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("outbox: %d inserted, %d updated (%d hot), %d deleted, %s dead letters; the relay's polling query at idle:\n%s",
		ins, upd, hot, del, deadLetters, plan)
}
