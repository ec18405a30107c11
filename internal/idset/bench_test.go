package idset

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"

	"github.com/dtx-dev/dtx/wal"
)

// filled returns a set on the real file system holding n ids, flushed in
// snapshots of 50,000 (merged as the service's would be), and the heap
// it holds per id.
func filled(b *testing.B, n int) (*Set, float64) {
	b.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := New()
	if err := s.Attach(wal.OSFS(), b.TempDir(), "ledger", 0, 0, nil); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		s.Add("tx-" + strconv.Itoa(i))
		if (i+1)%50_000 == 0 || i == n-1 {
			c := s.Capture()
			if err := c.Flush(int64(i+1)*100, i+1); err != nil {
				b.Fatal(err)
			}
		}
	}
	s.InMemory() // drop the flushed hashes from memory
	runtime.GC()
	runtime.ReadMemStats(&after)
	return s, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

// BenchmarkAbsent: a lookup of an id never added (the common case: a new
// order), with 1M and 10M ids in runs; it reports the runs and the heap
// per id.
func BenchmarkAbsent(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("ids=%d", n), func(b *testing.B) {
			if testing.Short() {
				b.Skip("short")
			}
			s, perID := filled(b, n)
			defer s.Close()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ok, err := s.Has("new-" + strconv.Itoa(i))
				if ok || err != nil {
					b.Fatal(ok, err)
				}
				i++
			}
			b.ReportMetric(perID, "heapB/id")
			b.ReportMetric(float64(s.Runs()), "runs")
		})
	}
}
