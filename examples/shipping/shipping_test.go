package shipping

import (
	"testing"

	"github.com/dtx-dev/dtx/purchase"
)

func op(t *testing.T, tx, user string) []byte {
	t.Helper()
	r := purchase.Request{TxID: tx, UserID: user, ItemID: "i", Quantity: 1, Price: 100, Amount: 100,
		Card: purchase.Card{Last4: "1111", ExpMonth: 12, ExpYear: 2039}}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBookShipFree(t *testing.T) {
	s := New(1, 2)
	for _, tx := range []string{"t1", "t2"} {
		if err := s.Prepare(tx, op(t, tx, "u")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Prepare("t3", op(t, "t3", "u")); err == nil {
		t.Fatal("booked past capacity")
	}
	s.Commit("t1", nil)
	s.Abort("t2", nil)
	s.Abort("t2", nil) // a duplicate abort is a no-op
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	z := s.State().Zones["zone-0"]
	if z.Free != 1 || z.Shipped != 1 || z.Booked != 0 {
		t.Fatalf("zone %+v", z)
	}
	if err := s.Prepare("t1", op(t, "t1", "u")); err == nil {
		t.Fatal("a shipped parcel was booked again")
	}
}
