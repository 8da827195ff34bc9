package load

import (
	"fmt"
	"html"
	"image"
	"image/color"
	"image/draw"
	"math"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/inconsolata"
	"golang.org/x/image/math/fixed"
	"golang.org/x/image/vector"
)

// Size of the charts, in pixels for PNG and in user units for SVG.
const (
	ChartWidth  = 960
	ChartHeight = 420
)

// charW is the advance of one character of the chart font, for layout.
const charW = 8

var (
	white     = color.RGBA{255, 255, 255, 255}
	ink       = color.RGBA{33, 37, 41, 255}
	gridColor = color.RGBA{222, 226, 230, 255}
	axisColor = color.RGBA{108, 117, 125, 255}
	// palette is Tableau 10, reordered so that neighbours differ most:
	// distinct and readable on white.
	palette = []color.RGBA{
		{78, 121, 167, 255}, {242, 142, 43, 255}, {89, 161, 79, 255}, {225, 87, 89, 255},
		{176, 122, 161, 255}, {156, 117, 95, 255}, {255, 157, 167, 255}, {118, 183, 178, 255},
		{237, 201, 72, 255}, {186, 176, 172, 255},
	}
)

func paletteColor(i int) color.RGBA { return palette[i%len(palette)] }

// canvas is what charts draw on: SVG text or a PNG image.
type canvas interface {
	line(x1, y1, x2, y2 float64, c color.RGBA, width float64)
	polyline(xs, ys []float64, c color.RGBA, width float64)
	rect(x, y, w, h float64, c color.RGBA)
	text(x, y float64, s string, o textOpt)
}

// Text anchors.
const (
	anchorStart = iota
	anchorMiddle
	anchorEnd
)

type textOpt struct {
	anchor   int
	bold     bool
	vertical bool // reads bottom to top
	color    color.RGBA
}

// chart is anything that draws itself on a canvas of a given size.
type chart interface {
	draw(cv canvas, w, h float64)
	title() string
}

// series is one line of a line chart. NaN values leave a gap.
type series struct {
	name  string
	xs    []float64
	ys    []float64
	color color.RGBA
}

// lineChart plots series against a shared x axis, y from zero.
type lineChart struct {
	Title, XLabel, YLabel string
	Series                []series
	YMax                  float64 // when positive, the top of the y axis
}

func (c *lineChart) title() string { return c.Title }

// frame is the plotting area and scales of a chart.
type frame struct {
	x0, x1, y0, y1         float64 // pixels: left, right, top, bottom
	xmin, xmax, ymin, ymax float64 // data
}

func (f frame) px(x float64) float64 {
	if f.xmax == f.xmin {
		return f.x0
	}
	return f.x0 + (x-f.xmin)/(f.xmax-f.xmin)*(f.x1-f.x0)
}

func (f frame) py(y float64) float64 {
	return f.y1 - (y-f.ymin)/(f.ymax-f.ymin)*(f.y1-f.y0)
}

// header draws the title and the legend and returns the top of the plot.
func header(cv canvas, w float64, title string, names []string, colors []color.RGBA) float64 {
	cv.rect(0, 0, w, 1e4, white)
	cv.text(16, 24, title, textOpt{bold: true, color: ink})
	x, y := 16.0, 46.0
	for i, n := range names {
		width := 26 + float64(len([]rune(n)))*charW + 18
		if x > 16 && x+width > w-16 {
			x, y = 16, y+20
		}
		cv.rect(x, y-6, 18, 4, colors[i])
		cv.text(x+24, y, n, textOpt{color: ink})
		x += width
	}
	return y + 16
}

func (c *lineChart) draw(cv canvas, w, h float64) {
	names := make([]string, len(c.Series))
	colors := make([]color.RGBA, len(c.Series))
	f := frame{x0: 76, x1: w - 24, y1: h - 52, xmin: math.Inf(1), xmax: math.Inf(-1)}
	ymax := 0.0
	for i, s := range c.Series {
		names[i], colors[i] = s.name, s.color
		for j, x := range s.xs {
			if math.IsNaN(s.ys[j]) {
				continue
			}
			f.xmin, f.xmax = math.Min(f.xmin, x), math.Max(f.xmax, x)
			ymax = math.Max(ymax, s.ys[j])
		}
	}
	f.y0 = header(cv, w, c.Title, names, colors)
	if math.IsInf(f.xmin, 1) {
		f.xmin, f.xmax = 0, 1
	}
	if f.xmin > 0 {
		f.xmin = 0 // time since the start of the run
	}
	if f.xmax <= f.xmin {
		f.xmax = f.xmin + 1
	}
	if c.YMax > 0 {
		ymax = math.Max(ymax, c.YMax)
	}
	ystep := niceStep(ymax, 5)
	f.ymax = math.Max(ystep, math.Ceil(ymax/ystep-1e-9)*ystep)
	for v := 0.0; v <= f.ymax+ystep/2; v += ystep {
		y := f.py(v)
		cv.line(f.x0, y, f.x1, y, gridColor, 1)
		cv.text(f.x0-8, y+4, formatTick(v, ystep), textOpt{anchor: anchorEnd, color: axisColor})
	}
	xstep := niceStep(f.xmax-f.xmin, 8)
	for v := math.Ceil(f.xmin/xstep) * xstep; v <= f.xmax+xstep/1e6; v += xstep {
		x := f.px(v)
		cv.line(x, f.y1, x, f.y1+5, axisColor, 1)
		cv.text(x, f.y1+20, formatTick(v, xstep), textOpt{anchor: anchorMiddle, color: axisColor})
	}
	cv.line(f.x0, f.y1, f.x1, f.y1, axisColor, 1)
	cv.line(f.x0, f.y0, f.x0, f.y1, axisColor, 1)
	cv.text((f.x0+f.x1)/2, h-12, c.XLabel, textOpt{anchor: anchorMiddle, color: ink})
	cv.text(20, (f.y0+f.y1)/2, c.YLabel, textOpt{anchor: anchorMiddle, vertical: true, color: ink})
	for _, s := range c.Series {
		var xs, ys []float64
		flush := func() {
			switch len(xs) {
			case 0:
			case 1:
				cv.rect(xs[0]-2, ys[0]-2, 4, 4, s.color)
			default:
				cv.polyline(xs, ys, s.color, 2)
			}
			xs, ys = nil, nil
		}
		for j, x := range s.xs {
			if math.IsNaN(s.ys[j]) {
				flush()
				continue
			}
			xs, ys = append(xs, f.px(x)), append(ys, f.py(s.ys[j]))
		}
		flush()
	}
}

// barChart compares values of a few series across groups (such as nodes).
type barChart struct {
	Title, YLabel string
	Groups        []string
	Series        []barSeries
}

type barSeries struct {
	name   string
	values []float64 // one per group; NaN: no bar
	color  color.RGBA
}

func (c *barChart) title() string { return c.Title }

func (c *barChart) draw(cv canvas, w, h float64) {
	names := make([]string, len(c.Series))
	colors := make([]color.RGBA, len(c.Series))
	ymax := 0.0
	for i, s := range c.Series {
		names[i], colors[i] = s.name, s.color
		for _, v := range s.values {
			if !math.IsNaN(v) {
				ymax = math.Max(ymax, v)
			}
		}
	}
	f := frame{x0: 76, x1: w - 24, y1: h - 52, xmin: 0, xmax: 1}
	f.y0 = header(cv, w, c.Title, names, colors) + 14 // room for value labels
	ystep := niceStep(ymax, 5)
	f.ymax = math.Max(ystep, math.Ceil(ymax/ystep-1e-9)*ystep)
	for v := 0.0; v <= f.ymax+ystep/2; v += ystep {
		y := f.py(v)
		cv.line(f.x0, y, f.x1, y, gridColor, 1)
		cv.text(f.x0-8, y+4, formatTick(v, ystep), textOpt{anchor: anchorEnd, color: axisColor})
	}
	cv.line(f.x0, f.y1, f.x1, f.y1, axisColor, 1)
	cv.text(20, (f.y0+f.y1)/2, c.YLabel, textOpt{anchor: anchorMiddle, vertical: true, color: ink})
	if len(c.Groups) == 0 || len(c.Series) == 0 {
		return
	}
	gw := (f.x1 - f.x0) / float64(len(c.Groups))
	bw := math.Min(80, gw*0.8/float64(len(c.Series)))
	for g, name := range c.Groups {
		left := f.x0 + gw*float64(g) + (gw-bw*float64(len(c.Series)))/2
		for i, s := range c.Series {
			if g >= len(s.values) || math.IsNaN(s.values[g]) {
				continue
			}
			v := s.values[g]
			x, y := left+bw*float64(i), f.py(v)
			cv.rect(x+1, y, bw-2, f.y1-y, s.color)
			cv.text(x+bw/2, y-5, formatValue(v), textOpt{anchor: anchorMiddle, color: ink})
		}
		cv.text(f.x0+gw*(float64(g)+0.5), f.y1+20, name, textOpt{anchor: anchorMiddle, color: ink})
	}
}

// niceStep returns a step of 1, 2 or 5 times a power of ten that splits
// span into about n intervals.
func niceStep(span float64, n int) float64 {
	if span <= 0 || math.IsNaN(span) || math.IsInf(span, 0) {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw*0.999 {
			return m * mag
		}
	}
	return 10 * mag
}

// formatTick formats an axis value with the precision its step needs.
func formatTick(v, step float64) string {
	switch {
	case v == 0:
		return "0"
	case step >= 1e6 && math.Mod(v, 1e6) == 0:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case step >= 1000 && math.Mod(v, 1000) == 0:
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	case step >= 1:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	dec := int(math.Ceil(-math.Log10(step) - 1e-9))
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// formatValue formats a value with about three significant digits.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// svgCanvas writes SVG elements.
type svgCanvas struct{ b strings.Builder }

func svgColor(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

func (s *svgCanvas) line(x1, y1, x2, y2 float64, c color.RGBA, w float64) {
	fmt.Fprintf(&s.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>`+"\n",
		x1, y1, x2, y2, svgColor(c), w)
}

func (s *svgCanvas) polyline(xs, ys []float64, c color.RGBA, w float64) {
	fmt.Fprintf(&s.b, `<polyline fill="none" stroke="%s" stroke-width="%.1f" stroke-linejoin="round" points="`, svgColor(c), w)
	for i := range xs {
		if i > 0 {
			s.b.WriteByte(' ')
		}
		fmt.Fprintf(&s.b, "%.1f,%.1f", xs[i], ys[i])
	}
	s.b.WriteString("\"/>\n")
}

func (s *svgCanvas) rect(x, y, w, h float64, c color.RGBA) {
	if h < 0 {
		y, h = y+h, -h
	}
	fmt.Fprintf(&s.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y, w, h, svgColor(c))
}

func (s *svgCanvas) text(x, y float64, t string, o textOpt) {
	anchor := [...]string{"start", "middle", "end"}[o.anchor]
	weight, size := "normal", 13
	if o.bold {
		weight, size = "bold", 16
	}
	rot := ""
	if o.vertical {
		rot = fmt.Sprintf(` transform="rotate(-90 %.1f %.1f)"`, x, y)
	}
	fmt.Fprintf(&s.b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" font-weight="%s" fill="%s"%s>%s</text>`+"\n",
		x, y, anchor, size, weight, svgColor(o.color), rot, html.EscapeString(t))
}

// renderSVG returns c as an SVG document of w x h user units that scales to
// the width of its container.
func renderSVG(c chart, w, h int) string {
	var s svgCanvas
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s" style="max-width:100%%;height:auto" font-family="Helvetica, Arial, sans-serif">`+"\n",
		w, h, w, h, html.EscapeString(c.title()))
	c.draw(&s, float64(w), float64(h))
	s.b.WriteString("</svg>\n")
	return s.b.String()
}

// pngCanvas draws on an image, lines anti-aliased, text in Inconsolata 8x16.
type pngCanvas struct {
	img *image.RGBA
	z   *vector.Rasterizer
}

func (p *pngCanvas) line(x1, y1, x2, y2 float64, c color.RGBA, w float64) {
	if x1 == x2 || y1 == y2 { // axis-aligned: crisp pixels
		r := image.Rect(int(math.Round(math.Min(x1, x2)-w/2)), int(math.Round(math.Min(y1, y2)-w/2)),
			int(math.Round(math.Max(x1, x2)+w/2)), int(math.Round(math.Max(y1, y2)+w/2)))
		draw.Draw(p.img, r, image.NewUniform(c), image.Point{}, draw.Over)
		return
	}
	p.polyline([]float64{x1, x2}, []float64{y1, y2}, c, w)
}

func (p *pngCanvas) polyline(xs, ys []float64, c color.RGBA, w float64) {
	b := p.img.Bounds()
	p.z.Reset(b.Dx(), b.Dy())
	for i := 1; i < len(xs); i++ {
		dx, dy := xs[i]-xs[i-1], ys[i]-ys[i-1]
		l := math.Hypot(dx, dy)
		if l == 0 {
			continue
		}
		nx, ny := -dy/l*w/2, dx/l*w/2
		// Extend each segment by half the width so that joints overlap.
		ex, ey := dx/l*w/2, dy/l*w/2
		ax, ay := xs[i-1]-ex, ys[i-1]-ey
		bx, by := xs[i]+ex, ys[i]+ey
		p.z.MoveTo(float32(ax+nx), float32(ay+ny))
		p.z.LineTo(float32(bx+nx), float32(by+ny))
		p.z.LineTo(float32(bx-nx), float32(by-ny))
		p.z.LineTo(float32(ax-nx), float32(ay-ny))
		p.z.ClosePath()
	}
	p.z.Draw(p.img, b, image.NewUniform(c), image.Point{})
}

func (p *pngCanvas) rect(x, y, w, h float64, c color.RGBA) {
	if h < 0 {
		y, h = y+h, -h
	}
	r := image.Rect(int(math.Round(x)), int(math.Round(y)), int(math.Round(x+w)), int(math.Round(y+h)))
	draw.Draw(p.img, r, image.NewUniform(c), image.Point{}, draw.Over)
}

func (p *pngCanvas) text(x, y float64, s string, o textOpt) {
	s = asciiLabel(s)
	face := inconsolata.Regular8x16
	if o.bold {
		face = inconsolata.Bold8x16
	}
	width := font.MeasureString(face, s).Ceil()
	if o.vertical {
		p.verticalText(x, y, s, width, face, o)
		return
	}
	switch o.anchor {
	case anchorMiddle:
		x -= float64(width) / 2
	case anchorEnd:
		x -= float64(width)
	}
	d := font.Drawer{Dst: p.img, Src: image.NewUniform(o.color), Face: face,
		Dot: fixed.P(int(math.Round(x)), int(math.Round(y)))}
	d.DrawString(s)
}

// verticalText draws s reading bottom to top with its baseline at x, as
// SVG's rotate(-90) does: drawn on a scratch image, then turned a quarter.
func (p *pngCanvas) verticalText(x, y float64, s string, width int, face font.Face, o textOpt) {
	const hgt, baseline = 16, 12
	tmp := image.NewRGBA(image.Rect(0, 0, width, hgt))
	d := font.Drawer{Dst: tmp, Src: image.NewUniform(o.color), Face: face, Dot: fixed.P(0, baseline)}
	d.DrawString(s)
	rot := image.NewRGBA(image.Rect(0, 0, hgt, width))
	for u := 0; u < width; u++ {
		for v := 0; v < hgt; v++ {
			rot.SetRGBA(v, width-1-u, tmp.RGBAAt(u, v))
		}
	}
	left := int(math.Round(x)) - baseline
	top := int(math.Round(y)) // anchorEnd: the text ends at y
	switch o.anchor {
	case anchorStart:
		top -= width
	case anchorMiddle:
		top -= width / 2
	}
	draw.Draw(p.img, image.Rect(left, top, left+hgt, top+width), rot, image.Point{}, draw.Over)
}

// renderPNG draws c on a w x h image.
func renderPNG(c chart, w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	p := &pngCanvas{img: img, z: vector.NewRasterizer(w, h)}
	c.draw(p, float64(w), float64(h))
	return img
}

// asciiLabel transliterates Cyrillic and replaces other characters the
// bitmap font lacks, so that labels stay legible in PNG charts.
func asciiLabel(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x80:
			b.WriteRune(r)
		case r >= 'А' && r <= 'я' || r == 'Ё' || r == 'ё':
			lower := r
			if r >= 'А' && r <= 'Я' {
				lower = r + ('а' - 'А')
			} else if r == 'Ё' {
				lower = 'ё'
			}
			t := cyrillic[lower]
			if r != lower && t != "" {
				t = strings.ToUpper(t[:1]) + t[1:]
			}
			b.WriteString(t)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

var cyrillic = map[rune]string{
	'а': "a", 'б': "b", 'в': "v", 'г': "g", 'д': "d", 'е': "e", 'ё': "yo", 'ж': "zh", 'з': "z", 'и': "i",
	'й': "y", 'к': "k", 'л': "l", 'м': "m", 'н': "n", 'о': "o", 'п': "p", 'р': "r", 'с': "s", 'т': "t",
	'у': "u", 'ф': "f", 'х': "kh", 'ц': "ts", 'ч': "ch", 'ш': "sh", 'щ': "shch", 'ъ': "", 'ы': "y", 'ь': "",
	'э': "e", 'ю': "yu", 'я': "ya",
}
