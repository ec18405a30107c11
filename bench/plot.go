package bench

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// PlotSVG draws committed tx/s (left) and p99 latency (right) against
// concurrency (log scale), one line per policy, as a standalone SVG.
func PlotSVG(rs []Result) string {
	series := map[string][]Result{}
	var names []string
	for _, r := range rs {
		if _, ok := series[r.Policy]; !ok {
			names = append(names, r.Policy)
		}
		series[r.Policy] = append(series[r.Policy], r)
	}
	for _, s := range series {
		sort.Slice(s, func(i, j int) bool { return s[i].Concurrency < s[j].Concurrency })
	}
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}
	const w, h, pad = 420.0, 300.0, 50.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`, int(2*w), int(h+30))
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>`)
	panel := func(x0 float64, title string, val func(Result) float64, unit string) {
		minC, maxC, maxV := math.Inf(1), math.Inf(-1), 0.0
		for _, r := range rs {
			c := math.Log2(float64(r.Concurrency))
			minC, maxC = math.Min(minC, c), math.Max(maxC, c)
			maxV = math.Max(maxV, val(r))
		}
		if maxC == minC {
			maxC = minC + 1
		}
		if maxV == 0 {
			maxV = 1
		}
		px := func(c int) float64 { return x0 + pad + (math.Log2(float64(c))-minC)/(maxC-minC)*(w-2*pad) }
		py := func(v float64) float64 { return h - pad + 20 - v/maxV*(h-2*pad) }
		fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="13">%s</text>`, x0+pad, title)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, x0+pad, py(0), x0+w-pad, py(0))
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, x0+pad, py(0), x0+pad, py(maxV))
		for i := 0; i <= 4; i++ {
			v := maxV * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%.4g</text>`, x0+pad-4, py(v)+4, v)
		}
		seen := map[int]bool{}
		for _, r := range rs {
			if !seen[r.Concurrency] {
				seen[r.Concurrency] = true
				fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%d</text>`, px(r.Concurrency), py(0)+14, r.Concurrency)
			}
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">clients (log scale); y: %s</text>`, x0+w/2, py(0)+28, unit)
		for i, n := range names {
			var pts []string
			for _, r := range series[n] {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(r.Concurrency), py(val(r))))
			}
			col := colors[i%len(colors)]
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, col, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`, x0+w-pad-70, 40+14*float64(i), col, n)
		}
	}
	panel(0, "committed tx/s", func(r Result) float64 { return r.TxPerSec }, "tx/s")
	panel(w, "p99 latency (ms)", func(r Result) float64 { return float64(r.P99) / 1e6 }, "ms")
	b.WriteString(`</svg>`)
	return b.String()
}
