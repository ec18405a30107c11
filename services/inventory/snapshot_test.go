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
