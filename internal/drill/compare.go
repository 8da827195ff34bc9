package drill

import (
	"bufio"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CompareSchema names the JSON format of a Comparison.
const CompareSchema = "socnet-drill-compare/1"

// Markers delimit the comparison's table in a Markdown document
// (docs/BENCHMARKS.md); WriteMarkdownInto replaces what is between them.
const (
	CompareBegin = "<!-- drill compare: begin -->"
	CompareEnd   = "<!-- drill compare: end -->"
)

// CompareRow is the failover runs of one engine under one fault.
type CompareRow struct {
	Engine string `json:"engine"`
	Fault  string `json:"fault"`
	Runs   int    `json:"runs"`
	// Passed counts the runs whose verdict is PASS.
	Passed int `json:"passed"`
	// RestartedInPlace counts the runs in which the engine restarted the
	// killed primary instead of promoting another node.
	RestartedInPlace int          `json:"restarted_in_place"`
	Unavailability   Distribution `json:"unavailability"`
	Promotion        Distribution `json:"promotion"`
	// PromotionFromHistory counts the runs whose promotion time comes
	// from the failover history (the rest polled the nodes).
	PromotionFromHistory int          `json:"promotion_from_history"`
	Rejoin               Distribution `json:"rejoin"`
	// Lost sums the acknowledged writes lost (absent from some node); must
	// be 0. LostEverywhere sums those absent from every node read.
	Lost           int64 `json:"lost"`
	LostEverywhere int64 `json:"lost_everywhere"`
	// InDoubt sums the writes whose client could not know the outcome, and
	// InDoubtPresent those of them found in the database.
	InDoubt        int `json:"in_doubt"`
	InDoubtPresent int `json:"in_doubt_present"`
	Acknowledged   int `json:"acknowledged"`
	// Unavailable is every run's unavailability in milliseconds, in run
	// order (null for a run whose writes never came back).
	Unavailable []*float64 `json:"unavailable_ms"`
	// Watched counts the partition runs, whose every node's role was
	// polled throughout; TwoPrimaries sums the moments they saw two
	// writable primaries and LateAcks the writes acknowledged by a node
	// after another was promoted. Both must be 0.
	Watched      int `json:"watched"`
	TwoPrimaries int `json:"two_primaries"`
	LateAcks     int `json:"late_acks"`
	// Problems quotes the failed runs' first problems.
	Problems []string `json:"problems"`
}

// Comparison is the failover drill's runs grouped by engine and fault:
// what `socnet drill compare` prints and `scripts/bench.sh engines`
// records.
type Comparison struct {
	Schema string `json:"schema"`
	// From and To are when the first run started and the last ended.
	From    time.Time    `json:"from"`
	To      time.Time    `json:"to"`
	Machine string       `json:"machine"`
	Command string       `json:"command"`
	Rows    []CompareRow `json:"rows"`
	OK      bool         `json:"ok"`
}

// Compare groups the failover and partition runs of reports by engine and
// fault (a partition run's fault is its cut, "cut-primary" ...): engines in
// the order they first appear, faults as Faults lists them, then the cuts.
// Runs of other drills are left out.
func Compare(reports []Report, machine, command string) Comparison {
	c := Comparison{Schema: CompareSchema, Machine: machine, Command: command, OK: true}
	type key struct{ engine, fault string }
	var keys []key
	runs := map[key][]Run{}
	for _, r := range reports {
		for _, run := range r.Runs {
			if run.Drill != DrillFailover && run.Drill != DrillPartition {
				continue
			}
			k := key{orUnknown(run.Engine), run.Fault}
			switch {
			case k.fault != "":
			case run.Drill == DrillPartition:
				k.fault = "cut" // reports from before --repeat
			default:
				k.fault = string(FaultPostmaster) // reports from before --fault
			}
			if _, ok := runs[k]; !ok {
				keys = append(keys, k)
			}
			runs[k] = append(runs[k], run)
			if c.From.IsZero() || run.Started.Before(c.From) {
				c.From = run.Started
			}
			if run.Ended.After(c.To) {
				c.To = run.Ended
			}
		}
	}
	engineRank := map[string]int{}
	for _, k := range keys {
		if _, ok := engineRank[k.engine]; !ok {
			engineRank[k.engine] = len(engineRank)
		}
	}
	faultRank := func(f string) int {
		if i := slices.Index(Faults, Fault(f)); i >= 0 {
			return i
		}
		return len(Faults)
	}
	slices.SortStableFunc(keys, func(a, b key) int {
		if d := engineRank[a.engine] - engineRank[b.engine]; d != 0 {
			return d
		}
		return faultRank(a.fault) - faultRank(b.fault)
	})
	for _, k := range keys {
		row := compareRow(k.engine, k.fault, runs[k])
		c.OK = c.OK && row.Passed == row.Runs
		c.Rows = append(c.Rows, row)
	}
	c.OK = c.OK && len(c.Rows) > 0
	return c
}

func compareRow(engine, fault string, runs []Run) CompareRow {
	row := CompareRow{Engine: engine, Fault: fault, Runs: len(runs), Unavailable: []*float64{}, Problems: []string{}}
	var unav, prom, rejoin []time.Duration
	for _, run := range runs {
		row.Unavailable = append(row.Unavailable, run.UnavailableMS)
		if run.UnavailableMS != nil {
			unav = append(unav, msDuration(*run.UnavailableMS))
		}
		if run.PromotionMS != nil {
			prom = append(prom, msDuration(*run.PromotionMS))
			if run.PromotionFrom == PromotionHistory {
				row.PromotionFromHistory++
			}
		}
		if run.RejoinMS != nil {
			rejoin = append(rejoin, msDuration(*run.RejoinMS))
		}
		if run.RestartedInPlace {
			row.RestartedInPlace++
		}
		if p := run.Partition; p != nil {
			row.Watched++
			row.TwoPrimaries += len(p.Overlaps)
			row.LateAcks += len(p.LateAcks)
		}
		row.Lost += run.Lost()
		if v := run.Verdict; v != nil {
			row.LostEverywhere += int64(v.LostEverywhere)
			row.InDoubt += v.Unknown
			row.InDoubtPresent += v.PresentUnacknowledged
			row.Acknowledged += v.Acknowledged
		}
		if run.OK() {
			row.Passed++
		} else {
			row.Problems = append(row.Problems, run.RunID+": "+run.Problems[0])
		}
	}
	row.Unavailability = Distribute(unav)
	row.Promotion = Distribute(prom)
	row.Rejoin = Distribute(rejoin)
	return row
}

// ReadReport reads a report written by `socnet drill ... --json`.
func ReadReport(path string) (Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Report{}, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return Report{}, fmt.Errorf("read report %s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return Report{}, fmt.Errorf("read report %s: schema %q, want %q", path, r.Schema, SchemaVersion)
	}
	return r, nil
}

// Machine describes this machine from /proc/cpuinfo and /proc/meminfo:
// "2 × Intel(R) Xeon(R) Processor, 23.5 GiB".
func Machine() string {
	cpus, model := 0, ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, ok := strings.Cut(s.Text(), ":")
			switch strings.TrimSpace(k) {
			case "processor":
				cpus++
			case "model name":
				if ok && model == "" {
					model = strings.TrimSpace(v)
				}
			}
		}
		f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
				}
			}
		}
	}
	if model == "" {
		model = "unknown CPU"
	}
	out := fmt.Sprintf("%d × %s", cpus, model)
	if mem != "" {
		out += ", " + mem
	}
	return out
}

// distText renders min / median / p90 / max, or "–" without runs.
func distText(d Distribution) string {
	if d.Count == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s / %s / %s", formatMillis(d.Min), formatMillis(d.Median), formatMillis(d.P90), formatMillis(d.Max))
}

// medianText renders the median and how many runs it is of, when fewer
// than all.
func medianText(d Distribution, runs int) string {
	if d.Count == 0 {
		return "–"
	}
	s := formatMillis(d.Median)
	if d.Count < runs {
		s += fmt.Sprintf(" (%d of %d runs)", d.Count, runs)
	}
	return s
}

// tableRows renders the rows as the cells of the comparison's table.
func (c Comparison) tableRows() (header []string, rows [][]string) {
	header = []string{"engine", "fault", "runs", "passed", "write unavailability min / median / p90 / max",
		"promotion (or restart in place) median", "rejoin median", "restarted in place", "acknowledged", "acknowledged writes lost", "writes in doubt (present)",
		"two primaries / late acks"}
	for _, r := range c.Rows {
		watched := "–" // a kill: nothing was cut off to claim the role twice
		if r.Watched > 0 {
			watched = fmt.Sprintf("%d / %d", r.TwoPrimaries, r.LateAcks)
		}
		rows = append(rows, []string{r.Engine, r.Fault, strconv.Itoa(r.Runs), strconv.Itoa(r.Passed),
			distText(r.Unavailability), medianText(r.Promotion, r.Runs), medianText(r.Rejoin, r.Runs),
			strconv.Itoa(r.RestartedInPlace), strconv.Itoa(r.Acknowledged), lostText(r),
			fmt.Sprintf("%d (%d)", r.InDoubt, r.InDoubtPresent), watched})
	}
	return header, rows
}

// lostText renders the acknowledged writes lost, and how many of them no
// node had when that is fewer.
func lostText(r CompareRow) string {
	s := strconv.FormatInt(r.Lost, 10)
	if r.LostEverywhere != r.Lost {
		s += fmt.Sprintf(" (%d on no node)", r.LostEverywhere)
	}
	return s
}

// WriteText writes the comparison as an aligned table, then the failed
// runs' problems.
func (c Comparison) WriteText(w io.Writer) error {
	header, rows := c.tableRows()
	widths := make([]int, len(header))
	for _, r := range append([][]string{header}, rows...) {
		for i, cell := range r {
			widths[i] = max(widths[i], len([]rune(cell)))
		}
	}
	var b strings.Builder
	for _, r := range append([][]string{header}, rows...) {
		for i, cell := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(cell)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(cell))))
			}
		}
		b.WriteString("\n")
	}
	for _, r := range c.Rows {
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "PROBLEM (%s, %s): %s\n", r.Engine, r.Fault, p)
		}
	}
	if c.OK {
		b.WriteString("verdict: PASS (every run)\n")
	} else {
		b.WriteString("verdict: FAIL\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Markdown returns the comparison as the block WriteMarkdownInto puts
// between the markers: when, where and how it was measured, and the table.
func (c Comparison) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "**Run:** %s – %s UTC, `%s`.  \n", c.From.UTC().Format("2006-01-02 15:04"), c.To.UTC().Format("15:04"), c.Command)
	fmt.Fprintf(&b, "**Machine:** %s.\n\n", c.Machine)
	header, rows := c.tableRows()
	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat("---|", len(header)) + "\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	for _, r := range c.Rows {
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "\n- FAIL (%s, %s): %s", r.Engine, r.Fault, strings.ReplaceAll(p, "\n", " "))
		}
	}
	if !c.OK {
		b.WriteString("\n")
	}
	return b.String()
}

// ReplaceBetweenMarkers returns doc with what lies between CompareBegin and
// CompareEnd replaced by block; a document without the markers gets them,
// with block, under a heading at its end.
func ReplaceBetweenMarkers(doc, block string) (string, error) {
	i := strings.Index(doc, CompareBegin)
	j := strings.Index(doc, CompareEnd)
	switch {
	case i < 0 && j < 0:
		return strings.TrimRight(doc, "\n") + "\n\n## Failover: the engines compared\n\n" +
			CompareBegin + "\n" + block + "\n" + CompareEnd + "\n", nil
	case i < 0 || j < i:
		return "", fmt.Errorf("the markers %q and %q are not in order", CompareBegin, CompareEnd)
	}
	return doc[:i+len(CompareBegin)] + "\n" + block + "\n" + doc[j:], nil
}

// WriteMarkdownInto puts the comparison between the markers of the
// Markdown file at path.
func (c Comparison) WriteMarkdownInto(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("write comparison into %s: %w", path, err)
	}
	out, err := ReplaceBetweenMarkers(string(b), c.Markdown())
	if err != nil {
		return fmt.Errorf("write comparison into %s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		return fmt.Errorf("write comparison into %s: %w", path, err)
	}
	return nil
}

// WriteJSON writes the comparison as indented JSON.
func (c Comparison) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("write comparison: %w", err)
	}
	return nil
}

// WriteHTML writes the comparison as a standalone page: the table, and a
// strip chart of every run's write unavailability per engine and fault.
func (c Comparison) WriteHTML(w io.Writer) error {
	header, rows := c.tableRows()
	var text strings.Builder
	if err := c.WriteText(&text); err != nil {
		return err
	}
	view := struct {
		C      Comparison
		Header []string
		Rows   [][]string
		Chart  template.HTML
		Text   string
	}{C: c, Header: header, Rows: rows, Chart: template.HTML(c.StripSVG()), Text: text.String()}
	if err := comparePage.Execute(w, view); err != nil {
		return fmt.Errorf("write comparison html: %w", err)
	}
	return nil
}

var comparePage = template.Must(template.New("compare").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>socnet failover drill: engines compared</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, td:nth-child(2) { text-align: left; }
.pass { color: #1a7f37; } .fail { color: #c62828; }
svg text { font-family: sans-serif; }
</style></head><body>
<h1>socnet failover drill, engines compared:
{{if .C.OK}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}}</h1>
<p>{{.C.From.UTC.Format "2006-01-02 15:04"}} – {{.C.To.UTC.Format "15:04"}} UTC on {{.C.Machine}}; <code>{{.C.Command}}</code></p>
<table><tr>{{range .Header}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
<h2>Write unavailability of every run</h2>
{{.Chart}}
<pre>{{.Text}}</pre>
</body></html>
`))

// StripSVG draws one lane per engine and fault with a dot per run at its
// write unavailability (kill -> first acknowledged write after it), and a
// bar at the median, on a logarithmic axis: the engines differ by orders
// of magnitude.
func (c Comparison) StripSVG() string {
	const laneH, labelW = 36.0, 170.0
	h := padT + laneH*float64(len(c.Rows)) + padB
	plotW := chartW - labelW - padR
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range c.Rows {
		for _, u := range r.Unavailable {
			if u != nil && *u > 0 {
				lo, hi = math.Min(lo, *u), math.Max(hi, *u)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 100, 1000
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	x := func(ms float64) float64 {
		ms = math.Max(ms, lo)
		return labelW + plotW*(math.Log10(ms)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, chartW, h, chartW, h)
	b.WriteString(`<rect width="100%" height="100%" fill="#fff"/>`)
	fmt.Fprintf(&b, `<text x="4" y="16" font-size="13">write unavailability per run (log scale); <tspan fill="%s">● run</tspan>, <tspan fill="%s">| median</tspan></text>`, colorAck, colorUnknown)
	axisY := padT + laneH*float64(len(c.Rows))
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000"/>`, labelW, axisY, labelW+plotW, axisY)
	for d := lo; d <= hi*1.0001; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v > hi*1.0001 {
				break
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`, x(v), padT-4, x(v), axisY, colorGridRow)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, x(v), axisY+14, formatMillis(v))
		}
	}
	for i, r := range c.Rows {
		y := padT + laneH*float64(i) + laneH/2
		fmt.Fprintf(&b, `<text x="4" y="%.1f" font-size="12">%s, %s</text>`, y+4, template.HTMLEscapeString(r.Engine), template.HTMLEscapeString(r.Fault))
		for _, u := range r.Unavailable {
			if u == nil {
				continue
			}
			fmt.Fprintf(&b, `<circle cx="%.2f" cy="%.2f" r="4" fill="%s" fill-opacity="0.6"/>`, x(*u), y, colorAck)
		}
		if r.Unavailability.Count > 0 {
			m := x(r.Unavailability.Median)
			fmt.Fprintf(&b, `<line x1="%.2f" y1="%.2f" x2="%.2f" y2="%.2f" stroke="%s" stroke-width="3"/>`, m, y-12, m, y+12, colorUnknown)
		}
	}
	b.WriteString(`</svg>`)
	return b.String()
}
