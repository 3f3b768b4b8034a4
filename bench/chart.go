package bench

import (
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The chart is a bar per system and measurement: its median time divided by
// kernel overlayfs's, on a log scale, bars growing from 1 to the right when
// slower and to the left when faster. It is laid out once as rectangles and
// text, then written as SVG or painted into a PNG.

// ErrNoOverlay is returned for a chart of a report without kernel overlayfs,
// which the chart compares with.
var ErrNoOverlay = errors.New("no kernel overlayfs rows to compare with")

type shape struct {
	x, y, w, h float64 // a rectangle, when s is empty
	s          string  // a text, its baseline at y
	anchor     byte    // 's'tart, 'm'iddle, 'e'nd
	size       float64
	bold       bool
	color      string // #rrggbb
}

type layout struct {
	w, h   float64
	shapes []shape
}

var systemColors = map[string]string{
	Disk:          "#8c8c8c",
	Strata:        "#1f6fb4",
	FuseOverlayfs: "#f08a24",
	UnionfsFuse:   "#3a9d3a",
}

const (
	chartW    = 880
	plotLeft  = 210
	plotRight = chartW - 60
	barH      = 10
	barGap    = 2
	groupGap  = 12
	chartTop  = 84
)

// chartLayout lays the chart of rep out.
func chartLayout(rep *Report) (*layout, error) {
	var syss []string
	for _, s := range rep.Systems {
		if s.Name != Overlay && s.Skipped == "" {
			syss = append(syss, s.Name)
		}
	}
	lo, hi := 0.5, 2.0
	have := false
	for _, r := range rep.Rows {
		if x := r.TimeXOverlay(); x > 0 {
			lo, hi, have = math.Min(lo, x), math.Max(hi, x), true
		}
	}
	if !have {
		return nil, ErrNoOverlay
	}
	// Powers of two, at most 1/16 to 64: a bar beyond is cut at the edge
	// and its label says how far it goes.
	lo = math.Max(math.Pow(2, math.Floor(math.Log2(lo))), 1.0/16)
	hi = math.Min(math.Pow(2, math.Ceil(math.Log2(hi))), 64)
	xOf := func(v float64) float64 {
		v = math.Min(math.Max(v, lo), hi)
		return plotLeft + (plotRight-plotLeft)*(math.Log2(v)-math.Log2(lo))/(math.Log2(hi)-math.Log2(lo))
	}

	measures := rep.Measures()
	groupH := float64(len(syss)*(barH+barGap)) + groupGap
	plotTop := float64(chartTop)
	plotBottom := plotTop + groupH*float64(len(measures))
	l := &layout{w: chartW, h: plotBottom + 48}
	add := func(s shape) { l.shapes = append(l.shapes, s) }
	text := func(x, y float64, s string, anchor byte, size float64, color string) {
		add(shape{x: x, y: y, s: s, anchor: anchor, size: size, color: color})
	}

	add(shape{w: l.w, h: l.h, color: "#ffffff"})
	add(shape{x: 16, y: 24, s: "strata bench: time relative to kernel overlayfs (log scale; left of 1 is faster)", anchor: 's', size: 15, bold: true, color: "#222222"})
	sizes := "default sizes"
	if rep.Quick {
		sizes = "quick sizes"
	}
	runs := fmt.Sprintf("median of %d runs", rep.Runs)
	if rep.Budget > 0 {
		runs = fmt.Sprintf("median of up to %d runs", rep.Runs)
	}
	text(16, 42, fmt.Sprintf("%s, %s, %d CPUs, %s RAM; %s, %s", rep.Date.Format("2006-01-02"), rep.Host.Kernel, rep.Host.CPUs, formatBytes(int64(rep.Host.Memory)), sizes, runs), 's', 11, "#555555")
	x := 16.0
	for _, s := range syss {
		add(shape{x: x, y: 54, w: 12, h: 12, color: systemColors[s]})
		text(x+17, 64, s, 's', 11, "#222222")
		x += 17 + float64(len(s))*7 + 24
	}

	// Grid: a line and a label at each power of two.
	for v := lo; v <= hi*1.001; v *= 2 {
		gx := xOf(v)
		c, w := "#e2e2e2", 1.0
		if v == 1 {
			c, w = "#222222", 1.5
		}
		add(shape{x: gx - w/2, y: plotTop - 6, w: w, h: plotBottom - plotTop + 6, color: c})
		text(gx, plotBottom+16, tickLabel(v), 'm', 11, "#444444")
	}
	text((plotLeft+plotRight)/2, plotBottom+36, "median time / kernel overlayfs's", 'm', 11, "#444444")

	for gi, m := range measures {
		y := plotTop + float64(gi)*groupH
		if gi%2 == 1 {
			add(shape{x: 8, y: y - groupGap/2, w: chartW - 16, h: groupH, color: "#f6f6f6"})
		}
		// A rate is drawn as the time of its operations, like every
		// other row: no "(IOPS)" here.
		text(plotLeft-10, y+float64(len(syss)*(barH+barGap))/2+4, m, 'e', 12, "#222222")
		for si, s := range syss {
			by := y + float64(si*(barH+barGap))
			r := rep.row(m, s)
			if r == nil {
				continue
			}
			v := r.TimeXOverlay()
			if r.Error != "" || v == 0 {
				text(xOf(1)+4, by+barH-1, "failed", 's', 10, "#aa0000")
				continue
			}
			x0, x1 := xOf(1), xOf(v)
			if x1 < x0 {
				x0, x1 = x1, x0
			}
			add(shape{x: x0, y: by, w: math.Max(x1-x0, 1), h: barH, color: systemColors[s]})
			if v >= 1 {
				text(x1+4, by+barH-1, formatRatio(v), 's', 10, "#333333")
			} else {
				text(x0-4, by+barH-1, formatRatio(v), 'e', 10, "#333333")
			}
		}
	}
	return l, nil
}

// tickLabel writes a power of two: "1/4", "1", "8".
func tickLabel(v float64) string {
	if v < 1 {
		return fmt.Sprintf("1/%.0f", 1/v)
	}
	return fmt.Sprintf("%.0f", v)
}

// WriteSVG writes the chart of rep as SVG.
func (rep *Report) WriteSVG(w io.Writer) error {
	l, err := chartLayout(rep)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`+"\n", l.w, l.h, l.w, l.h)
	for _, s := range l.shapes {
		if s.s == "" {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", s.x, s.y, s.w, s.h, s.color)
			continue
		}
		anchor := map[byte]string{'s': "start", 'm': "middle", 'e': "end"}[s.anchor]
		weight := ""
		if s.bold {
			weight = ` font-weight="bold"`
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="%.0f" text-anchor="%s" fill="%s"%s>%s</text>`+"\n", s.x, s.y, s.size, anchor, s.color, weight, html.EscapeString(s.s))
	}
	b.WriteString("</svg>\n")
	_, err = io.WriteString(w, b.String())
	return err
}

// WritePNG writes the chart of rep as PNG, its text in a fixed 7x13 font.
func (rep *Report) WritePNG(w io.Writer) error {
	l, err := chartLayout(rep)
	if err != nil {
		return err
	}
	img := image.NewRGBA(image.Rect(0, 0, int(l.w), int(l.h)))
	face := basicfont.Face7x13
	for _, s := range l.shapes {
		c := parseColor(s.color)
		if s.s == "" {
			r := image.Rect(int(math.Round(s.x)), int(math.Round(s.y)), int(math.Round(s.x+math.Max(s.w, 1))), int(math.Round(s.y+s.h)))
			draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
			continue
		}
		d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face}
		width := d.MeasureString(s.s).Round()
		x := int(s.x)
		switch s.anchor {
		case 'm':
			x -= width / 2
		case 'e':
			x -= width
		}
		d.Dot = fixed.P(x, int(s.y))
		d.DrawString(s.s)
		if s.bold {
			d.Dot = fixed.P(x+1, int(s.y))
			d.DrawString(s.s)
		}
	}
	return png.Encode(w, img)
}

func parseColor(s string) color.RGBA {
	var r, g, b uint8
	if _, err := fmt.Sscanf(s, "#%02x%02x%02x", &r, &g, &b); err != nil {
		return color.RGBA{A: 255}
	}
	return color.RGBA{R: r, G: g, B: b, A: 255}
}
