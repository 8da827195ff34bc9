package drill_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"socnet/internal/cluster"
	"socnet/internal/drill"
	"socnet/internal/netns"
	"socnet/internal/netns/netnstest"
)

// mustHostStack is mustStack with every node on its own network host, and
// the net that cuts them off.
func mustHostStack(t testing.TB) (*stack, *netns.Net) {
	t.Helper()
	ctx := context.Background()
	if err := netns.Check(ctx); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not found: install the Debian package util-linux")
	}
	// First, so that its clean-up runs after the cluster has stopped.
	n := netnstest.Up(t, t.TempDir(), cluster.MainSpec().NodeNames()...)
	s := mustPlacedCluster(t, true, func(node string) cluster.Placement {
		a, _ := n.Addr(node)
		return cluster.Placement{Host: a.String(), Netns: n.Netns(node), ClientNet: n.Subnet().String()}
	})
	return s, n
}

// TestPartitionDrill cuts the primary's host off a real cluster whose nodes
// each run on their own host, and then a replica's, and checks the drill's
// report: a failover for the primary, none for the replica, every write
// kept, never two primaries, no write acknowledged by the old primary after
// the promotion, every node streaming again after the heal.
func TestPartitionDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster on three hosts, cut three times: not in -short")
	}
	s, n := mustHostStack(t)

	t.Run("primary", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		run, err := drill.RunPartition(ctx, s.target, n, drill.PartitionOptions{
			Duration: 6 * time.Second, CutAfter: time.Second, HealAfter: 3 * time.Second, Writers: 4, Log: testLog(t),
		})
		if err != nil {
			t.Fatalf("RunPartition: %v", err)
		}
		logReport(t, drill.NewReport(drill.DrillPartition, "main", []drill.Run{run}))
		if !run.OK() {
			t.Errorf("problems: %v", run.Problems)
		}
		if run.CutHost != run.OldPrimary || run.NewPrimary == "" || run.NewPrimary == run.OldPrimary {
			t.Errorf("cut %q, old primary %q, new %q", run.CutHost, run.OldPrimary, run.NewPrimary)
		}
		checkPartition(t, run)
	})

	for _, want := range []string{"potential", "sync"} {
		t.Run(want+" replica", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			nodes, err := s.target.Cluster.Nodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			replica := ""
			for _, node := range nodes {
				if node.Role == drill.RoleReplica && node.SyncState == want {
					replica = node.Name
				}
			}
			if replica == "" {
				t.Fatalf("no %s replica among %+v", want, nodes)
			}
			run, err := drill.RunPartition(ctx, s.target, n, drill.PartitionOptions{
				Host: replica, Duration: 5 * time.Second, CutAfter: time.Second, HealAfter: 2 * time.Second, Writers: 4, Log: testLog(t),
			})
			if err != nil {
				t.Fatalf("RunPartition: %v", err)
			}
			logReport(t, drill.NewReport(drill.DrillPartition, "main", []drill.Run{run}))
			if !run.OK() {
				t.Errorf("problems: %v", run.Problems)
			}
			if run.NewPrimary != "" || run.CutHost != replica {
				t.Errorf("cut %q, new primary %q: a replica's cut must not fail over", run.CutHost, run.NewPrimary)
			}
			checkPartition(t, run)
		})
	}
}

// checkPartition checks the parts of a partition run every cut must pass.
func checkPartition(t *testing.T, run drill.Run) {
	t.Helper()
	v, p := run.Verdict, run.Partition
	if v == nil || p == nil {
		t.Fatalf("verdict %v, partition verdict %v", v, p)
	}
	if v.Acknowledged == 0 || v.Lost != 0 || v.Duplicates != 0 || len(v.Nodes) != 3 {
		t.Errorf("verdict: %d acknowledged, %d lost, %d duplicates, %d nodes", v.Acknowledged, v.Lost, v.Duplicates, len(v.Nodes))
	}
	if len(p.Overlaps) != 0 || len(p.LateAcks) != 0 {
		t.Errorf("two primaries %+v, late acknowledgements %+v", p.Overlaps, p.LateAcks)
	}
	if p.Acks != v.Acknowledged {
		t.Errorf("%d acknowledgements with their node, of %d", p.Acks, v.Acknowledged)
	}
	if p.Unreached[run.CutHost] == 0 {
		t.Errorf("the watch reached %s all along the cut: %v", run.CutHost, p.Unreached)
	}
	if run.UnavailableMS == nil || run.RejoinMS == nil {
		t.Errorf("unavailability %v, rejoin %v", run.UnavailableMS, run.RejoinMS)
	}
}

// BenchmarkPartition cuts the primary's host off b.N times, one partition
// drill each (4 writers, a 3 s cut in 6 s of writes), on a cluster whose
// nodes run on their own hosts, and reports the write unavailability and
// the promotion; it fails on a loss, two primaries or a late
// acknowledgement. Figures in docs/BENCHMARKS.md:
//
//	go test -run '^$' -bench Partition -benchtime 10x ./internal/drill/
func BenchmarkPartition(b *testing.B) {
	s, n := mustHostStack(b)
	var runs []drill.Run
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		run, err := drill.RunPartition(ctx, s.target, n, drill.PartitionOptions{
			Duration: 6 * time.Second, CutAfter: time.Second, HealAfter: 3 * time.Second, Writers: 4,
		})
		cancel()
		if err != nil {
			b.Fatalf("RunPartition: %v", err)
		}
		runs = append(runs, run)
	}
	b.StopTimer()
	r := drill.NewReport(drill.DrillPartition, "main", runs)
	var promotions []time.Duration
	overlaps, late := 0, 0
	for _, run := range runs {
		if run.PromotionMS != nil {
			promotions = append(promotions, time.Duration(*run.PromotionMS*float64(time.Millisecond)))
		}
		if p := run.Partition; p != nil {
			overlaps += len(p.Overlaps)
			late += len(p.LateAcks)
		}
	}
	p := drill.Distribute(promotions)
	b.ReportMetric(r.Unavailability.Median, "unavail-median-ms")
	b.ReportMetric(r.Unavailability.Max, "unavail-max-ms")
	b.ReportMetric(p.Median, "promotion-median-ms")
	b.ReportMetric(r.Rejoin.Median, "rejoin-median-ms")
	b.ReportMetric(float64(r.TotalLost), "lost")
	b.ReportMetric(float64(overlaps), "two-primaries")
	b.ReportMetric(float64(late), "late-acks")
	if !r.OK {
		logReport(b, r)
		b.Fatal("a partition run failed")
	}
}
