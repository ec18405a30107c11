package order

import (
	"fmt"
	"testing"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/wal"
)

// BenchmarkRestart measures a restart of the order service after N
// orders (a snapshot every 10,000) on the real file system:
// RestoreSnapshot then AttachLedger, the work a start does for the
// orders before the log's tail is replayed.
func BenchmarkRestart(b *testing.B) {
	for _, n := range []int{0, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("orders=%d", n), func(b *testing.B) {
			if n > 100_000 && testing.Short() {
				b.Skip("short")
			}
			fsys, dir := wal.OSFS(), b.TempDir()
			s := New()
			if err := s.AttachLedger(fsys, dir); err != nil {
				b.Fatal(err)
			}
			var snap []byte
			for i := range n {
				tx := fmt.Sprintf("tx-%08d-%d", i, i*7919)
				o := op(b, req(tx, purchase.LineItem{ItemID: "a", Quantity: 1, Price: 100}))
				if err := s.Prepare(tx, o); err != nil {
					b.Fatal(err)
				}
				s.Commit(tx, o)
				if i%10_000 == 9_999 {
					var err error
					if snap, err = s.Snapshot(); err != nil {
						b.Fatal(err)
					}
				}
			}
			if snap == nil {
				var err error
				if snap, err = s.Snapshot(); err != nil {
					b.Fatal(err)
				}
			}
			s.CloseLedger()
			for b.Loop() {
				r := New()
				if err := r.RestoreSnapshot(snap); err != nil {
					b.Fatal(err)
				}
				if err := r.AttachLedger(fsys, dir); err != nil {
					b.Fatal(err)
				}
				if ok := r.Prepare("tx-00000000-0", op(b, req("tx-00000000-0", purchase.LineItem{ItemID: "a", Quantity: 1, Price: 1}))); n > 0 && ok == nil {
					b.Fatal("a reused id accepted after the restart")
				}
				r.CloseLedger()
			}
		})
	}
}
