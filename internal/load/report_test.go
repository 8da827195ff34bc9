package load_test

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/load"
)

func ptr(f float64) *float64 { return &f }

// sampleResult builds a run of 5 seconds on a primary and two replicas in
// which the primary carries primaryShare of the reads.
func sampleResult(label string, primaryShare float64) *load.Result {
	r := &load.Result{
		Schema: load.SchemaVersion, Label: label, Target: "http://127.0.0.1:8080",
		Mix:  []load.MixPart{{Scenario: "get", Weight: 70}, {Scenario: "search", Weight: 30}},
		Mode: "closed", Connections: 16, Data: "db",
		StartedAt: time.Date(2025, 11, 22, 1, 2, 3, 0, time.UTC), Duration: 5,
		Requests: 5000, Successes: 4990, Errors: 10, Throughput: 1000,
		Latency:     load.Latency{P50: 3, P90: 8, P99: 20, P999: 45, Max: 120, Mean: 4},
		ServiceTime: load.Latency{P50: 3, P90: 8, P99: 20, P999: 45, Max: 120, Mean: 4},
		StatusCodes: map[string]int64{"200": 4990, "503": 6, "none": 4},
		ErrorKinds:  map[string]int64{"status": 6, "timeout": 4, "refused": 0, "reset": 0, "other": 0},
		Ops: []load.OpResult{
			{Name: "user_get", Requests: 3500, Errors: 7, Latency: load.Latency{P50: 2, P90: 6, P99: 15, P999: 40, Max: 120, Mean: 3}},
			{Name: "user_search", Requests: 1500, Errors: 3, Latency: load.Latency{P50: 5, P90: 10, P99: 25, P999: 50, Max: 90, Mean: 6}},
		},
		Generator: load.GeneratorResult{GOMAXPROCS: 1, CPUSeconds: 1.5, CPUPercent: 30},
	}
	for i := range 5 {
		s := load.SecondResult{T: i, Requests: 1000, RPS: 1000, GeneratorCPU: 30,
			Latency: load.Latency{P50: 3, P90: 8, P99: 20 + float64(i), P999: 45, Max: 60, Mean: 4}}
		if i == 3 {
			s.Errors, s.ErrorKinds = 10, map[string]int64{"status": 6, "timeout": 4}
		}
		r.Seconds = append(r.Seconds, s)
	}
	share := map[string]float64{"main-1": primaryShare, "main-2": (1 - primaryShare) / 2, "main-3": (1 - primaryShare) / 2}
	roles := map[string]string{"main-1": "primary", "main-2": "replica", "main-3": "replica"}
	for i, name := range []string{"main-1", "main-2", "main-3"} {
		tps := 1000 * share[name]
		n := load.NodeResult{Name: name, Cluster: "main", Role: roles[name], PID: 100 + i,
			Xacts: int64(5 * tps), TupFetched: int64(5 * tps), TPS: tps, TPSShare: share[name],
			CPUSeconds: ptr(tps / 1000), CPUPercent: ptr(tps / 50), MaxLagBytes: 100, MaxLagSeconds: 0.01}
		for s := 1; s <= 5; s++ {
			smp := load.NodeSample{T: float64(s), Up: true, Role: roles[name], TPS: tps, TupFetched: tps, CPUPercent: ptr(tps / 50)}
			if name == "main-3" && s == 3 {
				smp = load.NodeSample{T: 3, Role: "down"}
			}
			n.Samples = append(n.Samples, smp)
		}
		r.Nodes = append(r.Nodes, n)
	}
	return r
}

func TestJSONRoundTrip(t *testing.T) {
	srv, _ := countingServer(t)
	ran := MustRun(t, load.Config{Target: srv.URL, Mix: mix("healthz"), Connections: 2, Requests: 200, Label: "real run"})
	for _, r := range []*load.Result{sampleResult("synthetic", 0.2), ran} {
		var buf bytes.Buffer
		if err := load.WriteJSON(&buf, r); err != nil {
			t.Fatal(err)
		}
		got, err := load.ReadJSON(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Errorf("%s: round trip (-want +got):\n%s", r.Label, diff)
		}
	}
	// Field names are the documented ones.
	var buf bytes.Buffer
	if err := load.WriteJSON(&buf, sampleResult("x", 0.5)); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"schema": "socnet-load/1"`, `"throughput_rps"`, `"latency_ms"`, `"p99_9"`,
		`"status_codes"`, `"error_kinds"`, `"seconds"`, `"tps_share"`, `"cpu_percent"`, `"lag_seconds"`, `"generator_cpu_percent"`} {
		if !strings.Contains(buf.String(), field) {
			t.Errorf("JSON lacks %s", field)
		}
	}
}

func TestReadJSONRejectsOtherDocuments(t *testing.T) {
	for _, doc := range []string{`{"schema":"socnet-load/0"}`, `{}`, `[1,2]`, `not json`} {
		if _, err := load.ReadJSON(strings.NewReader(doc)); err == nil {
			t.Errorf("ReadJSON(%s) accepted it", doc)
		}
	}
	if _, err := load.ReadJSONFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("ReadJSONFile of a missing file succeeded")
	}
}

// checkSelfContained fails t when page could fetch anything from elsewhere.
func checkSelfContained(t *testing.T, page string) {
	t.Helper()
	for _, bad := range []string{"<script", "<link", "<img", "src=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("the report holds %q: it must be self-contained", bad)
		}
	}
}

func TestWriteHTML(t *testing.T) {
	r := sampleResult("reads <b>on</b> replicas", 0.1)
	var buf bytes.Buffer
	if err := load.WriteHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	checkSelfContained(t, page)
	if n := strings.Count(page, "<svg "); n != 6 {
		t.Errorf("%d SVG charts, want 6 (throughput, latency, errors, cpu, db tps, db lag)", n)
	}
	for _, want := range []string{"Throughput: ", "Latency: ", "Errors by kind: ", "CPU: ", "Database transactions per node: ",
		"Replication lag: ", "<polyline", "main-1 (primary)", "main-3 (replica)", "user_search", "10.0%", "503",
		"reads &lt;b&gt;on&lt;/b&gt; replicas"} {
		if !strings.Contains(page, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(page, "<b>on</b>") {
		t.Error("the label reached the page unescaped")
	}
}

func TestWritePNGs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "charts")
	paths, err := load.WritePNGs(dir, sampleResult("Чтение с реплик", 0.1))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
		checkPNG(t, p)
	}
	want := []string{"throughput.png", "latency.png", "errors.png", "cpu.png", "db-tps.png", "db-lag.png"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("chart files (-want +got):\n%s", diff)
	}
}

// checkPNG fails t unless path is a PNG of the chart size with a drawing on it.
func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b != image.Rect(0, 0, load.ChartWidth, load.ChartHeight) {
		t.Errorf("%s is %v, want %dx%d", path, b, load.ChartWidth, load.ChartHeight)
	}
	colors := map[[3]uint32]bool{}
	for y := 0; y < load.ChartHeight; y += 3 {
		for x := 0; x < load.ChartWidth; x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			colors[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
		}
	}
	if len(colors) < 5 {
		t.Errorf("%s has %d colours: nothing drawn", path, len(colors))
	}
}

func TestCompareSavedRuns(t *testing.T) {
	dir := t.TempDir()
	save := func(name string, r *load.Result) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := load.WriteJSON(f, r); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	before := sampleResult("reads on the primary", 1)
	after := sampleResult("reads on the replicas", 0.05)
	after.Nodes = append(after.Nodes, load.NodeResult{Name: "main-4", Cluster: "main", Role: "replica", Samples: []load.NodeSample{}})
	a, err := load.ReadJSONFile(save("a.json", before))
	if err != nil {
		t.Fatal(err)
	}
	b, err := load.ReadJSONFile(save("b.json", after))
	if err != nil {
		t.Fatal(err)
	}

	var page bytes.Buffer
	if err := load.WriteCompareHTML(&page, a, b); err != nil {
		t.Fatal(err)
	}
	checkSelfContained(t, page.String())
	if n := strings.Count(page.String(), "<svg "); n != 6 {
		t.Errorf("%d SVG charts, want 6 (throughput, latency, node tps, node cpu, and each run's node tps)", n)
	}
	for _, want := range []string{"reads on the primary", "reads on the replicas", "Mean transactions/s per node", "main-4", "100.0%", "5.0%"} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("the comparison lacks %q", want)
		}
	}

	var text bytes.Buffer
	if err := load.WriteCompareSummary(&text, a, b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"A: reads on the primary", "B: reads on the replicas", "throughput req/s", "main-2", "47.5%"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the comparison text lacks %q:\n%s", want, text.String())
		}
	}

	paths, err := load.WriteComparePNGs(filepath.Join(dir, "png"), a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 4 {
		t.Errorf("comparison charts %v, want 4", paths)
	}
	for _, p := range paths {
		checkPNG(t, p)
	}
}

func TestWriteSummary(t *testing.T) {
	var buf bytes.Buffer
	r := sampleResult("summary", 0.25)
	r.Mode, r.Rate, r.Unsent = "open", 1000, 12
	if err := load.WriteSummary(&buf, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"socnet load: summary", "open loop at 1000 req/s", "5000: 4990 ok, 10 errors",
		"p99 20.00", "p99.9 45.00", "max 120.00", "service ms", "status 503: 6", "timeout: 4", "12 requests of the schedule",
		"GOMAXPROCS 1", "30.0% of one core", "user_get", "main-1", "25.0%"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, buf.String())
		}
	}
}
