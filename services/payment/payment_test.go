package payment

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
)

var today = time.Date(2026, 5, 17, 0, 0, 0, 0, time.UTC)

func world() purchase.World {
	return purchase.World{
		Items:    map[string]purchase.Item{"a": {Stock: 10}},
		Accounts: map[string]purchase.Account{"u": {Balance: 100_00}, "v": {Balance: 5_00}},
	}
}

// op returns the binary operation of an order of tx by user, with lines
// given as quantity, price pairs of items i0, i1, …
func op(t testing.TB, tx, user string, card purchase.Card, qp ...int64) []byte {
	t.Helper()
	r := purchase.Request{TxID: tx, UserID: user, Card: card}
	for i := 0; i < len(qp); i += 2 {
		r.Items = append(r.Items, purchase.LineItem{ItemID: "i" + string(rune('0'+i/2)), Quantity: qp[i], Price: money.Cents(qp[i+1])})
		r.Amount += money.Cents(qp[i] * qp[i+1])
	}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var card = purchase.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2030}

func mustCheck(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestChargesTheOrderTotal(t *testing.T) {
	s := New(world(), today)
	if keys, err := s.Keys("t1", op(t, "t1", "u", card, 2, 1000, 1, 250, 3, 100)); err != nil || !reflect.DeepEqual(keys, []string{"account:u"}) {
		t.Fatalf("Keys = %v, %v", keys, err)
	}
	// 2 × 10.00 + 1 × 2.50 + 3 × 1.00 = 25.50
	if err := s.Prepare("t1", op(t, "t1", "u", card, 2, 1000, 1, 250, 3, 100)); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	if a := s.accounts["u"]; a.Balance != 74_50 || a.Held != 25_50 {
		t.Fatalf("after prepare: %+v", *a)
	}
	if c := s.held["t1"]; c != (Charge{UserID: "u", Amount: 25_50, Card: "4242"}) {
		t.Fatalf("hold %+v", c)
	}
	s.Commit("t1", nil)
	mustCheck(t, s)
	if a := s.accounts["u"]; a.Balance != 74_50 || a.Held != 0 || a.Captured != 25_50 {
		t.Fatalf("after commit: %+v", *a)
	}
	// Aborted: the money goes back.
	before := s.State()
	if err := s.Prepare("t2", op(t, "t2", "u", card, 1, 7000, 1, 450)); err != nil {
		t.Fatal(err)
	}
	s.Abort("t2", nil)
	mustCheck(t, s)
	if after := s.State(); !reflect.DeepEqual(before, after) {
		t.Fatalf("abort did not restore the state:\n%+v\n%+v", before, after)
	}
}

func TestPrepareRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		op   func(t *testing.T) []byte
		err  string
	}{
		{"insufficient funds for the total", func(t *testing.T) []byte { return op(t, "t1", "v", card, 1, 300, 1, 201) },
			"insufficient funds for v: balance 5.00, amount 5.01"},
		{"unknown account", func(t *testing.T) []byte { return op(t, "t1", "w", card, 1, 1) }, "unknown account w"},
		{"expired card", func(t *testing.T) []byte {
			return op(t, "t1", "u", purchase.Card{Last4: "1111", ExpMonth: 4, ExpYear: 2026}, 1, 1, 1, 2)
		}, "card ending 1111 expired 04/26"},
		{"malformed", func(*testing.T) []byte { return []byte{2} }, "malformed operation: "},
	} {
		s := New(world(), today)
		before := s.State()
		if err := s.Prepare("t1", tt.op(t)); err == nil || !strings.HasPrefix(err.Error(), tt.err) {
			t.Errorf("%s: Prepare = %v, want %q", tt.name, err, tt.err)
		}
		if after := s.State(); !reflect.DeepEqual(before, after) {
			t.Errorf("%s: a failed prepare changed the state", tt.name)
		}
		mustCheck(t, s)
	}
	// A card valid this month is accepted.
	s := New(world(), today)
	if err := s.Prepare("t1", op(t, "t1", "u", purchase.Card{Last4: "1111", ExpMonth: 5, ExpYear: 2026}, 1, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFindsViolations(t *testing.T) {
	s := New(world(), today)
	if err := s.Prepare("t1", op(t, "t1", "u", card, 1, 100, 2, 100)); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	s.accounts["u"].Held--
	if err := s.Check(); err == nil || !strings.HasPrefix(err.Error(), "payment: account u does not add up") {
		t.Fatalf("Check() = %v", err)
	}
}

func TestCheckFindsDoubleCommit(t *testing.T) {
	s := New(world(), today)
	if err := s.Prepare("t1", op(t, "t1", "u", card, 1, 100, 2, 100)); err != nil {
		t.Fatal(err)
	}
	s.Commit("t1", nil)
	mustCheck(t, s)
	s.charges.Append(*s.charges.TailAt(0))
	if err := s.Check(); err == nil || err.Error() != "payment: t1 committed twice" {
		t.Fatalf("Check() = %v, want t1 committed twice", err)
	}
}
