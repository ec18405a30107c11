package inventory

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
)

// TestSnapshotRoundTrip: a store restored from its snapshot has the same
// state (items, prepared reservations with their holds, committed ones),
// and the snapshot shares nothing with the live store. With -v it prints
// the serialization time and size for 20,000 committed sales (the loop's
// pause when a service snapshots).
func TestSnapshotRoundTrip(t *testing.T) {
	w := purchase.World{Items: map[string]purchase.Item{"a": {Stock: 1 << 40}, "b": {Stock: 1 << 40}}}
	s := New(w)
	n := 20_000
	if testing.Short() {
		n = 2000
	}
	op := func(item string) []byte {
		r := purchase.Request{TxID: "x", UserID: "u", Items: []purchase.LineItem{{ItemID: item, Quantity: 2, Price: money.Cents(100)}}, ItemID: item, Quantity: 2, Price: money.Cents(100), Amount: money.Cents(200), Card: purchase.Card{Last4: "1111", ExpMonth: 1, ExpYear: 2030}}
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	oa, ob := op("a"), op("b")
	for i := range n {
		tx := fmt.Sprintf("tx-%08d", i)
		if err := s.Prepare(tx, oa); err != nil {
			t.Fatal(err)
		}
		s.Commit(tx, oa)
	}
	if err := s.Prepare("open", ob); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := s.Snapshot()
	pause := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d committed sales: snapshot %d bytes (%.1f per sale) in %v", n, len(b), float64(len(b))/float64(n), pause)
	s.Commit("open", ob) // the live store moves on: the snapshot must not
	r := New(purchase.World{})
	if err := r.RestoreSnapshot(b); err != nil {
		t.Fatal(err)
	}
	if r.State().Prepared["open"].Quantity != 2 || r.items["b"].Reserved != 2 {
		t.Fatalf("the prepared reservation is not in the snapshot: %+v", r.State().Prepared)
	}
	r.Commit("open", ob)
	if !reflect.DeepEqual(r.State(), s.State()) {
		t.Fatal("restored store differs")
	}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if err := r.RestoreSnapshot(b[:len(b)/2]); err == nil {
		t.Fatal("a torn snapshot was accepted")
	}
}

// salesStore returns a store with n committed sales and one prepared
// reservation ("open" on item b), and the operation of item b.
func salesStore(tb testing.TB, n int) (*Store, []byte) {
	w := purchase.World{Items: map[string]purchase.Item{"a": {Stock: 1 << 40}, "b": {Stock: 1 << 40}}}
	s := New(w)
	op := func(item string) []byte {
		r := purchase.Request{TxID: "x", UserID: "u", Items: []purchase.LineItem{{ItemID: item, Quantity: 2, Price: money.Cents(100)}}, ItemID: item, Quantity: 2, Price: money.Cents(100), Amount: money.Cents(200), Card: purchase.Card{Last4: "1111", ExpMonth: 1, ExpYear: 2030}}
		b, err := r.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	oa, ob := op("a"), op("b")
	for i := range n {
		tx := fmt.Sprintf("tx-%08d", i)
		if err := s.Prepare(tx, oa); err != nil {
			tb.Fatal(err)
		}
		s.Commit(tx, oa)
	}
	if err := s.Prepare("open", ob); err != nil {
		tb.Fatal(err)
	}
	return s, oa
}

// TestSnapshotDeferred: the deferred encoding, run after the store moved
// on (a commit, an abort, new sales), is the snapshot of the store as it
// was at the capture, byte for byte.
func TestSnapshotDeferred(t *testing.T) {
	s, oa := salesStore(t, 5000)
	want, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := s.SnapshotDeferred()
	if err != nil {
		t.Fatal(err)
	}
	s.Abort("open", nil)
	for i := range 5000 {
		tx := fmt.Sprintf("later-%d", i)
		if err := s.Prepare(tx, oa); err != nil {
			t.Fatal(err)
		}
		s.Commit(tx, oa)
	}
	got, err := enc()
	if err != nil {
		t.Fatal(err)
	}
	r, w := New(purchase.World{}), New(purchase.World{})
	if err := r.RestoreSnapshot(got); err != nil {
		t.Fatal(err)
	}
	if err := w.RestoreSnapshot(want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.State(), w.State()) || r.sold.Len() != 5000 {
		t.Fatalf("the deferred snapshot is not the state at the capture (%d sales)", r.sold.Len())
	}
}

// BenchmarkSnapshotPause measures the loop's part of a snapshot
// (SnapshotDeferred) and, separately, the encoding done off the loop, for
// a ledger of 20,000 and 200,000 sales: the loop's part should not grow
// with the ledger.
func BenchmarkSnapshotPause(b *testing.B) {
	for _, n := range []int{20_000, 200_000} {
		s, _ := salesStore(b, n)
		b.Run(fmt.Sprintf("loop/sales=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := s.SnapshotDeferred(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("encode/sales=%d", n), func(b *testing.B) {
			for b.Loop() {
				enc, err := s.SnapshotDeferred()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := enc(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
