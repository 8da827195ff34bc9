package drill_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/drill"
)

// engineRun is a finished failover run of engine under fault with the given
// figures; lost > 0 fails it.
func engineRun(t0 time.Time, engine string, fault drill.Fault, unavailableMS, promotionMS float64, rejoinMS *float64, lost, inDoubt int) drill.Run {
	run := fakeRun(t0, unavailableMS, 0, lost)
	run.Engine, run.Fault = engine, string(fault)
	run.PromotionMS, run.PromotionFrom = &promotionMS, drill.PromotionPolled
	run.RejoinMS = rejoinMS
	if rejoinMS == nil {
		run.RestartedInPlace, run.NewPrimary = true, run.OldPrimary
	}
	run.Verdict.Acknowledged, run.Verdict.Unknown, run.Verdict.PresentUnacknowledged = 100, inDoubt, inDoubt/2
	return run
}

func ptr(v float64) *float64 { return &v }

// comparedReports are two engines' reports as bench.sh engines writes them:
// one file per engine and fault.
func comparedReports(t0 time.Time) []drill.Report {
	var socnetPM, socnetHost, patroniPM, patroniHost []drill.Run
	for i, u := range []float64{300, 250, 400} {
		socnetPM = append(socnetPM, engineRun(t0, "socnet", drill.FaultPostmaster, u, 200, ptr(3000+float64(i)*1000), 0, 4))
		socnetHost = append(socnetHost, engineRun(t0, "socnet", drill.FaultHost, u+50, 220, ptr(3500), 0, 2))
	}
	for _, u := range []float64{2100, 1900, 2500} {
		patroniPM = append(patroniPM, engineRun(t0, "patroni", drill.FaultPostmaster, u, 1800, nil, 0, 6))
	}
	for i, u := range []float64{12000, 14000, 9000} {
		patroniHost = append(patroniHost, engineRun(t0, "patroni", drill.FaultHost, u, u-500, ptr(20000), i/2, 10))
	}
	// The host runs come first on purpose: the table orders faults itself.
	return []drill.Report{
		drill.NewReport(drill.DrillFailover, "main", socnetHost),
		drill.NewReport(drill.DrillFailover, "main", socnetPM),
		drill.NewReport(drill.DrillFailover, "main", patroniPM),
		drill.NewReport(drill.DrillFailover, "main", patroniHost),
		drill.NewReport(drill.DrillReplica, "main", []drill.Run{{Drill: drill.DrillReplica, Engine: "socnet"}}),
	}
}

func TestCompareGroupsByEngineAndFault(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	c := drill.Compare(comparedReports(t0), "2 × Test CPU, 1.0 GiB", "scripts/bench.sh engines")
	type brief struct {
		Engine, Fault                         string
		Runs, Passed, InPlace                 int
		Unavailability                        drill.Distribution
		PromotionMedian, RejoinMedian         float64
		RejoinRuns                            int
		Lost                                  int64
		InDoubt, InDoubtPresent, Acknowledged int
	}
	var got []brief
	for _, r := range c.Rows {
		got = append(got, brief{r.Engine, r.Fault, r.Runs, r.Passed, r.RestartedInPlace, r.Unavailability,
			r.Promotion.Median, r.Rejoin.Median, r.Rejoin.Count, r.Lost, r.InDoubt, r.InDoubtPresent, r.Acknowledged})
	}
	want := []brief{
		{"socnet", "postmaster", 3, 3, 0, drill.Distribution{Count: 3, Min: 250, Median: 300, P90: 400, Max: 400}, 200, 4000, 3, 0, 12, 6, 300},
		{"socnet", "host", 3, 3, 0, drill.Distribution{Count: 3, Min: 300, Median: 350, P90: 450, Max: 450}, 220, 3500, 3, 0, 6, 3, 300},
		{"patroni", "postmaster", 3, 3, 3, drill.Distribution{Count: 3, Min: 1900, Median: 2100, P90: 2500, Max: 2500}, 1800, 0, 0, 0, 18, 9, 300},
		{"patroni", "host", 3, 2, 0, drill.Distribution{Count: 3, Min: 9000, Median: 12000, P90: 14000, Max: 14000}, 11500, 20000, 3, 1, 30, 15, 300},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rows (-want +got):\n%s", diff)
	}
	if c.OK {
		t.Error("a comparison with a run that lost a write is OK")
	}
	if err := drill.CompareError(c); err == nil || !strings.Contains(err.Error(), "patroni/host 1 of 3 runs failed") {
		t.Errorf("CompareError = %v", err)
	}

	var text bytes.Buffer
	if err := c.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("table:\n%s", text.String())
	for _, s := range []string{"250 ms / 300 ms / 400 ms / 400 ms", "12.0 s", "PROBLEM (patroni, host)", "verdict: FAIL"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("the text lacks %q", s)
		}
	}
	md := c.Markdown()
	for _, s := range []string{"2 × Test CPU, 1.0 GiB", "`scripts/bench.sh engines`", "2026-12-02 03:00",
		"| patroni | postmaster | 3 | 3 | 1900 ms / 2100 ms / 2500 ms / 2500 ms | 1800 ms | – | 3 |"} {
		if !strings.Contains(md, s) {
			t.Errorf("the markdown lacks %q:\n%s", s, md)
		}
	}

	var page bytes.Buffer
	if err := c.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	// The page is well-formed: every element closes (the SVG is XML).
	d := xml.NewDecoder(strings.NewReader(strings.Replace(page.String(), "<!DOCTYPE html>", "", 1)))
	d.Strict, d.AutoClose, d.Entity = false, xml.HTMLAutoClose, xml.HTMLEntity
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("the page does not parse: %v", err)
			}
			break
		}
	}
	if n := strings.Count(page.String(), "<circle"); n != 12 {
		t.Errorf("the strip chart has %d dots, want one per run (12)", n)
	}

	var js bytes.Buffer
	if err := c.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back drill.Comparison
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Schema != drill.CompareSchema || len(back.Rows) != 4 {
		t.Fatalf("JSON round trip: %v, %+v", err, back)
	}
}

func TestCompareEmptyAndOld(t *testing.T) {
	if c := drill.Compare(nil, "m", "c"); c.OK || len(c.Rows) != 0 {
		t.Errorf("no reports: %+v", c)
	}
	// A report from before --fault and engine: postmaster, engine unknown.
	old := fakeRun(time.Now(), 300, 2000, 0)
	c := drill.Compare([]drill.Report{drill.NewReport(drill.DrillFailover, "main", []drill.Run{old})}, "m", "c")
	if len(c.Rows) != 1 || c.Rows[0].Engine != "unknown" || c.Rows[0].Fault != "postmaster" || !c.OK {
		t.Errorf("an old report: %+v", c.Rows)
	}
}

func TestReplaceBetweenMarkers(t *testing.T) {
	doc := "# B\n\nbefore\n" + drill.CompareBegin + "\nold table\n" + drill.CompareEnd + "\nafter\n"
	got, err := drill.ReplaceBetweenMarkers(doc, "new table")
	if err != nil {
		t.Fatal(err)
	}
	want := "# B\n\nbefore\n" + drill.CompareBegin + "\nnew table\n" + drill.CompareEnd + "\nafter\n"
	if got != want {
		t.Errorf("replaced:\n%s\nwant:\n%s", got, want)
	}
	// Twice gives the same document.
	if again, _ := drill.ReplaceBetweenMarkers(got, "new table"); again != got {
		t.Errorf("not idempotent:\n%s", again)
	}
	added, err := drill.ReplaceBetweenMarkers("# B\n\ntext\n", "t")
	if err != nil || !strings.HasSuffix(added, "text\n\n## Failover: the engines compared\n\n"+drill.CompareBegin+"\nt\n"+drill.CompareEnd+"\n") {
		t.Errorf("without markers: %q, %v", added, err)
	}
	if _, err := drill.ReplaceBetweenMarkers(drill.CompareEnd+"\n"+drill.CompareBegin, "t"); err == nil {
		t.Error("markers out of order were accepted")
	}
	if _, err := drill.ReplaceBetweenMarkers(drill.CompareBegin+" only", "t"); err == nil {
		t.Error("a begin marker without an end was accepted")
	}
}

func TestReadReport(t *testing.T) {
	dir := t.TempDir()
	r := drill.NewReport(drill.DrillFailover, "main", []drill.Run{engineRun(time.Now(), "socnet", drill.FaultHost, 300, 200, ptr(3000), 0, 0)})
	path := filepath.Join(dir, "r.json")
	if err := r.WriteFile(path, drill.Report.WriteJSON); err != nil {
		t.Fatal(err)
	}
	back, err := drill.ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Engine != "socnet" || back.Fault != "host" || back.Runs[0].Fault != "host" || back.Promotion.Count != 1 {
		t.Errorf("read back: engine %q fault %q, run fault %q, promotion %+v", back.Engine, back.Fault, back.Runs[0].Fault, back.Promotion)
	}
	other := filepath.Join(dir, "other.json")
	if err := os.WriteFile(other, []byte(`{"schema": "socnet-load/1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := drill.ReadReport(other); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Errorf("another schema: %v", err)
	}
	if _, err := drill.ReadReport(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file was read")
	}
}

// TestComparePartitionRows: partition runs get rows of their own, after the
// kills, with the moments of two primaries and the late acknowledgements
// their watch saw; a kill's row says nothing of either.
func TestComparePartitionRows(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	cut := func(engine string, unavailableMS float64, overlaps int) drill.Run {
		run := engineRun(t0, engine, "cut-primary", unavailableMS, unavailableMS-100, ptr(9000), 0, 1)
		run.Drill = drill.DrillPartition
		run.Partition = &drill.PartitionVerdict{Overlaps: make([]drill.Overlap, overlaps)}
		if overlaps > 0 {
			run.Problems = append(run.Problems, "two writable primaries")
		}
		return run
	}
	reports := []drill.Report{
		drill.NewReport(drill.DrillPartition, "main", []drill.Run{cut("socnet", 1600, 0), cut("socnet", 1700, 0)}),
		drill.NewReport(drill.DrillPartition, "main", []drill.Run{cut("patroni", 14000, 1)}),
		comparedReports(t0)[1], // socnet, postmaster
	}
	c := drill.Compare(reports, "2 × Test CPU", "test")
	var got []string
	for _, r := range c.Rows {
		got = append(got, fmt.Sprintf("%s %s runs=%d passed=%d watched=%d two=%d", r.Engine, r.Fault, r.Runs, r.Passed, r.Watched, r.TwoPrimaries))
	}
	want := []string{
		"socnet postmaster runs=3 passed=3 watched=0 two=0",
		"socnet cut-primary runs=2 passed=2 watched=2 two=0",
		"patroni cut-primary runs=1 passed=0 watched=1 two=1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rows (-want +got):\n%s", diff)
	}
	md := c.Markdown()
	for _, s := range []string{"| two primaries / late acks |", "| 12 (6) | – |", "| cut-primary | 2 | 2 |", "| 1 / 0 |"} {
		if !strings.Contains(md, s) {
			t.Errorf("the markdown lacks %q:\n%s", s, md)
		}
	}
}
