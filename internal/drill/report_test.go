package drill_test

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/drill"
)

// fakeRun is a finished failover run with the given figures.
func fakeRun(t0 time.Time, unavailableMS, rejoinMS float64, lost int) drill.Run {
	ms := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Millisecond))) }
	run := drill.Run{
		RunID: "r", Drill: drill.DrillFailover, Cluster: "main", Writes: "test writes", Writers: 2,
		Started: t0, Stopped: ms(3000), Ended: ms(5000), OldPrimary: "main-1", NewPrimary: "main-2",
		Events: []drill.Event{
			{Kind: drill.EventKill, Node: "main-1", At: ms(1000)},
			{Kind: drill.EventPromotion, Node: "main-2", At: ms(1400)},
			{Kind: drill.EventStop, At: ms(3000)},
			{Kind: drill.EventRejoin, Node: "main-1", At: ms(1000 + rejoinMS)},
		},
		UnavailableMS: &unavailableMS, RejoinMS: &rejoinMS,
		Errors:   map[string]int{"503": 3},
		BucketMS: 100,
		Timeline: []drill.Bucket{{T: 0, Acks: 5}, {T: 0.1, Acks: 4, Unknown: 1}, {T: 0.2, Failed: 2}},
		Verdict:  &drill.Verdict{Lost: lost, Problems: []string{}},
		Problems: []string{},
	}
	if lost > 0 {
		run.Problems = append(run.Problems, "main-2 lacks acknowledged writes")
	}
	return run
}

func TestReportSummarizesRepeatedRuns(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var runs []drill.Run
	for i, u := range []float64{900, 300, 500, 700, 1100} {
		runs = append(runs, fakeRun(t0, u, 2000+float64(i)*100, 0))
	}
	r := drill.NewReport(drill.DrillFailover, "main", runs)
	if !r.OK || r.TotalLost != 0 {
		t.Fatalf("OK %v, lost %d", r.OK, r.TotalLost)
	}
	want := drill.Distribution{Count: 5, Min: 300, Median: 700, P90: 1100, Max: 1100}
	if diff := cmp.Diff(want, r.Unavailability); diff != "" {
		t.Errorf("unavailability (-want +got):\n%s", diff)
	}
	if err := drill.VerdictError(r); err != nil {
		t.Errorf("VerdictError of a passing report: %v", err)
	}
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"write unavailability: min 300 ms, median 700 ms, p90 1100 ms, max 1100 ms (5 runs)", "verdict: PASS"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text lacks %q:\n%s", s, text.String())
		}
	}
}

func TestReportFailsOnLoss(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r := drill.NewReport(drill.DrillFailover, "main", []drill.Run{fakeRun(t0, 500, 2000, 0), fakeRun(t0, 500, 2000, 2)})
	if r.OK || r.TotalLost != 2 {
		t.Fatalf("OK %v, lost %d", r.OK, r.TotalLost)
	}
	err := drill.VerdictError(r)
	var coded interface{ ExitCode() int }
	if !errors.As(err, &coded) || coded.ExitCode() != drill.ExitCodeFailed {
		t.Fatalf("VerdictError = %v, want an error with exit code %d", err, drill.ExitCodeFailed)
	}
	if !strings.Contains(err.Error(), "2 acknowledged writes lost") {
		t.Errorf("error %q does not say what was lost", err)
	}
}

func TestReportFiles(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r := drill.NewReport(drill.DrillFailover, "main", []drill.Run{fakeRun(t0, 400, 2500, 0)})
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	if err := r.WriteFile(jsonPath, drill.Report.WriteJSON); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFile(htmlPath, drill.Report.WriteHTML); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var back drill.Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Schema != drill.SchemaVersion || len(back.Runs) != 1 || *back.Runs[0].UnavailableMS != 400 {
		t.Errorf("JSON round trip: schema %q, %d runs", back.Schema, len(back.Runs))
	}

	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	svg := regexp.MustCompile(`(?s)<svg .*?</svg>`).Find(page)
	if svg == nil {
		t.Fatal("the page has no chart")
	}
	// The chart must be well-formed XML with one bar per non-empty part of a
	// bucket and one marker per event.
	dec := xml.NewDecoder(strings.NewReader(string(svg)))
	rects, lines, labels := 0, 0, map[string]bool{}
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("chart is not well-formed: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			switch el.Name.Local {
			case "rect":
				rects++
			case "line":
				for _, a := range el.Attr {
					if a.Name.Local == "stroke-dasharray" {
						lines++
					}
				}
			}
		case xml.CharData:
			labels[strings.TrimSpace(string(el))] = true
		}
	}
	if rects != 1+4 { // background + acks, acks, unknown, failed
		t.Errorf("%d rects, want 5", rects)
	}
	if lines != 4 {
		t.Errorf("%d event markers, want 4", lines)
	}
	for _, l := range []string{"kill main-1", "promotion main-2", "rejoin main-1", "stop"} {
		if !labels[l] {
			t.Errorf("no label %q in the chart", l)
		}
	}
	if !strings.Contains(string(page), "PASS") {
		t.Error("the page does not show the verdict")
	}
}
