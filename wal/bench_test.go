package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchPayload is the data of one benchmark record: about the size of a
// 2PC protocol record.
var benchPayload = make([]byte, 64)

// BenchmarkRawFdatasync is the floor the log is measured against: one small
// record written and fdatasync'ed per operation, on the same disk as the
// other benchmarks (b.TempDir).
func BenchmarkRawFdatasync(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := appendRecord(nil, 1, 1, benchPayload)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "syncs/s")
}

// BenchmarkAppend measures durable appends (Append returns after fdatasync)
// with 1, 16 and 256 concurrent appenders on the real disk: throughput,
// latency percentiles and how many records share a sync.
// Each runs with preallocation off and on (Config.PreallocSize).
func BenchmarkAppend(b *testing.B) {
	for _, pre := range []int64{0, DefaultPreallocSize} {
		for _, g := range []int{1, 16, 256} {
			name := fmt.Sprintf("prealloc=%v/appenders=%d", pre > 0, g)
			b.Run(name, func(b *testing.B) {
				cfg := DefaultConfig(filepath.Join(b.TempDir(), "wal"))
				cfg.PreallocSize = pre
				benchAppend(b, cfg, g, true)
			})
		}
	}
}

// BenchmarkAppendMem runs the same on a MemFS: the CPU cost of the append
// path and group commit without the disk.
func BenchmarkAppendMem(b *testing.B) {
	for _, g := range []int{1, 256} {
		b.Run(fmt.Sprintf("appenders=%d", g), func(b *testing.B) {
			cfg := memConfig(NewMemFS(1))
			benchAppend(b, cfg, g, true)
		})
	}
}

// BenchmarkAppendNoSync measures buffered appends on the real disk (synced
// only when the buffer fills).
func BenchmarkAppendNoSync(b *testing.B) {
	benchAppend(b, DefaultConfig(filepath.Join(b.TempDir(), "wal")), 1, false)
}

func benchAppend(b *testing.B, cfg Config, g int, durable bool) {
	l, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	lat := make([][]time.Duration, g)
	for i := range lat {
		lat[i] = make([]time.Duration, 0, b.N/g+1)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for w := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := Entry{Type: 1, Data: benchPayload}
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				var err error
				if durable {
					_, err = l.Append(e)
				} else {
					_, err = l.AppendNoSync(e)
				}
				if err != nil {
					b.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	st := l.Stats()
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	if durable {
		b.ReportMetric(st.AvgEntriesPerSync(), "entries/sync")
	}
}

// BenchmarkReplay opens a log of a million records of 40 bytes (about a
// snapshot interval of a service's log) on the real file system, page
// cache warm, and replays it: Open's check of every record, then
// ReplayFromNoCopy's, as a restart does.
func BenchmarkReplay(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "wal")
	l, err := Open(DefaultConfig(dir))
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 40)
	var batch []Entry
	for i := range 1_000_000 {
		batch = append(batch, Entry{Type: 1 + uint8(i%2), Data: data})
		if len(batch) == 1000 {
			if _, err := l.AppendNoSync(batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		l, err := Open(DefaultConfig(dir))
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		if err := l.ReplayFromNoCopy(0, func(r Record) error {
			n += len(r.Data)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if n != 40_000_000 {
			b.Fatalf("replayed %d bytes", n)
		}
		l.Close()
	}
}

// BenchmarkRestartFromSnapshot measures the log's part of a restart from a
// snapshot on a log shaped like a coordinator's: a sealed segment of 8 MiB
// wholly before the snapshot's record, and the active segment holding 2.4
// MB of records of 120 bytes then preallocated zeros up to 6.6 MB, with
// the snapshot's record in the middle of the active segment; on the real
// file system, page cache warm. "open+replay" is Open then
// ReplayFromNoCopy, "onepass" OpenFrom. Both are read-only (no syncs, no
// preallocation, the same for both otherwise): what is measured is the
// reading and checking.
func BenchmarkRestartFromSnapshot(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "wal")
	l, err := Open(DefaultConfig(dir))
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 120)
	var batch []Entry
	var activeFirst uint64
	for i := 0; ; i++ {
		batch = append(batch, Entry{Type: 1 + uint8(i%5), Data: data})
		if len(batch) < 1000 {
			continue
		}
		if _, err := l.AppendNoSync(batch...); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
		l.segMu.Lock()
		segs := slices.Clone(l.segs)
		l.segMu.Unlock()
		if len(segs) == 2 && activeFirst == 0 {
			activeFirst = segs[1].first
		}
		if activeFirst != 0 && l.LastSeq()-activeFirst >= 2_400_000/(RecordHeaderSize+120) {
			break
		}
	}
	last := l.LastSeq()
	active := filepath.Join(dir, SegmentName(activeFirst))
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(active, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = writeZeros(osFile{f}, fi.Size(), 6_600_000)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	from := activeFirst + (last-activeFirst)/2
	cfg := DefaultConfig(dir)
	cfg.ReadOnly = true
	want := int(last-from+1) * len(data)
	run := func(b *testing.B, open func(fn func(Record) error) (*Log, error)) {
		for b.Loop() {
			n := 0
			l, err := open(func(r Record) error {
				n += len(r.Data)
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			if n != want {
				b.Fatalf("replayed %d bytes, want %d", n, want)
			}
			l.Close()
		}
	}
	b.Run("open+replay", func(b *testing.B) {
		run(b, func(fn func(Record) error) (*Log, error) {
			l, err := Open(cfg)
			if err == nil {
				err = l.ReplayFromNoCopy(from, fn)
			}
			return l, err
		})
	})
	b.Run("onepass", func(b *testing.B) {
		run(b, func(fn func(Record) error) (*Log, error) { return OpenFrom(cfg, from, fn) })
	})
}
