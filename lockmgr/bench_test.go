package lockmgr

import (
	"fmt"
	"testing"
)

// ids returns n distinct strings with prefix, made before the timer starts so
// the benchmarks measure the table, not fmt.
func ids(prefix string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprint(prefix, i)
	}
	return s
}

// BenchmarkUncontended: Acquire and Release of disjoint keys, with 64 other
// txs holding locks so the maps are not trivially empty.
func BenchmarkUncontended(b *testing.B) {
	for _, nkeys := range []int{1, 3} {
		b.Run(fmt.Sprintf("keys=%d", nkeys), func(b *testing.B) {
			const n = 1024
			txs := ids("t", n)
			keys := make([][]string, n)
			for i := range keys {
				keys[i] = ids(fmt.Sprint("k", i, "."), nkeys)
			}
			tb := New()
			for i := range 64 {
				tb.Acquire(fmt.Sprint("bg", i), []string{fmt.Sprint("bg", i)})
			}
			var granted []string
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				j := i % n
				if ok, err := tb.Acquire(txs[j], keys[j]); !ok || err != nil {
					b.Fatal(ok, err)
				}
				granted = tb.ReleaseAppend(granted[:0], txs[j])
			}
		})
	}
}

// BenchmarkContended: two txs on one key; each iteration queues a waiter,
// releases the holder (granting the waiter) and releases the waiter. Release
// reuses its result slice (ReleaseAppend).
func BenchmarkContended(b *testing.B) {
	const n = 1024
	txs := ids("t", n)
	key := []string{"hot"}
	tb := New()
	var granted []string
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h, w := txs[(2*i)%n], txs[(2*i+1)%n]
		tb.Acquire(h, key)
		if ok, _ := tb.Acquire(w, key); ok {
			b.Fatal("waiter granted")
		}
		granted = tb.ReleaseAppend(granted[:0], h)
		if len(granted) != 1 {
			b.Fatal(granted)
		}
		granted = tb.ReleaseAppend(granted[:0], w)
	}
}

// BenchmarkHotKeyQueue: a hot key with a standing queue of depth waiters
// that each want 3 keys; each iteration one new tx joins the tail and the
// holder releases (the head is granted and resumes with its other keys).
func BenchmarkHotKeyQueue(b *testing.B) {
	for _, depth := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			n := depth + 2048
			txs := ids("t", n)
			keys := make([][]string, n)
			for i := range keys {
				keys[i] = []string{"hot", fmt.Sprint("a", i), fmt.Sprint("b", i)}
			}
			tb := New()
			for i := range depth + 1 {
				tb.Acquire(txs[i], keys[i])
			}
			head := 0
			var granted []string
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				next := (head + depth + 1) % n
				tb.Acquire(txs[next], keys[next])
				granted = tb.ReleaseAppend(granted[:0], txs[head])
				head = (head + 1) % n
			}
		})
	}
}

// BenchmarkRemoveWaiter: releasing a waiter from the middle of a queue of
// 100k waiters and queueing it again at the tail: O(1), whatever the length.
func BenchmarkRemoveWaiter(b *testing.B) {
	const n = 100000
	txs := ids("w", n)
	key := []string{"hot"}
	tb := New()
	tb.Acquire("holder", key)
	for _, tx := range txs {
		tb.Acquire(tx, key)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		tx := txs[(i*7919)%n]
		tb.Release(tx)
		tb.Acquire(tx, key)
	}
}

// BenchmarkFindCycle: a local cycle of 3 among 1000 waiting txs.
func BenchmarkFindCycle(b *testing.B) {
	tb := New()
	tb.Acquire("t1", []string{"a"})
	tb.Acquire("t2", []string{"b"})
	tb.Acquire("t3", []string{"c"})
	tb.Acquire("t1", []string{"b"})
	tb.Acquire("t2", []string{"c"})
	tb.Acquire("t3", []string{"a"})
	for i := range 1000 {
		tb.Acquire(fmt.Sprint("w", i), []string{fmt.Sprint("k", i%50)})
		tb.Acquire(fmt.Sprint("x", i), []string{fmt.Sprint("k", i%50)})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if tb.FindCycle("t1") == nil {
			b.Fatal("no cycle")
		}
	}
}

// BenchmarkFindCycles: the global detector on 1000 edges (a ring of 1000
// txs waiting on each other in pairs of participants: one big cycle).
func BenchmarkFindCycles(b *testing.B) {
	const n = 1000
	txs := ids("t", n)
	edges := make([]Edge, n)
	for i := range edges {
		edges[i] = Edge{Waiter: txs[i], Holder: txs[(i+1)%n], Key: "k"}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if len(FindCycles(edges)) != 1 {
			b.Fatal("want one cycle")
		}
	}
}
