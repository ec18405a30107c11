package bench

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RSSSample is one reading of a process's resident set size.
type RSSSample struct {
	At    time.Duration // since sampling began
	Bytes int64
	Label string // the process sampled ("" for this one)
	Count int64  // work done by then (transactions), if the caller counts it
}

// ReadRSS returns the resident set size of process pid (0: this process)
// from /proc/PID/statm (Linux only).
func ReadRSS(pid int) (int64, error) {
	p := "/proc/self/statm"
	if pid > 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/statm"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("%s: %q: want at least two fields", p, b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: resident pages %q: %v", p, f[1], err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// RSSSampler reads the RSS of a set of processes every Every until Stop.
type RSSSampler struct {
	mu      sync.Mutex
	samples []RSSSample
	stop    chan struct{}
	done    chan struct{}
}

// SampleRSS starts sampling every interval; procs maps a label to a pid
// (0: this process); count, if not nil, is read at each sample.
func SampleRSS(every time.Duration, procs map[string]int, count func() int64) *RSSSampler {
	s := &RSSSampler{stop: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	take := func() {
		var n int64
		if count != nil {
			n = count()
		}
		for label, pid := range procs {
			b, err := ReadRSS(pid)
			if err != nil {
				continue // the process ended; its line stops
			}
			s.mu.Lock()
			s.samples = append(s.samples, RSSSample{At: time.Since(start), Bytes: b, Label: label, Count: n})
			s.mu.Unlock()
		}
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		take()
		for {
			select {
			case <-t.C:
				take()
			case <-s.stop:
				take()
				return
			}
		}
	}()
	return s
}

// Stop ends sampling and returns every sample taken.
func (s *RSSSampler) Stop() []RSSSample {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RSSSample(nil), s.samples...)
}

// WriteRSSTSV writes the samples as tab-separated lines: seconds, label,
// RSS in bytes, count.
func WriteRSSTSV(path string, ss []RSSSample) error {
	var b strings.Builder
	b.WriteString("seconds\tprocess\trss_bytes\tcount\n")
	for _, s := range ss {
		fmt.Fprintf(&b, "%.1f\t%s\t%d\t%d\n", s.At.Seconds(), s.Label, s.Bytes, s.Count)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// PlotRSSSVG draws RSS (MiB) against time, one line per process, and the
// count (transactions done) on a second axis if any sample has one.
func PlotRSSSVG(title string, ss []RSSSample) string {
	var labels []string
	series := map[string][]RSSSample{}
	var maxT, maxB float64
	var maxN int64
	for _, s := range ss {
		if _, ok := series[s.Label]; !ok {
			labels = append(labels, s.Label)
		}
		series[s.Label] = append(series[s.Label], s)
		maxT = math.Max(maxT, s.At.Seconds())
		maxB = math.Max(maxB, float64(s.Bytes)/(1<<20))
		maxN = max(maxN, s.Count)
	}
	if maxT == 0 {
		maxT = 1
	}
	if maxB == 0 {
		maxB = 1
	}
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"}
	const w, h, pad = 720.0, 360.0, 60.0
	px := func(t float64) float64 { return pad + t/maxT*(w-2*pad) }
	py := func(v, top float64) float64 { return h - pad - v/top*(h-2*pad) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`, int(w), int(h))
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>`)
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="13">%s</text>`, pad, title)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, pad, py(0, 1), w-pad, py(0, 1))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, pad, py(0, 1), pad, py(1, 1))
	for i := 0; i <= 4; i++ {
		v := maxB * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%.0f</text>`, pad-4, py(v, maxB)+4, v)
		t := maxT * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%.0f</text>`, px(t), py(0, 1)+14, t)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">seconds; left axis: RSS (MiB)</text>`, w/2, py(0, 1)+30)
	for i, l := range labels {
		var pts []string
		for _, s := range series[l] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.At.Seconds()), py(float64(s.Bytes)/(1<<20), maxB)))
		}
		col := colors[i%len(colors)]
		name := l
		if name == "" {
			name = "RSS"
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, col, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`, w-pad-150, 40+14*float64(i), col, name)
	}
	if maxN > 0 {
		// Transactions done, dashed grey, right axis (one series suffices:
		// every process's sample at a time carries the same count).
		var pts []string
		for _, s := range series[labels[0]] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.At.Seconds()), py(float64(s.Count), float64(maxN))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#888" stroke-dasharray="4 3" stroke-width="1.5" points="%s"/>`, strings.Join(pts, " "))
		for i := 0; i <= 4; i++ {
			v := float64(maxN) * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#888">%.3g</text>`, w-pad+4, py(v, float64(maxN))+4, v)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#888">transactions done (dashed, right axis)</text>`, w-pad-150, 40+14*float64(len(labels)))
	}
	b.WriteString(`</svg>`)
	return b.String()
}
