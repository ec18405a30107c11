// Package order is the example order service: a branch claims the order id
// (the transaction id) at PREPARE and records the order, with all its line
// items, at COMMIT.
package order

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/dtx-dev/dtx/internal/idset"
	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// ID is the service's node name.
const ID = "order"

// Order is one order record. Its JSON form is
// {"user_id":"u1","items":[{"item_id":"i1","quantity":2,"price":"9.99"}],"amount":"19.98"},
// for one item or many.
type Order struct {
	UserID string              `json:"user_id"`
	Items  []purchase.LineItem `json:"items"`  // in the order of the request
	Amount money.Cents         `json:"amount"` // the sum of quantity × price over Items

	// ItemID and Quantity repeat Items[0] when the order has exactly one
	// item, and are empty otherwise (like purchase.Request's). They are
	// not in the JSON form: they are kept for services.CheckAtomic, which
	// compares them with the inventory's reservation, until it compares
	// Items.
	ItemID   string `json:"-"`
	Quantity int64  `json:"-"`
}

func (o Order) clone() Order {
	o.Items = slices.Clone(o.Items)
	return o
}

// Store is the order service's state. It implements twopc.Resource.
type Store struct {
	pending map[string]Order
	// orders are the committed orders, in commit order: the ledger file
	// and the ones committed since the last snapshot. ids is the set of
	// every committed order id, the check that an id is new: keyed 64-bit
	// hashes, those of the orders in the ledger file in run files beside
	// it (internal/idset), the others in memory. A hash false match (1 in
	// 2^64 per pair) refuses a new id, the safe side.
	orders *ledger.Book[placed]
	ids    *idset.Set
	ops    purchase.BinaryCache // the last operation decoded
}

// placed is a committed order.
type placed struct {
	tx string
	o  Order
}

var _ twopc.Resource = (*Store)(nil)

// New returns an empty order book.
func New() *Store {
	return &Store{pending: make(map[string]Order), orders: ledger.NewBook(encodePlaced, decodePlaced), ids: idset.New()}
}

// decode reads an operation; Keys and then Prepare of one branch decode
// it once.
func (s *Store) decode(op []byte) (purchase.Request, error) {
	r, err := s.ops.Decode(op)
	if err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// Keys locks the order id.
func (s *Store) Keys(tx string, op []byte) ([]string, error) {
	if _, err := s.decode(op); err != nil {
		return nil, err
	}
	return []string{"order:" + tx}, nil
}

// Prepare claims the order id.
func (s *Store) Prepare(tx string, op []byte) error { return s.prepare(tx, op, true) }

// ReplayPrepare is Prepare of a branch replayed from the log
// (twopc.ReplayPreparer): it prepared once against the same orders, so
// its id was new then and is new now, and the look-up in the id set (a
// disk read) is skipped.
func (s *Store) ReplayPrepare(tx string, _ uint32, op []byte) error { return s.prepare(tx, op, false) }

// Placed reports whether order tx was placed (committed), looking it up
// among the ledger's ids as Prepare does.
func (s *Store) Placed(tx string) (bool, error) { return s.ids.Has(tx) }

func (s *Store) prepare(tx string, op []byte, checkID bool) error {
	r, err := s.decode(op)
	if err != nil {
		return err
	}
	if checkID {
		dup, err := s.ids.Has(tx)
		if err != nil {
			return fmt.Errorf("order %s: cannot tell whether it exists: %w", tx, err)
		}
		if dup {
			return fmt.Errorf("order %s already exists", tx)
		}
	}
	if r.TxID != tx {
		return fmt.Errorf("operation names transaction %s, not %s", r.TxID, tx)
	}
	o := Order{UserID: r.UserID, Items: r.Items, Amount: r.Amount}
	if len(r.Items) == 1 {
		o.ItemID, o.Quantity = r.Items[0].ItemID, r.Items[0].Quantity
	}
	s.pending[tx] = o
	return nil
}

// Commit records the order.
func (s *Store) Commit(tx string, _ []byte) {
	o, ok := s.pending[tx]
	if !ok {
		panic("order: commit of an unprepared branch " + tx) // twopc guarantees it
	}
	delete(s.pending, tx)
	s.place(tx, o)
}

func (s *Store) place(tx string, o Order) {
	s.ids.Add(tx)
	s.orders.Append(placed{tx, o})
}

// encodePlaced and decodePlaced are an order's form in the ledger file:
// the order id, the buyer, the amount, the number of items, then each
// item's id, quantity and price.
func encodePlaced(b []byte, x placed) []byte {
	b = ledger.AppendString(b, x.tx)
	b = ledger.AppendString(b, x.o.UserID)
	b = binary.AppendVarint(b, int64(x.o.Amount))
	b = binary.AppendUvarint(b, uint64(len(x.o.Items)))
	for _, it := range x.o.Items {
		b = ledger.AppendString(b, it.ItemID)
		b = binary.AppendVarint(b, it.Quantity)
		b = binary.AppendVarint(b, int64(it.Price))
	}
	return b
}

// idOf returns the order id of a ledger entry, decoding nothing else.
func idOf(p []byte) (string, error) {
	r := ledger.Reader{B: p}
	id := r.String()
	return id, r.Err
}

func decodePlaced(p []byte) (placed, error) {
	r := ledger.Reader{B: p}
	x := placed{tx: r.String()}
	x.o.UserID = r.String()
	x.o.Amount = money.Cents(r.Varint())
	n := r.Uvarint()
	if n > uint64(len(p)) {
		return x, fmt.Errorf("order of %d items in %d bytes", n, len(p))
	}
	x.o.Items = make([]purchase.LineItem, 0, n)
	for range n {
		x.o.Items = append(x.o.Items, purchase.LineItem{ItemID: r.String(), Quantity: r.Varint(), Price: money.Cents(r.Varint())})
	}
	if len(x.o.Items) == 1 {
		x.o.ItemID, x.o.Quantity = x.o.Items[0].ItemID, x.o.Items[0].Quantity
	}
	return x, r.Done()
}

// Abort drops the pending order.
func (s *Store) Abort(tx string, _ []byte) { delete(s.pending, tx) }

// State is the order service's state as JSON.
type State struct {
	Orders  map[string]Order `json:"orders"` // committed
	Pending map[string]Order `json:"pending,omitempty"`
	// LedgerError says why the ledger file could not be read whole
	// (Orders then hold what was read before the error).
	LedgerError string `json:"ledger_error,omitempty"`
}

// State returns a copy of the state (sharing nothing with the store).
func (s *Store) State() State {
	st := State{Orders: make(map[string]Order, s.orders.Len()), Pending: make(map[string]Order, len(s.pending))}
	if err := s.orders.Each(func(x placed) error { st.Orders[x.tx] = x.o.clone(); return nil }); err != nil {
		st.LedgerError = err.Error()
	}
	for tx, o := range s.pending {
		st.Pending[tx] = o.clone()
	}
	return st
}

// Check verifies that every order, pending or committed, has at least one
// item, each named once with a positive quantity and price, and that its
// amount is the sum of quantity × price over them. It returns the first
// violation.
func (s *Store) Check() error {
	for _, tx := range slices.Sorted(maps.Keys(s.pending)) {
		if err := s.pending[tx].check(); err != nil {
			return fmt.Errorf("order: %s: %w", tx, err)
		}
	}
	if s.ids.Len() != int64(s.orders.Len()) {
		return fmt.Errorf("order: %d orders committed but %d ids placed", s.orders.Len(), s.ids.Len())
	}
	seen := make(map[string]struct{}, s.orders.Len())
	return s.orders.Each(func(x placed) error {
		if _, dup := seen[x.tx]; dup {
			return fmt.Errorf("order: %s committed twice", x.tx)
		}
		seen[x.tx] = struct{}{}
		if err := x.o.check(); err != nil {
			return fmt.Errorf("order: %s: %w", x.tx, err)
		}
		return nil
	})
}

func (o Order) check() error {
	if len(o.Items) == 0 {
		return errors.New("no item")
	}
	var sum money.Cents
	seen := make(map[string]bool, len(o.Items))
	for _, it := range o.Items {
		if seen[it.ItemID] || it.Quantity <= 0 || it.Price <= 0 {
			return fmt.Errorf("bad or repeated item %+v", it)
		}
		seen[it.ItemID] = true
		amount, err := money.Mul(it.Price, it.Quantity)
		if err == nil {
			sum, err = money.Add(sum, amount)
		}
		if err != nil {
			return err
		}
	}
	if sum != o.Amount {
		return fmt.Errorf("amount %s, but the items add up to %s", o.Amount, sum)
	}
	return nil
}
