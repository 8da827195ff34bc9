package load_test

import (
	"runtime"
	"testing"
	"time"

	"socnet/internal/load"
)

// BenchmarkHealthz measures the generator's own ceiling: it runs on one core
// (GOMAXPROCS 1) against /healthz of a server in another process, so that the
// server's CPU is not the generator's, and reports the requests per second
// reached, the generator's CPU in percent of one core, and the CPU it spends
// per request (the figure that says how many requests one core can drive):
//
//	go test -run '^$' -bench Healthz -benchtime 200000x ./internal/load/
//
// The figures belong in docs/BENCHMARKS.md, not in a test: they depend on
// the machine and on what else runs on it.
func BenchmarkHealthz(b *testing.B) {
	if raceEnabled {
		b.Skip("the race detector slows the generator several times over: its speed means nothing then")
	}
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
	if res.Requests != int64(b.N) {
		b.Fatalf("%d requests, want %d", res.Requests, b.N)
	}
	perRequest := res.Generator.CPUSeconds / float64(res.Requests) * float64(time.Second)
	b.ReportMetric(res.Throughput, "req/s")
	b.ReportMetric(res.Generator.CPUPercent, "cpu%")
	b.ReportMetric(perRequest, "cpu-ns/req")
	b.ReportMetric(res.Latency.P99, "p99-ms")
}
