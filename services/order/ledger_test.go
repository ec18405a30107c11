package order

import (
	"fmt"
	"slices"
	"testing"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/wal"
)

// TestLedgerCrashBetweenFsyncAndSnapshot: a store snapshots (its orders go
// to the ledger file), sells more, and crashes after the next snapshot
// appended and fsynced the ledger but before that snapshot was renamed
// into place, or in the middle of the ledger's append (a torn tail, the
// power lost). Recovered from the older snapshot plus the replay of the
// log after it, its ledger is exactly the log's orders, each once, in
// commit order; after one more snapshot it holds none of them in memory.
func TestLedgerCrashBetweenFsyncAndSnapshot(t *testing.T) {
	for _, torn := range []bool{false, true} {
		for seed := uint64(1); seed <= 10; seed++ {
			t.Run(fmt.Sprintf("torn=%v/seed%d", torn, seed), func(t *testing.T) {
				fsys := wal.NewMemFS(seed)
				fsys.MkdirAll("/order", 0o755)
				var log []string // the transactions the log holds, in commit order
				sell := func(s *Store, from, to int) {
					for i := from; i < to; i++ {
						tx := fmt.Sprintf("tx-%03d", i)
						o := op(t, req(tx, purchase.LineItem{ItemID: "a", Quantity: 1, Price: 100}, purchase.LineItem{ItemID: "b", Quantity: 2, Price: 250}))
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
				snap1, err := s.Snapshot() // landed: what recovery loads
				if err != nil {
					t.Fatal(err)
				}
				if s.orders.Tail() != 0 {
					t.Fatalf("seed %d: %d orders still in memory after the snapshot", seed, s.orders.Tail())
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

				r := New()
				if err := r.RestoreSnapshot(snap1); err != nil {
					t.Fatal(err)
				}
				if err := r.AttachLedger(fsys, "/order"); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				sell(r, 10, 20) // the log's records after snap1, replayed
				check := func(r *Store) {
					t.Helper()
					var got []string
					if err := r.orders.Each(func(x placed) error { got = append(got, x.tx); return nil }); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
					if !slices.Equal(got, log) {
						t.Fatalf("seed %d: ledger %v, the log's %v", seed, got, log)
					}
					if err := r.Check(); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
					if err := r.Prepare(log[0], op(t, req(log[0], purchase.LineItem{ItemID: "a", Quantity: 1, Price: 1}))); err == nil {
						t.Fatalf("seed %d: the reused order id %s was accepted after recovery", seed, log[0])
					}
					if st := r.State(); len(st.Orders) != len(log) || st.LedgerError != "" {
						t.Fatalf("seed %d: state has %d orders (%q), want %d", seed, len(st.Orders), st.LedgerError, len(log))
					}
				}
				check(r)
				snap3, err := r.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				fsys.Crash(wal.CrashTornGarbage)
				r2 := New()
				if err := r2.RestoreSnapshot(snap3); err != nil {
					t.Fatal(err)
				}
				if err := r2.AttachLedger(fsys, "/order"); err != nil {
					t.Fatal(err)
				}
				if r2.orders.Tail() != 0 {
					t.Fatalf("seed %d: restored with %d orders in memory", seed, r2.orders.Tail())
				}
				check(r2)
			})
		}
	}
}

// A snapshot that records more ledger than the file holds is refused,
// never read as a shorter history.
func TestLedgerShorterThanSnapshot(t *testing.T) {
	fsys := wal.NewMemFS(1)
	fsys.MkdirAll("/order", 0o755)
	s := New()
	if err := s.AttachLedger(fsys, "/order"); err != nil {
		t.Fatal(err)
	}
	o := op(t, req("t1", purchase.LineItem{ItemID: "a", Quantity: 1, Price: 100}))
	s.Prepare("t1", o)
	s.Commit("t1", o)
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fsys.ReadFile("/order/" + ledger.FileName)
	fsys.WriteFile("/order/"+ledger.FileName, b[:len(b)-1])
	r := New()
	if err := r.RestoreSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := r.AttachLedger(fsys, "/order"); err == nil {
		t.Fatal("a ledger shorter than the snapshot's length was accepted")
	}
}
