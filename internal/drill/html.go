package drill

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// WriteHTML writes the report as a standalone HTML page: the summary of
// each run and its timeline chart (acknowledgements and errors per bucket,
// markers for the kill, the promotion and the rejoin).
func (r Report) WriteHTML(w io.Writer) error {
	type violationView struct {
		Violation Violation
		Chart     template.HTML
	}
	type runView struct {
		Run        Run
		Text       string
		Chart      template.HTML
		Violations []violationView
	}
	view := struct {
		Report Report
		Runs   []runView
		Text   string
	}{Report: r}
	for _, run := range r.Runs {
		var b strings.Builder
		writeRunText(&b, run)
		rv := runView{Run: run, Text: b.String(), Chart: template.HTML(TimelineSVG(run))}
		if h := run.History; h != nil {
			for _, v := range h.Examples {
				rv.Violations = append(rv.Violations, violationView{Violation: v,
					Chart: template.HTML(ViolationSVG(v, time.Duration(h.BoundMS*float64(time.Millisecond)), run.Started))})
			}
		}
		view.Runs = append(view.Runs, rv)
	}
	var all strings.Builder
	if err := r.WriteText(&all); err != nil {
		return err
	}
	view.Text = all.String()
	if err := pageTemplate.Execute(w, view); err != nil {
		return fmt.Errorf("write drill report html: %w", err)
	}
	return nil
}

var pageTemplate = template.Must(template.New("drill").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>socnet drill {{.Report.Drill}} ({{.Report.Cluster}}{{with .Report.Engine}}, {{.}}{{end}}{{with .Report.Fault}}, fault {{.}}{{end}})</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.pass { color: #1a7f37; } .fail { color: #c62828; }
svg text { font-family: sans-serif; }
</style></head><body>
<h1>socnet drill {{.Report.Drill}} on cluster {{.Report.Cluster}}{{with .Report.Engine}}, engine {{.}}{{end}}{{with .Report.Fault}}, fault {{.}}{{end}}:
{{if .Report.OK}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}}</h1>
{{range $i, $r := .Runs}}
<h2>Run {{$r.Run.RunID}}</h2>
{{$r.Chart}}
{{range $r.Violations}}<h3 class="fail">{{.Violation.Kind}}: {{.Violation.Why}}</h3>
{{.Chart}}
{{end}}<pre>{{$r.Text}}</pre>
{{end}}
<h2>Summary</h2>
<pre>{{.Text}}</pre>
</body></html>
`))

// Chart geometry, in SVG user units.
const (
	chartW, chartH            = 960.0, 300.0
	padL, padR, padT, padB    = 50.0, 20.0, 40.0, 36.0
	colorAck, colorUnknown    = "#2e7d32", "#c62828"
	colorFailed, colorGridRow = "#ef6c00", "#e0e0e0"
)

// eventColors marks each kind of event.
var eventColors = map[string]string{
	EventKill:      "#c62828",
	EventPromotion: "#1565c0",
	EventRejoin:    "#2e7d32",
	EventStop:      "#757575",
	EventHold:      "#6a1b9a",
}

// TimelineSVG draws a run's timeline: stacked bars per bucket
// (acknowledged, in doubt, failed) and a vertical line per event.
func TimelineSVG(run Run) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, chartW, chartH, chartW, chartH)
	b.WriteString(`<rect width="100%" height="100%" fill="#fff"/>`)
	unit := "writes"
	if run.Fill != nil {
		unit = "rows"
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="16" font-size="13">%s per %d ms: `, padL, unit, run.BucketMS)
	fmt.Fprintf(&b, `<tspan fill="%s">■ acknowledged</tspan> <tspan fill="%s">■ in doubt</tspan> <tspan fill="%s">■ failed</tspan></text>`,
		colorAck, colorUnknown, colorFailed)

	span := float64(len(run.Timeline)*run.BucketMS) / 1000
	if span <= 0 {
		span = 1
	}
	peak := 1
	for _, k := range run.Timeline {
		peak = max(peak, k.Acks+k.Failed+k.Unknown)
	}
	plotW, plotH := chartW-padL-padR, chartH-padT-padB
	x := func(sec float64) float64 { return padL + plotW*sec/span }
	y := func(v int) float64 { return padT + plotH*(1-float64(v)/float64(peak)) }

	// Axes and grid.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000"/>`, padL, padT+plotH, padL+plotW, padT+plotH)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000"/>`, padL, padT, padL, padT+plotH)
	step := tickStep(span)
	for s := 0.0; s <= span+1e-9; s += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`, x(s), padT, x(s), padT+plotH, colorGridRow)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%gs</text>`, x(s), padT+plotH+14, s)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">%d</text>`, padL-4, padT+4, peak)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">0</text>`, padL-4, padT+plotH)

	// Bars.
	barW := math.Max(1, plotW*float64(run.BucketMS)/1000/span-0.5)
	for _, k := range run.Timeline {
		base := 0
		for _, part := range []struct {
			n     int
			color string
		}{{k.Acks, colorAck}, {k.Unknown, colorUnknown}, {k.Failed, colorFailed}} {
			if part.n == 0 {
				continue
			}
			top, bottom := y(base+part.n), y(base)
			fmt.Fprintf(&b, `<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="%s"/>`, x(k.T), top, barW, bottom-top, part.color)
			base += part.n
		}
	}

	// Events.
	for i, e := range run.Events {
		at := e.At.Sub(run.Started).Seconds()
		color := eventColors[e.Kind]
		if color == "" {
			color = "#000"
		}
		label := e.Kind
		if e.Node != "" {
			label += " " + e.Node
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="5,3"/>`,
			x(at), padT-6, x(at), padT+plotH, color)
		// Labels right of their marker, or left of it near the right edge.
		lx, anchor := x(at)+3, "start"
		if x(at) > padL+0.8*plotW {
			lx, anchor = x(at)-3, "end"
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s" text-anchor="%s">%s</text>`,
			lx, padT-6+float64(i%3)*12, color, anchor, html.EscapeString(label))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// tickStep returns a round step giving about ten ticks over span seconds.
func tickStep(span float64) float64 {
	raw := span / 10
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// Geometry of a violation's chart.
const (
	opRowH, opLabelW = 34.0, 430.0
	colorWrite       = "#1565c0"
	colorRead        = "#6a1b9a"
	colorBound       = "#ffcc80"
)

// ViolationSVG draws the operations that show a violation on a time axis:
// one row per operation, a bar from invoke to completion labelled with
// what it did and saw, and, after each acknowledged write, the band of
// the staleness bound in which a read may still lack it.
func ViolationSVG(v Violation, bound time.Duration, start time.Time) string {
	if len(v.Ops) == 0 {
		return ""
	}
	from, to := v.Ops[0].Invoke, v.Ops[0].Complete
	for _, op := range v.Ops {
		if op.Invoke.Before(from) {
			from = op.Invoke
		}
		end := op.Complete
		if op.Kind == OpWrite && op.Outcome == Acknowledged {
			end = op.Complete.Add(bound)
		}
		if end.After(to) {
			to = end
		}
	}
	span := to.Sub(from).Seconds()
	if span <= 0 {
		span = 0.001
	}
	pad := span * 0.05
	lo, hi := from.Sub(start).Seconds()-pad, to.Sub(start).Seconds()+pad
	h := padT + opRowH*float64(len(v.Ops)) + padB
	plotW := chartW - padR - opLabelW - 10
	x := func(t time.Time) float64 { return opLabelW + 10 + plotW*(t.Sub(start).Seconds()-lo)/(hi-lo) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, chartW, h, chartW, h)
	b.WriteString(`<rect width="100%" height="100%" fill="#fff"/>`)
	fmt.Fprintf(&b, `<text x="4" y="16" font-size="13">%s on %s (times in s since the run started; the orange band is the %s staleness bound)</text>`,
		html.EscapeString(v.Kind), html.EscapeString(v.Key), formatMillis(millis(bound)))
	axisY := padT + opRowH*float64(len(v.Ops))
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000"/>`, opLabelW+10, axisY, opLabelW+10+plotW, axisY)
	step := tickStep(hi - lo)
	for s := math.Ceil(lo/step) * step; s <= hi+1e-9; s += step {
		px := opLabelW + 10 + plotW*(s-lo)/(hi-lo)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`, px, padT-4, px, axisY, colorGridRow)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%.3gs</text>`, px, axisY+14, s)
	}
	for i, op := range v.Ops {
		y := padT + opRowH*float64(i)
		color := colorRead
		if op.Kind == OpWrite {
			color = colorWrite
			if op.Outcome == Acknowledged {
				fmt.Fprintf(&b, `<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="%s"/>`,
					x(op.Complete), y+4, x(op.Complete.Add(bound))-x(op.Complete), opRowH-8, colorBound)
			}
		}
		w := math.Max(2, x(op.Complete)-x(op.Invoke))
		fmt.Fprintf(&b, `<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="%s"/>`, x(op.Invoke), y+10, w, opRowH-20, color)
		label := fmt.Sprintf("#%d %s %s %s", op.ID, op.Session, op.Kind, op.Outcome)
		detail := ""
		switch {
		case op.Kind == OpWrite:
			detail = op.Value
		case op.Outcome == Acknowledged:
			detail = "saw " + strings.Join(op.Seen, ", ")
			if len(op.Seen) == 0 {
				detail = "saw nothing"
			}
		}
		if op.Final {
			label += " final"
		}
		if op.InSession {
			label += " in session"
		}
		if op.Node != "" {
			label += " on " + op.Node
		}
		if len(detail) > 70 {
			detail = detail[:67] + "..."
		}
		fmt.Fprintf(&b, `<text x="4" y="%.1f" font-size="11" fill="%s">%s</text>`, y+14, color, html.EscapeString(label))
		fmt.Fprintf(&b, `<text x="4" y="%.1f" font-size="10" fill="#555">%s</text>`, y+27, html.EscapeString(detail))
	}
	b.WriteString(`</svg>`)
	return b.String()
}
