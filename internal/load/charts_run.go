package load

import (
	"fmt"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

// namedChart is a chart and the base name of its PNG file.
type namedChart struct {
	file string
	c    chart
}

var (
	colorA    = color.RGBA{78, 121, 167, 255}
	colorA99  = color.RGBA{28, 56, 105, 255}
	colorB    = color.RGBA{242, 142, 43, 255}
	colorB99  = color.RGBA{183, 65, 14, 255}
	colorErr  = color.RGBA{225, 87, 89, 255}
	colorGen  = color.RGBA{120, 120, 120, 255}
	kindColor = map[string]color.RGBA{"status": {225, 87, 89, 255}, "timeout": {242, 142, 43, 255},
		"refused": {176, 122, 161, 255}, "reset": {78, 121, 167, 255}, "other": {156, 117, 95, 255}}
)

// secondXs returns the x of each second of r: its end, in seconds since the start.
func secondXs(r *Result) []float64 {
	xs := make([]float64, len(r.Seconds))
	for i, s := range r.Seconds {
		xs[i] = float64(s.T + 1)
	}
	return xs
}

func secondSeries(r *Result, f func(SecondResult) float64) []float64 {
	ys := make([]float64, len(r.Seconds))
	for i, s := range r.Seconds {
		ys[i] = f(s)
	}
	return ys
}

// errorRate is the errors per second of s, over the same span as its RPS.
func errorRate(s SecondResult) float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Errors) * s.RPS / float64(s.Requests)
}

func nodeSeries(n NodeResult, f func(NodeSample) float64) (xs, ys []float64) {
	for _, s := range n.Samples {
		xs = append(xs, s.T)
		if !s.Up {
			ys = append(ys, math.NaN())
			continue
		}
		ys = append(ys, f(s))
	}
	return xs, ys
}

func nodeLabel(n NodeResult) string {
	if n.Role == "" {
		return n.Name
	}
	return n.Name + " (" + n.Role + ")"
}

func cpuOf(s NodeSample) float64 {
	if s.CPUPercent == nil {
		return math.NaN()
	}
	return *s.CPUPercent
}

// runCharts returns the charts of one run.
func runCharts(r *Result) []namedChart {
	xs := secondXs(r)
	name := ""
	if r.Label != "" {
		name = ": " + r.Label
	}
	charts := []namedChart{
		{"throughput", &lineChart{Title: "Throughput" + name, XLabel: "seconds", YLabel: "requests/s", Series: []series{
			{name: "responses/s", xs: xs, ys: secondSeries(r, func(s SecondResult) float64 { return s.RPS }), color: colorA},
			{name: "errors/s", xs: xs, ys: secondSeries(r, errorRate), color: colorErr},
		}}},
		{"latency", &lineChart{Title: "Latency" + name, XLabel: "seconds", YLabel: "milliseconds", Series: []series{
			{name: "p50", xs: xs, ys: secondSeries(r, func(s SecondResult) float64 { return s.Latency.P50 }), color: colorA},
			{name: "p90", xs: xs, ys: secondSeries(r, func(s SecondResult) float64 { return s.Latency.P90 }), color: colorB},
			{name: "p99", xs: xs, ys: secondSeries(r, func(s SecondResult) float64 { return s.Latency.P99 }), color: colorB99},
		}}},
	}
	errs := &lineChart{Title: "Errors by kind" + name, XLabel: "seconds", YLabel: "errors"}
	for _, k := range []string{"status", "timeout", "refused", "reset", "other"} {
		if r.ErrorKinds[k] == 0 {
			continue
		}
		errs.Series = append(errs.Series, series{name: k, xs: xs, color: kindColor[k],
			ys: secondSeries(r, func(s SecondResult) float64 { return float64(s.ErrorKinds[k]) })})
	}
	if len(errs.Series) == 0 {
		errs.Series = []series{{name: "errors (none)", xs: xs, ys: make([]float64, len(xs)), color: colorErr}}
	}
	charts = append(charts, namedChart{"errors", errs})

	cpu := &lineChart{Title: "CPU" + name, XLabel: "seconds", YLabel: "% of one core"}
	for i, n := range r.Nodes {
		if n.CPUSeconds == nil {
			continue
		}
		nx, ny := nodeSeries(n, cpuOf)
		cpu.Series = append(cpu.Series, series{name: nodeLabel(n), xs: nx, ys: ny, color: paletteColor(i)})
	}
	cpu.Series = append(cpu.Series, series{name: "load generator", xs: xs, color: colorGen,
		ys: secondSeries(r, func(s SecondResult) float64 { return s.GeneratorCPU })})
	charts = append(charts, namedChart{"cpu", cpu})

	if len(r.Nodes) > 0 {
		tps := &lineChart{Title: "Database transactions per node" + name, XLabel: "seconds", YLabel: "transactions/s"}
		lag := &lineChart{Title: "Replication lag" + name, XLabel: "seconds", YLabel: "seconds"}
		for i, n := range r.Nodes {
			nx, ny := nodeSeries(n, func(s NodeSample) float64 { return s.TPS })
			tps.Series = append(tps.Series, series{name: nodeLabel(n), xs: nx, ys: ny, color: paletteColor(i)})
			lx, ly := nodeSeries(n, func(s NodeSample) float64 { return s.LagSeconds })
			lag.Series = append(lag.Series, series{name: nodeLabel(n), xs: lx, ys: ly, color: paletteColor(i)})
		}
		charts = append(charts, namedChart{"db-tps", tps}, namedChart{"db-lag", lag})
	}
	return charts
}

// runLabels returns the names of two runs for legends, distinct.
func runLabels(a, b *Result) (string, string) {
	la, lb := a.Label, b.Label
	if la == "" {
		la = "A"
	}
	if lb == "" {
		lb = "B"
	}
	if la == lb {
		la, lb = la+" (A)", lb+" (B)"
	}
	return la, lb
}

// nodeNames returns the names of the nodes of a and b, a's first.
func nodeNames(a, b *Result) []string {
	var names []string
	seen := map[string]bool{}
	for _, r := range []*Result{a, b} {
		for _, n := range r.Nodes {
			if !seen[n.Name] {
				seen[n.Name] = true
				names = append(names, n.Name)
			}
		}
	}
	return names
}

func findNode(r *Result, name string) (NodeResult, bool) {
	for _, n := range r.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeResult{}, false
}

// compareCharts returns the charts that set run b beside run a.
func compareCharts(a, b *Result) []namedChart {
	la, lb := runLabels(a, b)
	xa, xb := secondXs(a), secondXs(b)
	p := func(r *Result, f func(Latency) float64) []float64 {
		return secondSeries(r, func(s SecondResult) float64 { return f(s.Latency) })
	}
	p50 := func(l Latency) float64 { return l.P50 }
	p99 := func(l Latency) float64 { return l.P99 }
	rps := func(s SecondResult) float64 { return s.RPS }
	charts := []namedChart{
		{"compare-throughput", &lineChart{Title: "Throughput: " + la + " vs " + lb, XLabel: "seconds", YLabel: "requests/s",
			Series: []series{{name: la, xs: xa, ys: secondSeries(a, rps), color: colorA},
				{name: lb, xs: xb, ys: secondSeries(b, rps), color: colorB}}}},
		{"compare-latency", &lineChart{Title: "Latency: " + la + " vs " + lb, XLabel: "seconds", YLabel: "milliseconds",
			Series: []series{{name: la + " p50", xs: xa, ys: p(a, p50), color: colorA},
				{name: la + " p99", xs: xa, ys: p(a, p99), color: colorA99},
				{name: lb + " p50", xs: xb, ys: p(b, p50), color: colorB},
				{name: lb + " p99", xs: xb, ys: p(b, p99), color: colorB99}}}},
	}
	names := nodeNames(a, b)
	if len(names) == 0 {
		return charts
	}
	bars := func(f func(NodeResult) float64) (va, vb []float64) {
		for _, name := range names {
			na, oka := findNode(a, name)
			nb, okb := findNode(b, name)
			va, vb = append(va, math.NaN()), append(vb, math.NaN())
			if oka {
				va[len(va)-1] = f(na)
			}
			if okb {
				vb[len(vb)-1] = f(nb)
			}
		}
		return va, vb
	}
	ta, tb := bars(func(n NodeResult) float64 { return n.TPS })
	charts = append(charts, namedChart{"compare-node-tps", &barChart{Title: "Mean transactions/s per node: " + la + " vs " + lb,
		YLabel: "transactions/s", Groups: names,
		Series: []barSeries{{name: la, values: ta, color: colorA}, {name: lb, values: tb, color: colorB}}}})
	ca, cb := bars(func(n NodeResult) float64 {
		if n.CPUPercent == nil {
			return math.NaN()
		}
		return *n.CPUPercent
	})
	charts = append(charts, namedChart{"compare-node-cpu", &barChart{Title: "Mean CPU per node: " + la + " vs " + lb,
		YLabel: "% of one core", Groups: names,
		Series: []barSeries{{name: la, values: ca, color: colorA}, {name: lb, values: cb, color: colorB}}}})
	return charts
}

// nodeTPSCharts returns one chart per run of its nodes' transactions over
// time, on the same scale, to set side by side.
func nodeTPSCharts(a, b *Result) (*lineChart, *lineChart) {
	la, lb := runLabels(a, b)
	names := nodeNames(a, b)
	color := func(name string) color.RGBA {
		for i, n := range names {
			if n == name {
				return paletteColor(i)
			}
		}
		return ink
	}
	mk := func(r *Result, label string) *lineChart {
		c := &lineChart{Title: "Transactions per node: " + label, XLabel: "seconds", YLabel: "transactions/s"}
		for _, n := range r.Nodes {
			xs, ys := nodeSeries(n, func(s NodeSample) float64 { return s.TPS })
			c.Series = append(c.Series, series{name: nodeLabel(n), xs: xs, ys: ys, color: color(n.Name)})
		}
		return c
	}
	ca, cb := mk(a, la), mk(b, lb)
	top := 0.0
	for _, c := range []*lineChart{ca, cb} {
		for _, s := range c.Series {
			for _, y := range s.ys {
				if !math.IsNaN(y) {
					top = math.Max(top, y)
				}
			}
		}
	}
	ca.YMax, cb.YMax = top, top
	return ca, cb
}

// WritePNGs draws the charts of r as PNG files of ChartWidth x ChartHeight
// in dir (created if missing) and returns their paths: throughput, latency,
// errors and cpu, and with sampled nodes db-tps and db-lag.
func WritePNGs(dir string, r *Result) ([]string, error) {
	return writePNGs(dir, runCharts(r))
}

// WriteComparePNGs draws the charts that compare run b with run a as PNG
// files in dir and returns their paths: compare-throughput and
// compare-latency, and with sampled nodes compare-node-tps and
// compare-node-cpu.
func WriteComparePNGs(dir string, a, b *Result) ([]string, error) {
	return writePNGs(dir, compareCharts(a, b))
}

func writePNGs(dir string, charts []namedChart) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write charts: %w", err)
	}
	var paths []string
	for _, c := range charts {
		path := filepath.Join(dir, c.file+".png")
		if err := writePNG(path, c.c); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}

func writePNG(path string, c chart) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	if err := png.Encode(f, renderPNG(c, ChartWidth, ChartHeight)); err != nil {
		f.Close()
		return fmt.Errorf("write chart %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write chart %s: %w", path, err)
	}
	return nil
}
