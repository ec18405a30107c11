package order

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
)

func req(tx string, items ...purchase.LineItem) purchase.Request {
	r := purchase.Request{TxID: tx, UserID: "u", Items: items, Card: purchase.Card{Last4: "1111", ExpMonth: 1, ExpYear: 2030}}
	for _, it := range items {
		r.Amount += it.Price * money.Cents(it.Quantity)
	}
	return r
}

func op(t testing.TB, r purchase.Request) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCheck(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestOrderHoldsItsItems(t *testing.T) {
	s := New()
	two := req("t2", purchase.LineItem{ItemID: "b", Quantity: 2, Price: 150}, purchase.LineItem{ItemID: "a", Quantity: 1, Price: 999})
	if keys, err := s.Keys("t2", op(t, two)); err != nil || !reflect.DeepEqual(keys, []string{"order:t2"}) {
		t.Fatalf("Keys = %v, %v", keys, err)
	}
	for _, r := range []purchase.Request{req("t1", purchase.LineItem{ItemID: "a", Quantity: 3, Price: 999}), two} {
		if err := s.Prepare(r.TxID, op(t, r)); err != nil {
			t.Fatal(err)
		}
		mustCheck(t, s)
		s.Commit(r.TxID, nil)
		mustCheck(t, s)
	}
	st := s.State()
	got, _ := json.Marshal(st.Orders)
	want := `{"t1":{"user_id":"u","items":[{"item_id":"a","quantity":3,"price":"9.99"}],"amount":"29.97"},` +
		`"t2":{"user_id":"u","items":[{"item_id":"b","quantity":2,"price":"1.50"},{"item_id":"a","quantity":1,"price":"9.99"}],"amount":"12.99"}}`
	if string(got) != want {
		t.Fatalf("JSON\n got %s\nwant %s", got, want)
	}
	if o := st.Orders["t1"]; o.ItemID != "a" || o.Quantity != 3 {
		t.Errorf("one-item order %+v", o)
	}
	if o := st.Orders["t2"]; o.ItemID != "" || o.Quantity != 0 {
		t.Errorf("two-item order %+v", o)
	}
	// State is a copy.
	st.Orders["t2"].Items[0].Quantity = 7
	mustCheck(t, s)
}

func TestPrepareRefusesAndAbort(t *testing.T) {
	s := New()
	one := req("t1", purchase.LineItem{ItemID: "a", Quantity: 1, Price: 100})
	if err := s.Prepare("t1", op(t, one)); err != nil {
		t.Fatal(err)
	}
	s.Commit("t1", nil)
	before := s.State()
	for _, tt := range []struct {
		name, tx string
		op       []byte
		err      string
	}{
		{"order id taken", "t1", op(t, one), "order t1 already exists"},
		{"operation of another tx", "t2", op(t, one), "operation names transaction t1, not t2"},
		{"malformed", "t2", []byte{1}, "malformed operation: "},
	} {
		if err := s.Prepare(tt.tx, tt.op); err == nil || !strings.HasPrefix(err.Error(), tt.err) {
			t.Errorf("%s: Prepare = %v, want %q", tt.name, err, tt.err)
		}
	}
	if after := s.State(); !reflect.DeepEqual(before, after) {
		t.Fatalf("failed prepares changed the state")
	}
	two := req("t2", purchase.LineItem{ItemID: "a", Quantity: 1, Price: 100}, purchase.LineItem{ItemID: "b", Quantity: 1, Price: 100})
	if err := s.Prepare("t2", op(t, two)); err != nil {
		t.Fatal(err)
	}
	s.Abort("t2", nil)
	if after := s.State(); !reflect.DeepEqual(before, after) {
		t.Fatalf("abort did not restore the state")
	}
}

func TestCheckFindsViolations(t *testing.T) {
	s := New()
	r := req("t1", purchase.LineItem{ItemID: "a", Quantity: 1, Price: 100}, purchase.LineItem{ItemID: "b", Quantity: 2, Price: 100})
	if err := s.Prepare("t1", op(t, r)); err != nil {
		t.Fatal(err)
	}
	s.Commit("t1", nil)
	mustCheck(t, s)
	o := &s.orders.TailAt(0).o
	o.Amount++
	if err := s.Check(); err == nil || err.Error() != "order: t1: amount 3.01, but the items add up to 3.00" {
		t.Fatalf("Check() = %v", err)
	}
	o.Amount--
	o.Items = append(o.Items, o.Items[0])
	if err := s.Check(); err == nil || !strings.HasPrefix(err.Error(), "order: t1: bad or repeated item") {
		t.Fatalf("Check() = %v", err)
	}
}
