package load_test

import (
	"runtime"
	"testing"
	"time"

	"socnet/internal/load"
)

// The generator must not be the bottleneck: on one core it drives at least
// this many requests per second against a trivial server.
const selfCheckRPS = 20000

// TestSelfCheckHealthz runs the generator on one core (GOMAXPROCS 1)
// against /healthz of a server in another process. It checks the
// generator's own cost, which does not depend on how much CPU the server
// and the rest of the machine leave it: the CPU time per request must allow
// selfCheckRPS on one core. The throughput reached is checked too, but
// against half the figure, because the server shares the machine's two
// cores with everything else that runs.
func TestSelfCheckHealthz(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector slows the generator several times over: its speed means nothing then")
	}
	target := MustHealthzProcess(t)
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	res := MustRun(t, load.Config{Target: target, Mix: mix("healthz"), Connections: 32, Duration: 3 * time.Second})
	t.Logf("%.0f req/s, p50 %.3f ms, p99 %.3f ms; generator CPU %.1f%% of one core (GOMAXPROCS %d)",
		res.Throughput, res.Latency.P50, res.Latency.P99, res.Generator.CPUPercent, res.Generator.GOMAXPROCS)
	if res.Errors != 0 {
		t.Errorf("%d errors: %v", res.Errors, res.ErrorKinds)
	}
	perRequest := time.Duration(res.Generator.CPUSeconds / float64(res.Requests) * float64(time.Second))
	t.Logf("generator CPU per request: %v, so one core drives %.0f req/s", perRequest, float64(time.Second)/float64(perRequest))
	if perRequest > time.Second/selfCheckRPS {
		t.Errorf("the generator spends %v of CPU per request: one core cannot drive %d req/s", perRequest, selfCheckRPS)
	}
	if res.Throughput < selfCheckRPS/2 {
		t.Errorf("%.0f req/s, want at least %d", res.Throughput, selfCheckRPS/2)
	}
	// GOMAXPROCS bounds the goroutines; the runtime's own threads (GC
	// assists are bounded too, syscalls in flight are not) may add a little.
	if res.Generator.CPUPercent > 110 {
		t.Errorf("generator used %.1f%% of a core, want at most one", res.Generator.CPUPercent)
	}
}

// BenchmarkHealthz reports the requests per second and the CPU the
// generator spends per request on one core against /healthz of a server in
// another process: go test -run '^$' -bench Healthz -benchtime 200000x.
func BenchmarkHealthz(b *testing.B) {
	target := MustHealthzProcess(b)
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	b.ReportAllocs()
	b.ResetTimer()
	res := MustRun(b, load.Config{Target: target, Mix: mix("healthz"), Connections: 32, Requests: int64(b.N)})
	b.StopTimer()
	if res.Errors != 0 {
		b.Fatalf("%d errors: %v", res.Errors, res.ErrorKinds)
	}
	b.ReportMetric(res.Throughput, "req/s")
	b.ReportMetric(res.Generator.CPUPercent, "cpu%")
}
