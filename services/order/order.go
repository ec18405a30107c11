// Package order is the example order service: a branch claims the order id
// (the transaction id) at PREPARE and records the order at COMMIT.
package order

import (
	"fmt"
	"maps"

	"github.com/dtx-dev/dtx/money"
	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// ID is the service's node name.
const ID = "order"

// Order is one order record.
type Order struct {
	UserID   string      `json:"user_id"`
	ItemID   string      `json:"item_id"`
	Quantity int64       `json:"quantity"`
	Price    money.Cents `json:"price"`
	Amount   money.Cents `json:"amount"`
}

// Store is the order service's state. It implements twopc.Resource.
type Store struct {
	pending map[string]Order
	orders  map[string]Order
}

var _ twopc.Resource = (*Store)(nil)

// New returns an empty order book.
func New() *Store {
	return &Store{pending: make(map[string]Order), orders: make(map[string]Order)}
}

func decode(op []byte) (purchase.Request, error) {
	var r purchase.Request
	if err := r.UnmarshalBinary(op); err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// Keys locks the order id.
func (s *Store) Keys(tx string, op []byte) ([]string, error) {
	if _, err := decode(op); err != nil {
		return nil, err
	}
	return []string{"order:" + tx}, nil
}

// Prepare claims the order id.
func (s *Store) Prepare(tx string, op []byte) error {
	r, err := decode(op)
	if err != nil {
		return err
	}
	if _, ok := s.orders[tx]; ok {
		return fmt.Errorf("order %s already exists", tx)
	}
	if r.TxID != tx {
		return fmt.Errorf("operation names transaction %s, not %s", r.TxID, tx)
	}
	s.pending[tx] = Order{UserID: r.UserID, ItemID: r.ItemID, Quantity: r.Quantity, Price: r.Price, Amount: r.Amount}
	return nil
}

// Commit records the order.
func (s *Store) Commit(tx string, _ []byte) {
	o, ok := s.pending[tx]
	if !ok {
		panic("order: commit of an unprepared branch " + tx) // twopc guarantees it
	}
	delete(s.pending, tx)
	s.orders[tx] = o
}

// Abort drops the pending order.
func (s *Store) Abort(tx string, _ []byte) { delete(s.pending, tx) }

// State is the order service's state as JSON.
type State struct {
	Orders  map[string]Order `json:"orders"` // committed
	Pending map[string]Order `json:"pending,omitempty"`
}

// State returns a copy of the state.
func (s *Store) State() State {
	return State{Orders: maps.Clone(s.orders), Pending: maps.Clone(s.pending)}
}
