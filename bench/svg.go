package bench

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// Chart colours: direct in slate blue, gateway in orange (distinguishable for
// the common colour-vision deficiencies).
const (
	colorDirect  = "#4C72B0"
	colorGateway = "#DD8452"
)

// WriteSVG writes a grouped bar chart of TTFT and inter-token latency
// percentiles (p50, p90, p99), gateway vs direct: two panels, each with its
// own millisecond axis, every bar labelled with its value.
func WriteSVG(w io.Writer, r *Report) error {
	const (
		width, height = 960, 480
		panelW        = 420
		top, bottom   = 116, 396 // plot area y range
		left0         = 70       // first panel's y axis x
		gap           = 480      // x offset of the second panel
	)
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="#ffffff"/>
`, width, height, width, height)
	fmt.Fprintf(bw, `<text x="%d" y="28" font-size="17" font-weight="bold" text-anchor="middle">%s</text>
`, width/2, esc("orch-bench "+r.Scenario+": latency, gateway vs direct"))
	fmt.Fprintf(bw, `<text x="%d" y="48" font-size="12" fill="#555555" text-anchor="middle">%s</text>
`, width/2, esc(fmt.Sprintf("c=%d · %d tokens/stream · %s · %s · %s per phase · %s", r.C, r.Tokens, pacedShort(r), r.Mode, r.Duration, machineText(r))))
	// Legend.
	lx := width/2 - 110
	fmt.Fprintf(bw, `<rect x="%d" y="60" width="14" height="14" fill="%s"/><text x="%d" y="72">direct (engine)</text>
<rect x="%d" y="60" width="14" height="14" fill="%s"/><text x="%d" y="72">gateway (%s)</text>
`, lx, colorDirect, lx+20, lx+130, colorGateway, lx+150, esc(r.Mode))

	panels := []struct {
		title string
		d, g  Percentiles
	}{
		{"Time to first token (ms)", r.Direct.TTFT, r.Gateway.TTFT},
		{"Inter-token latency (ms)", r.Direct.ITL, r.Gateway.ITL},
	}
	for pi, p := range panels {
		x0 := left0 + pi*gap
		dv := []float64{p.d.P50, p.d.P90, p.d.P99}
		gv := []float64{p.g.P50, p.g.P90, p.g.P99}
		maxV := 0.0
		for i := range dv {
			maxV = math.Max(maxV, math.Max(dv[i], gv[i]))
		}
		axisMax, step := niceAxis(maxV)
		y := func(v float64) float64 { return bottom - v/axisMax*(bottom-top) }
		// Title and axes.
		fmt.Fprintf(bw, `<text x="%d" y="%d" font-size="14" font-weight="bold" text-anchor="middle">%s</text>
`, x0+panelW/2, top-8, esc(p.title))
		for v := 0.0; v <= axisMax*1.0001; v += step {
			yy := y(v)
			fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e3e3"/><text x="%d" y="%.1f" text-anchor="end" fill="#444444">%s</text>
`, x0, yy, x0+panelW, yy, x0-6, yy+4, tick(v, step))
		}
		fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333333"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333333"/>
`, x0, top, x0, bottom, x0, bottom, x0+panelW, bottom)
		fmt.Fprintf(bw, `<text transform="translate(%d,%d) rotate(-90)" text-anchor="middle" fill="#444444">milliseconds</text>
`, x0-52, (top+bottom)/2)
		// Bars: three groups, two bars each.
		groupW := float64(panelW) / 3
		barW := groupW * 0.3
		for i, name := range []string{"p50", "p90", "p99"} {
			gx := float64(x0) + groupW*float64(i)
			for j, bar := range []struct {
				v     float64
				color string
			}{{dv[i], colorDirect}, {gv[i], colorGateway}} {
				bx := gx + groupW*0.18 + float64(j)*(barW+groupW*0.04)
				by := y(bar.v)
				fmt.Fprintf(bw, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/><text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>
`, bx, by, barW, float64(bottom)-by, bar.color, bx+barW/2, by-4, valueLabel(bar.v))
			}
			fmt.Fprintf(bw, `<text x="%.1f" y="%d" text-anchor="middle" font-size="13">%s</text>
`, gx+groupW/2, bottom+18, name)
			if dv[i] > 0 {
				fmt.Fprintf(bw, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11" fill="#555555">%s ms</text>
`, gx+groupW/2, bottom+34, signed(gv[i]-dv[i], 3))
			}
		}
		fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="middle" font-size="11" fill="#555555">percentile (below: gateway − direct)</text>
`, x0+panelW/2, bottom+52)
	}
	fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="middle" font-size="11" fill="#777777">%s</text>
`, width/2, height-12, esc(footer(r)))
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

func footer(r *Report) string {
	s := fmt.Sprintf("tokens/s direct %.0f, gateway %.0f · errors direct %d, gateway %d", r.Direct.TokensPerS, r.Gateway.TokensPerS, r.Direct.ErrorCount(), r.Gateway.ErrorCount())
	if c := r.Gateway.CPUSPer1000Tokens; c != nil {
		s += fmt.Sprintf(" · gateway CPU %.3f ms per 1000 tokens", *c*1000)
	}
	if m := r.Gateway.PeakRSSBytes; m != nil {
		s += fmt.Sprintf(" · peak RSS %.1f MiB", float64(*m)/(1<<20))
	}
	return s
}

func pacedShort(r *Report) string {
	if r.PacedMs == 0 {
		return "unpaced"
	}
	return "paced " + r.Paced
}

// niceAxis returns an axis maximum ≥ v and a tick step of 1, 2 or 5 × 10^k
// giving four to eight ticks.
func niceAxis(v float64) (max, step float64) {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1, 0.2
	}
	raw := v / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if step = m * mag; raw <= step {
			break
		}
	}
	return math.Ceil(v*1.08/step) * step, step // headroom for the value labels
}

func tick(v, step float64) string {
	prec := 0
	if step < 1 {
		prec = int(math.Ceil(-math.Log10(step)))
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func valueLabel(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
