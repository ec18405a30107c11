package inventory

import (
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/wal"
)

// TestLedgerCrashBetweenFsyncAndSnapshot: a store snapshots (its sales go
// to the ledger file), sells more, and crashes after the next snapshot
// appended and fsynced the ledger but before that snapshot was renamed
// into place, or in the middle of the ledger's append (a torn tail, the
// power lost). Recovered from the older snapshot plus the replay of the
// log after it, its ledger is exactly the log's sales, each once, in
// commit order; after one more snapshot it holds none of them in memory.
func TestLedgerCrashBetweenFsyncAndSnapshot(t *testing.T) {
	w := purchase.World{Items: map[string]purchase.Item{"a": {Stock: 1000}, "b": {Stock: 1000}}}
	for _, torn := range []bool{false, true} {
		for seed := uint64(1); seed <= 10; seed++ {
			t.Run(fmt.Sprintf("torn=%v/seed%d", torn, seed), func(t *testing.T) {
				fsys := wal.NewMemFS(seed)
				fsys.MkdirAll("/inventory", 0o755)
				var log []string // the transactions the log holds, in commit order
				sell := func(s *Store, from, to int) {
					for i := from; i < to; i++ {
						tx := fmt.Sprintf("tx-%03d", i)
						o := op(t, tx, line{"a", 1}, line{"b", 2})
						if err := s.Prepare(tx, o); err != nil {
							t.Fatal(err)
						}
						s.Commit(tx, o)
						if len(log) < to {
							log = append(log, tx)
						}
					}
				}
				s := New(w)
				if err := s.AttachLedger(fsys, "/inventory"); err != nil {
					t.Fatal(err)
				}
				sell(s, 0, 10)
				snap1, err := s.Snapshot() // landed: what recovery loads
				if err != nil {
					t.Fatal(err)
				}
				if s.sold.Tail() != 0 {
					t.Fatalf("seed %d: %d sales still in memory after the snapshot", seed, s.sold.Tail())
				}
				sell(s, 10, 20)
				mode := wal.CrashSyncedOnly
				if torn {
					fsys.HaltAfter(int(seed % 2)) // the write or the fsync of the append fails
					if _, err := s.Snapshot(); err == nil {
						t.Fatalf("seed %d: snapshot on a halted disk succeeded", seed)
					}
					mode = wal.CrashTornGarbage
				} else if _, err := s.Snapshot(); err != nil { // the ledger is fsynced; the snapshot never lands
					t.Fatal(err)
				}
				fsys.Crash(mode)

				r := New(purchase.World{})
				if err := r.RestoreSnapshot(snap1); err != nil {
					t.Fatal(err)
				}
				if err := r.AttachLedger(fsys, "/inventory"); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				sell(r, 10, 20) // the log's records after snap1, replayed
				check := func(r *Store) {
					t.Helper()
					var got []string
					if err := r.sold.Each(func(x sale) error { got = append(got, x.tx); return nil }); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
					if !slices.Equal(got, log) {
						t.Fatalf("seed %d: ledger %v, the log's %v", seed, got, log)
					}
					if err := r.Check(); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
					if st := r.State(); len(st.Reservations) != len(log) || st.LedgerError != "" {
						t.Fatalf("seed %d: state has %d reservations (%q), want %d", seed, len(st.Reservations), st.LedgerError, len(log))
					}
				}
				check(r)
				snap3, err := r.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				fsys.Crash(wal.CrashTornGarbage)
				r2 := New(purchase.World{})
				if err := r2.RestoreSnapshot(snap3); err != nil {
					t.Fatal(err)
				}
				if err := r2.AttachLedger(fsys, "/inventory"); err != nil {
					t.Fatal(err)
				}
				if r2.sold.Tail() != 0 {
					t.Fatalf("seed %d: restored with %d sales in memory", seed, r2.sold.Tail())
				}
				check(r2)
			})
		}
	}
}

// A snapshot that records more ledger than the file holds is refused,
// never read as a shorter history.
func TestLedgerShorterThanSnapshot(t *testing.T) {
	w := purchase.World{Items: map[string]purchase.Item{"a": {Stock: 10}}}
	fsys := wal.NewMemFS(1)
	fsys.MkdirAll("/inventory", 0o755)
	s := New(w)
	if err := s.AttachLedger(fsys, "/inventory"); err != nil {
		t.Fatal(err)
	}
	o := op(t, "t1", line{"a", 1})
	s.Prepare("t1", o)
	s.Commit("t1", o)
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fsys.ReadFile("/inventory/" + ledger.FileName)
	fsys.WriteFile("/inventory/"+ledger.FileName, b[:len(b)-1])
	r := New(purchase.World{})
	if err := r.RestoreSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := r.AttachLedger(fsys, "/inventory"); err == nil {
		t.Fatal("a ledger shorter than the snapshot's length was accepted")
	}
}

// BenchmarkHeapPerSale reports the live heap per committed sale after
// 50,000 sales, with the sales in memory (no ledger file: the state before
// the ledger) and with a snapshot, which moves them to the ledger file,
// every 5,000 sales.
func BenchmarkHeapPerSale(b *testing.B) {
	const n = 50_000
	w := purchase.World{Items: map[string]purchase.Item{"a": {Stock: 1 << 40}, "b": {Stock: 1 << 40}}}
	for _, withLedger := range []bool{false, true} {
		b.Run(fmt.Sprintf("ledger=%v", withLedger), func(b *testing.B) {
			for range b.N {
				fsys := wal.NewMemFS(1)
				fsys.MkdirAll("/inventory", 0o755)
				s := New(w)
				if withLedger {
					if err := s.AttachLedger(fsys, "/inventory"); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for i := range n {
					tx := fmt.Sprintf("tx-%08d", i)
					o := op(b, tx, line{"a", 1}, line{"b", 2})
					if err := s.Prepare(tx, o); err != nil {
						b.Fatal(err)
					}
					s.Commit(tx, o)
					if withLedger && (i+1)%5000 == 0 {
						if _, err := s.Snapshot(); err != nil {
							b.Fatal(err)
						}
					}
				}
				s.sold.Len() // drops what the last snapshot flushed
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heap-B/sale")
				runtime.KeepAlive(s)
			}
		})
	}
}
