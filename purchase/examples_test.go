package purchase

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/dtx-dev/dtx/money"
)

// outcome of a request in the simple model of the services below.
type outcome string

const (
	committed    outcome = "COMMITTED"
	unknownItem  outcome = "unknown item"
	outOfStock   outcome = "out of stock"
	insufficient outcome = "insufficient funds"
	unknownUser  outcome = "unknown account"
)

// model applies requests one at a time to a world, as the three services
// would together: the first outcome of a transaction id is final.
type model struct {
	stock   map[string]int64
	balance map[string]money.Cents
	seen    map[string]outcome
}

func newModel(w World) *model {
	m := &model{stock: map[string]int64{}, balance: map[string]money.Cents{}, seen: map[string]outcome{}}
	for id, it := range w.Items {
		m.stock[id] = it.Stock
	}
	for id, a := range w.Accounts {
		m.balance[id] = a.Balance
	}
	return m
}

func (m *model) apply(r Request) outcome {
	if o, ok := m.seen[r.TxID]; ok {
		return o
	}
	o := committed
	_, userOK := m.balance[r.UserID]
	for _, it := range r.Items {
		if _, ok := m.stock[it.ItemID]; !ok {
			o = unknownItem
		}
	}
	if o == committed && !userOK {
		o = unknownUser
	}
	for _, it := range r.Items {
		if o == committed && m.stock[it.ItemID] < it.Quantity {
			o = outOfStock
		}
	}
	if o == committed && m.balance[r.UserID] < r.Amount {
		o = insufficient
	}
	if o == committed { // all or nothing
		for _, it := range r.Items {
			m.stock[it.ItemID] -= it.Quantity
		}
		m.balance[r.UserID] -= r.Amount
	}
	m.seen[r.TxID] = o
	return o
}

// TestExampleRequests checks every line of examples/requests.jsonl: how it
// decodes, and how it ends against ExampleWorld whatever the order.
func TestExampleRequests(t *testing.T) {
	want := []struct {
		txID string
		err  string  // decode error, or ""
		out  outcome // when it decodes
	}{
		{"t1", "", committed},
		{"t2", "", committed},
		{"t3", "", committed},
		{"t4", "", committed},
		{"t5", "", committed},
		{"t6", "", committed},
		{"t7", "", committed},
		{"t8", "", committed},
		{"t9", "", insufficient},
		{"t10", "", outOfStock},
		{"t11", "", outOfStock},
		{"t12", "", unknownItem},
		{"t13", "", insufficient},
		{"t1", "", committed}, // a resubmission: the first outcome, no second charge
		{"", "invalid JSON: unexpected end of input at offset 142", ""},
		{"t16", "user_id: missing", ""},
		{"t17", "quantity: must be between 1 and 1000000", ""},
		{"t18", "price: more than two decimal places", ""},
		{"t19", "payment_details.card_number: fails the Luhn check", ""},
		{"t20", "", committed},
		{"t21", "", committed},  // two items
		{"t22", "", outOfStock}, // two items, one out of stock: neither is bought
		{"t23", "items[1].item_id: same as items[0].item_id", ""},
	}
	f, err := os.Open(filepath.Join("..", "examples", "requests.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var reqs []Request
	var outs []outcome
	r := NewReader(f)
	i := 0
	for ; r.Scan(); i++ {
		l := r.Line()
		if i >= len(want) {
			t.Fatalf("line %d: more lines than expected", l.No)
		}
		w := want[i]
		if l.No != i+1 {
			t.Errorf("line number %d, want %d", l.No, i+1)
		}
		gotErr := ""
		if l.Err != nil {
			gotErr = l.Err.Error()
		}
		if gotErr != w.err || l.Req.TxID != w.txID {
			t.Errorf("line %d: txID %q, error %q; want %q, %q", l.No, l.Req.TxID, gotErr, w.txID, w.err)
		}
		if l.Err == nil {
			reqs = append(reqs, l.Req)
			outs = append(outs, w.out)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if i != len(want) {
		t.Fatalf("%d lines, want %d", i, len(want))
	}

	// The outcomes do not depend on the order: the good purchases fit in
	// the world together, and each bad one fails on its own.
	rng := rand.New(rand.NewPCG(7, 7))
	for run := range 200 {
		order := rng.Perm(len(reqs))
		if run == 0 {
			for j := range order {
				order[j] = j
			}
		}
		m := newModel(ExampleWorld())
		for _, j := range order {
			if got := m.apply(reqs[j]); got != outs[j] {
				t.Fatalf("order %v: %s (line of %s) is %q, want %q", order, reqs[j].TxID, reqs[j].ItemID, got, outs[j])
			}
		}
	}
}
