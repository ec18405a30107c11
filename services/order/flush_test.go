package order

import (
	"fmt"
	"slices"
	"testing"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/wal"
)

// TestLedgerFlushBetweenSnapshots: a store moves the orders it holds in
// memory to its ledger file (and their ids to a run of the id set) twice
// between two snapshots, the second time on a disk that halts part way
// or not at all, then loses power. Recovered from the last snapshot plus
// the replay of the log after it, its ledger is exactly the log's orders,
// each once, in commit order, and every one of their ids is refused.
func TestLedgerFlushBetweenSnapshots(t *testing.T) {
	for halt := -1; halt < 6; halt++ {
		t.Run(fmt.Sprintf("halt=%d", halt), func(t *testing.T) {
			fsys := wal.NewMemFS(uint64(halt + 2))
			fsys.MkdirAll("/order", 0o755)
			var log []string
			sell := func(s *Store, from, to int) {
				for i := from; i < to; i++ {
					tx := fmt.Sprintf("tx-%03d", i)
					o := op(t, req(tx, purchase.LineItem{ItemID: "a", Quantity: 1, Price: 100}))
					if err := s.Prepare(tx, o); err != nil {
						t.Fatal(err)
					}
					s.Commit(tx, o)
					if len(log) < to {
						log = append(log, tx)
					}
				}
			}
			s := New()
			if err := s.AttachLedger(fsys, "/order"); err != nil {
				t.Fatal(err)
			}
			sell(s, 0, 10)
			snap1, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			sell(s, 10, 20)
			if got := s.LedgerHeld(); got != 10 {
				t.Fatalf("LedgerHeld() = %d after 10 orders since the snapshot, want 10", got)
			}
			if err := s.CaptureLedger()(); err != nil {
				t.Fatal(err)
			}
			if s.orders.Tail() != 0 || s.LedgerHeld() != 0 {
				t.Fatalf("after a flush: %d orders in memory (LedgerHeld %d), want 0", s.orders.Tail(), s.LedgerHeld())
			}
			if dup, err := s.ids.Has("tx-015"); err != nil || !dup {
				t.Fatalf("tx-015 after the flush: in the set %v, %v", dup, err)
			}
			sell(s, 20, 25)
			if halt >= 0 {
				fsys.HaltAfter(halt)
			}
			flushErr := s.CaptureLedger()()
			if halt >= 0 && flushErr == nil && fsys.Halted() {
				t.Fatalf("a flush on a halted disk succeeded")
			}
			fsys.Crash(wal.CrashTornGarbage)

			r := New()
			if err := r.RestoreSnapshot(snap1); err != nil {
				t.Fatal(err)
			}
			if err := r.AttachLedger(fsys, "/order"); err != nil {
				t.Fatal(err)
			}
			sell(r, 10, 25) // the log's records after snap1, replayed
			var got []string
			if err := r.orders.Each(func(x placed) error { got = append(got, x.tx); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, log) {
				t.Fatalf("ledger %v, the log's %v", got, log)
			}
			if err := r.Check(); err != nil {
				t.Fatal(err)
			}
			for _, tx := range log {
				if dup, err := r.ids.Has(tx); err != nil || !dup {
					t.Fatalf("%s after recovery: in the set %v, %v", tx, dup, err)
				}
			}
			if err := r.CaptureLedger()(); err != nil {
				t.Fatal(err)
			}
			if r.LedgerHeld() != 0 {
				t.Fatalf("after a flush of the recovered store: LedgerHeld %d", r.LedgerHeld())
			}
		})
	}
}
