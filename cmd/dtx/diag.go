package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/dtx-dev/dtx/bench"
)

// diagFlags are the measuring flags of a long-running command: a CPU
// profile and the process's RSS over time.
type diagFlags struct {
	cpuProfile string
	memProfile string
	rssPlot    string
	rssEvery   time.Duration
}

func addDiagFlags(fl *pflag.FlagSet, d *diagFlags) {
	fl.StringVar(&d.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole command to this file (go tool pprof)")
	fl.StringVar(&d.memProfile, "memprofile", "", "write a heap profile (live objects) to this file at the end of the command (go tool pprof)")
	fl.StringVar(&d.rssPlot, "rss-plot", "", "sample this process's resident set size (/proc/self/statm) and write it over time as an SVG to this file, with the samples beside it (FILE.tsv)")
	fl.DurationVar(&d.rssEvery, "rss-every", time.Second, "interval between --rss-plot samples")
}

// start begins what the flags ask for; the returned function ends it and
// writes the files. count, if not nil, is the work done so far (plotted
// beside the RSS).
func (d *diagFlags) start(title string, count func() int64) (func(), error) {
	var stops []func()
	if d.cpuProfile != "" {
		f, err := os.Create(d.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if d.memProfile != "" {
		path := d.memProfile
		stops = append(stops, func() {
			runtime.GC()
			f, err := os.Create(path)
			if err == nil {
				err = pprof.WriteHeapProfile(f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "dtx: --memprofile: %v\n", err)
			}
		})
	}
	if d.rssPlot != "" {
		if d.rssEvery <= 0 {
			return nil, usagef("--rss-every %v: must be positive", d.rssEvery)
		}
		if _, err := bench.ReadRSS(0); err != nil {
			return nil, fmt.Errorf("--rss-plot: %w", err)
		}
		s := bench.SampleRSS(d.rssEvery, map[string]int{"": 0}, count)
		path := d.rssPlot
		stops = append(stops, func() {
			ss := s.Stop()
			if err := os.WriteFile(path, []byte(bench.PlotRSSSVG(title, ss)), 0o644); err != nil {
				fmt.Fprintf(os.Stderr, "dtx: --rss-plot: %v\n", err)
			}
			if err := bench.WriteRSSTSV(strings.TrimSuffix(path, ".svg")+".tsv", ss); err != nil {
				fmt.Fprintf(os.Stderr, "dtx: --rss-plot: %v\n", err)
			}
		})
	}
	return func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}, nil
}
