package payment

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/wal"
)

// TestLedgerCrashBetweenFsyncAndSnapshot: a store snapshots (its captured charges go
// to the ledger file), sells more, and crashes after the next snapshot
// appended and fsynced the ledger but before that snapshot was renamed
// into place, or in the middle of the ledger's append (a torn tail, the
// power lost). Recovered from the older snapshot plus the replay of the
// log after it, its ledger is exactly the log's charges, each once, in
// commit order; after one more snapshot it holds none of them in memory.
func TestLedgerCrashBetweenFsyncAndSnapshot(t *testing.T) {
	w := purchase.World{Accounts: map[string]purchase.Account{"u": {Balance: 1_000_00}}}
	today := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	for _, torn := range []bool{false, true} {
		for seed := uint64(1); seed <= 10; seed++ {
			t.Run(fmt.Sprintf("torn=%v/seed%d", torn, seed), func(t *testing.T) {
				fsys := wal.NewMemFS(seed)
				fsys.MkdirAll("/payment", 0o755)
				var log []string // the transactions the log holds, in commit order
				sell := func(s *Store, from, to int) {
					for i := from; i < to; i++ {
						tx := fmt.Sprintf("tx-%03d", i)
						o := op(t, tx, "u", card, 1, 3, 2, 5)
						if err := s.Prepare(tx, o); err != nil {
							t.Fatal(err)
						}
						s.Commit(tx, o)
						if len(log) < to {
							log = append(log, tx)
						}
					}
				}
				s := New(w, today)
				if err := s.AttachLedger(fsys, "/payment"); err != nil {
					t.Fatal(err)
				}
				sell(s, 0, 10)
				snap1, err := s.Snapshot() // landed: what recovery loads
				if err != nil {
					t.Fatal(err)
				}
				if s.charges.Tail() != 0 {
					t.Fatalf("seed %d: %d charges still in memory after the snapshot", seed, s.charges.Tail())
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

				r := New(purchase.World{}, today)
				if err := r.RestoreSnapshot(snap1); err != nil {
					t.Fatal(err)
				}
				if err := r.AttachLedger(fsys, "/payment"); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				sell(r, 10, 20) // the log's records after snap1, replayed
				check := func(r *Store) {
					t.Helper()
					var got []string
					if err := r.charges.Each(func(x capture) error { got = append(got, x.tx); return nil }); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
					if !slices.Equal(got, log) {
						t.Fatalf("seed %d: ledger %v, the log's %v", seed, got, log)
					}
					if err := r.Check(); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
					if st := r.State(); len(st.Charges) != len(log) || st.LedgerError != "" {
						t.Fatalf("seed %d: state has %d charges (%q), want %d", seed, len(st.Charges), st.LedgerError, len(log))
					}
				}
				check(r)
				snap3, err := r.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				fsys.Crash(wal.CrashTornGarbage)
				r2 := New(purchase.World{}, today)
				if err := r2.RestoreSnapshot(snap3); err != nil {
					t.Fatal(err)
				}
				if err := r2.AttachLedger(fsys, "/payment"); err != nil {
					t.Fatal(err)
				}
				if r2.charges.Tail() != 0 {
					t.Fatalf("seed %d: restored with %d charges in memory", seed, r2.charges.Tail())
				}
				check(r2)
			})
		}
	}
}

// A snapshot that records more ledger than the file holds is refused,
// never read as a shorter history.
func TestLedgerShorterThanSnapshot(t *testing.T) {
	w := purchase.World{Accounts: map[string]purchase.Account{"u": {Balance: 1_000_00}}}
	today := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	fsys := wal.NewMemFS(1)
	fsys.MkdirAll("/payment", 0o755)
	s := New(w, today)
	if err := s.AttachLedger(fsys, "/payment"); err != nil {
		t.Fatal(err)
	}
	o := op(t, "t1", "u", card, 1, 3)
	s.Prepare("t1", o)
	s.Commit("t1", o)
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fsys.ReadFile("/payment/" + ledger.FileName)
	fsys.WriteFile("/payment/"+ledger.FileName, b[:len(b)-1])
	r := New(purchase.World{}, today)
	if err := r.RestoreSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := r.AttachLedger(fsys, "/payment"); err == nil {
		t.Fatal("a ledger shorter than the snapshot's length was accepted")
	}
}
