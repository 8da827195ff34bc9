package load

import (
	"fmt"
	"html/template"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// describe returns a one-line description of how r was run.
func describe(r *Result) string {
	var b strings.Builder
	parts := make([]string, len(r.Mix))
	for i, p := range r.Mix {
		parts[i] = p.Scenario + "=" + strconv.Itoa(p.Weight)
	}
	fmt.Fprintf(&b, "mix %s, ", strings.Join(parts, ","))
	if r.Mode == "open" {
		fmt.Fprintf(&b, "open loop at %s req/s (up to %d in flight)", formatValue(r.Rate), r.Connections)
	} else {
		fmt.Fprintf(&b, "closed loop, %d connections", r.Connections)
	}
	fmt.Fprintf(&b, ", %s s against %s, users from %s", strconv.FormatFloat(r.Duration, 'f', 1, 64), r.Target, r.Data)
	return b.String()
}

func count(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }

func ms(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', 1, 64)
}

// sortedCounts returns "key n" pairs of m with n > 0, sorted by key.
func sortedCounts(m map[string]int64) [][2]string {
	keys := make([]string, 0, len(m))
	for k, n := range m {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([][2]string, len(keys))
	for i, k := range keys {
		out[i] = [2]string{k, strconv.FormatInt(m[k], 10)}
	}
	return out
}

// errorStatuses returns the status codes of r that are errors (not 2xx).
func errorStatuses(r *Result) map[string]int64 {
	m := map[string]int64{}
	for code, n := range r.StatusCodes {
		if code == "none" || len(code) == 3 && code[0] == '2' {
			continue // 2xx are not errors; "none" errors are counted by kind
		}
		m[code] = n
	}
	return m
}

// WriteSummary writes a plain-text summary of r.
func WriteSummary(w io.Writer, r *Result) error {
	var b strings.Builder
	title := "socnet load"
	if r.Label != "" {
		title += ": " + r.Label
	}
	fmt.Fprintf(&b, "%s\n  %s\n", title, describe(r))
	if r.Interrupted {
		b.WriteString("  interrupted before the end\n")
	}
	fmt.Fprintf(&b, "requests   %d: %d ok, %d errors; %s req/s\n", r.Requests, r.Successes, r.Errors, formatValue(r.Throughput))
	if r.Unsent > 0 {
		fmt.Fprintf(&b, "unsent     %d requests of the schedule were never sent: the generator or its connections could not keep up\n", r.Unsent)
	}
	if r.Aborted > 0 {
		fmt.Fprintf(&b, "aborted    %d requests were still running when the run was stopped\n", r.Aborted)
	}
	l := r.Latency
	fmt.Fprintf(&b, "latency ms p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
	if r.Mode == "open" {
		s := r.ServiceTime
		fmt.Fprintf(&b, "service ms p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (from the actual send)\n",
			ms(s.P50), ms(s.P90), ms(s.P99), ms(s.P999), ms(s.Max))
	}
	if r.Errors > 0 {
		b.WriteString("errors    ")
		for _, kv := range sortedCounts(errorStatuses(r)) {
			fmt.Fprintf(&b, " status %s: %s;", kv[0], kv[1])
		}
		for _, kv := range sortedCounts(r.ErrorKinds) {
			if kv[0] != "status" {
				fmt.Fprintf(&b, " %s: %s;", kv[0], kv[1])
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "generator  GOMAXPROCS %d, CPU %s s = %s%% of one core\n", r.Generator.GOMAXPROCS,
		strconv.FormatFloat(r.Generator.CPUSeconds, 'f', 2, 64), strconv.FormatFloat(r.Generator.CPUPercent, 'f', 1, 64))
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', tabwriter.AlignRight)
	if len(r.Ops) > 0 {
		b.WriteString("\n")
		fmt.Fprintln(tw, "operation\trequests\terrors\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\t")
		for _, o := range r.Ops {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t\n", o.Name, o.Requests, o.Errors,
				ms(o.Latency.P50), ms(o.Latency.P99), ms(o.Latency.P999), ms(o.Latency.Max))
		}
		tw.Flush()
	}
	if len(r.Nodes) > 0 {
		b.WriteString("\n")
		fmt.Fprintln(tw, "node\trole\ttps\tshare\ttup ret/s\ttup fetch/s\ttup ins/s\tcpu %\tmax lag s\tdown\t")
		for _, n := range r.Nodes {
			per := func(v int64) string {
				if r.Duration <= 0 {
					return "0"
				}
				return formatValue(float64(v) / r.Duration)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s%%\t%s\t%s\t%s\t%s\t%s\t%d\t\n", n.Name, n.Role, formatValue(n.TPS),
				strconv.FormatFloat(100*n.TPSShare, 'f', 1, 64), per(n.TupReturned), per(n.TupFetched), per(n.TupInserted),
				pct(n.CPUPercent), strconv.FormatFloat(n.MaxLagSeconds, 'f', 2, 64), n.DownSamples)
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteCompareSummary writes a plain-text comparison of run b with run a.
func WriteCompareSummary(w io.Writer, a, b *Result) error {
	la, lb := runLabels(a, b)
	var sb strings.Builder
	fmt.Fprintf(&sb, "A: %s\n   %s\nB: %s\n   %s\n\n", la, describe(a), lb, describe(b))
	tw := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tA\tB\tB/A\t")
	for _, m := range compareMetrics(a, b) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", m.Name, m.A, m.B, m.Ratio)
	}
	tw.Flush()
	if names := nodeNames(a, b); len(names) > 0 {
		sb.WriteString("\n")
		fmt.Fprintln(tw, "node\tA role\tA tps\tA share\tA cpu %\tB role\tB tps\tB share\tB cpu %\t")
		for _, row := range compareNodes(a, b) {
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

type metricRow struct{ Name, A, B, Ratio string }

func compareMetrics(a, b *Result) []metricRow {
	row := func(name string, va, vb float64, f func(float64) string) metricRow {
		r := metricRow{Name: name, A: f(va), B: f(vb), Ratio: "-"}
		if va != 0 {
			r.Ratio = strconv.FormatFloat(100*vb/va, 'f', 0, 64) + "%"
		}
		return r
	}
	return []metricRow{
		row("throughput req/s", a.Throughput, b.Throughput, formatValue),
		row("requests", float64(a.Requests), float64(b.Requests), count),
		row("errors", float64(a.Errors), float64(b.Errors), count),
		row("p50 ms", a.Latency.P50, b.Latency.P50, ms),
		row("p90 ms", a.Latency.P90, b.Latency.P90, ms),
		row("p99 ms", a.Latency.P99, b.Latency.P99, ms),
		row("p99.9 ms", a.Latency.P999, b.Latency.P999, ms),
		row("max ms", a.Latency.Max, b.Latency.Max, ms),
		row("generator cpu %", a.Generator.CPUPercent, b.Generator.CPUPercent, formatValue),
	}
}

// compareNodes returns, per node, its role, tps, share and CPU in a and b.
func compareNodes(a, b *Result) [][]string {
	var rows [][]string
	for _, name := range nodeNames(a, b) {
		row := []string{name}
		for _, r := range []*Result{a, b} {
			n, ok := findNode(r, name)
			if !ok {
				row = append(row, "-", "-", "-", "-")
				continue
			}
			row = append(row, n.Role, formatValue(n.TPS), strconv.FormatFloat(100*n.TPSShare, 'f', 1, 64)+"%", pct(n.CPUPercent))
		}
		rows = append(rows, row)
	}
	return rows
}

// htmlChart is a chart rendered for the HTML report.
type htmlChart struct {
	Title string
	SVG   template.HTML
}

func svgCharts(charts []namedChart) []htmlChart {
	out := make([]htmlChart, len(charts))
	for i, c := range charts {
		// renderSVG escapes every text it writes.
		out[i] = htmlChart{Title: c.c.title(), SVG: template.HTML(renderSVG(c.c, ChartWidth, ChartHeight))}
	}
	return out
}

var funcs = template.FuncMap{
	"ms":       ms,
	"num":      formatValue,
	"pct":      pct,
	"share":    func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" },
	"counts":   sortedCounts,
	"errcodes": errorStatuses,
	"describe": describe,
	"time":     func(t time.Time) string { return t.Format(time.RFC3339) },
	"f2":       func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) },
}

const htmlHead = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;color:#212529;padding:0 12px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:right}th{background:#f1f3f5}
td:first-child,th:first-child{text-align:left}
.meta{color:#495057;font-size:14px}.warn{color:#c92a2a}
.chart{margin:16px 0}.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
</style></head><body>
`

var runTemplate = template.Must(template.New("run").Funcs(funcs).Parse(htmlHead + `
<h1>{{.Title}}</h1>
{{with .R}}
<p class="meta">{{describe .}}<br>started {{time .StartedAt}}, {{f2 .Duration}} s</p>
{{if .Interrupted}}<p class="warn">The run was interrupted before its end.</p>{{end}}
{{if .Unsent}}<p class="warn">{{.Unsent}} requests of the schedule were never sent: the generator or its connections could not keep up.</p>{{end}}
<h2>Summary</h2>
<table>
<tr><th>requests</th><th>ok</th><th>errors</th><th>req/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>
<tr><td>{{.Requests}}</td><td>{{.Successes}}</td><td>{{.Errors}}</td><td>{{num .Throughput}}</td><td>{{ms .Latency.P50}}</td><td>{{ms .Latency.P90}}</td><td>{{ms .Latency.P99}}</td><td>{{ms .Latency.P999}}</td><td>{{ms .Latency.Max}}</td></tr>
</table>
{{if eq .Mode "open"}}<p class="meta">Latency counts from each request's scheduled send time. Service time, from the actual send: p50 {{ms .ServiceTime.P50}}, p99 {{ms .ServiceTime.P99}}, p99.9 {{ms .ServiceTime.P999}}, max {{ms .ServiceTime.Max}} ms.</p>{{end}}
<p class="meta">Load generator: GOMAXPROCS {{.Generator.GOMAXPROCS}}, CPU {{f2 .Generator.CPUSeconds}} s, {{num .Generator.CPUPercent}}% of one core.{{if .Aborted}} {{.Aborted}} requests were cut off at the stop.{{end}}</p>
<h2>Operations</h2>
<table><tr><th>operation</th><th>requests</th><th>errors</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>
{{range .Ops}}<tr><td>{{.Name}}</td><td>{{.Requests}}</td><td>{{.Errors}}</td><td>{{ms .Latency.P50}}</td><td>{{ms .Latency.P90}}</td><td>{{ms .Latency.P99}}</td><td>{{ms .Latency.P999}}</td><td>{{ms .Latency.Max}}</td></tr>
{{end}}</table>
<h2>Responses and errors</h2>
<table><tr><th>status</th><th>responses</th></tr>
{{range counts .StatusCodes}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>
{{end}}</table>
<table><tr><th>error kind</th><th>count</th></tr>
{{range counts .ErrorKinds}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>
{{else}}<tr><td>none</td><td>0</td></tr>{{end}}</table>
{{if .Nodes}}
<h2>Database nodes</h2>
<table><tr><th>node</th><th>cluster</th><th>role</th><th>tps</th><th>share</th><th>transactions</th><th>tup returned</th><th>tup fetched</th><th>tup inserted</th><th>CPU %</th><th>max lag s</th><th>down samples</th></tr>
{{range .Nodes}}<tr><td>{{.Name}}</td><td>{{.Cluster}}</td><td>{{.Role}}</td><td>{{num .TPS}}</td><td>{{share .TPSShare}}</td><td>{{.Xacts}}</td><td>{{.TupReturned}}</td><td>{{.TupFetched}}</td><td>{{.TupInserted}}</td><td>{{pct .CPUPercent}}</td><td>{{f2 .MaxLagSeconds}}</td><td>{{.DownSamples}}</td></tr>
{{end}}</table>
<p class="meta">Share is of the transactions of the node's cluster; CPU covers the postmaster and its children, in % of one core.</p>
{{end}}
{{end}}
<h2>Over time</h2>
{{range .Charts}}<div class="chart">{{.SVG}}</div>
{{end}}
</body></html>
`))

var compareTemplate = template.Must(template.New("compare").Funcs(funcs).Parse(htmlHead + `
<h1>{{.Title}}</h1>
<p class="meta">A: {{.LA}}: {{describe .A}}<br>B: {{.LB}}: {{describe .B}}</p>
<h2>Summary</h2>
<table><tr><th></th><th>A: {{.LA}}</th><th>B: {{.LB}}</th><th>B/A</th></tr>
{{range .Metrics}}<tr><td>{{.Name}}</td><td>{{.A}}</td><td>{{.B}}</td><td>{{.Ratio}}</td></tr>
{{end}}</table>
{{if .Nodes}}
<h2>Where the load landed</h2>
<table><tr><th>node</th><th>A role</th><th>A tps</th><th>A share</th><th>A CPU %</th><th>B role</th><th>B tps</th><th>B share</th><th>B CPU %</th></tr>
{{range .Nodes}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{end}}
<h2>Charts</h2>
{{range .Charts}}<div class="chart">{{.SVG}}</div>
{{end}}
{{if .Pair}}<div class="pair">{{range .Pair}}<div class="chart">{{.SVG}}</div>{{end}}</div>{{end}}
</body></html>
`))

// WriteHTML writes a self-contained HTML report of r: tables and inline
// SVG charts, no external scripts, styles or images.
func WriteHTML(w io.Writer, r *Result) error {
	title := "socnet load"
	if r.Label != "" {
		title += ": " + r.Label
	}
	err := runTemplate.Execute(w, struct {
		Title  string
		R      *Result
		Charts []htmlChart
	}{title, r, svgCharts(runCharts(r))})
	if err != nil {
		return fmt.Errorf("write html report: %w", err)
	}
	return nil
}

// WriteCompareHTML writes a self-contained HTML report that sets run b
// beside run a: summary figures, where the database load landed per node,
// and charts of both.
func WriteCompareHTML(w io.Writer, a, b *Result) error {
	la, lb := runLabels(a, b)
	data := struct {
		Title, LA, LB string
		A, B          *Result
		Metrics       []metricRow
		Nodes         [][]string
		Charts, Pair  []htmlChart
	}{Title: "socnet load: " + la + " vs " + lb, LA: la, LB: lb, A: a, B: b,
		Metrics: compareMetrics(a, b), Nodes: compareNodes(a, b), Charts: svgCharts(compareCharts(a, b))}
	if len(data.Nodes) > 0 {
		ca, cb := nodeTPSCharts(a, b)
		data.Pair = svgCharts([]namedChart{{"a", ca}, {"b", cb}})
	}
	if err := compareTemplate.Execute(w, data); err != nil {
		return fmt.Errorf("write html comparison: %w", err)
	}
	return nil
}
