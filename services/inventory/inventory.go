// Package inventory is the example stock service: a branch reserves the
// quantity of an item at PREPARE, sells it at COMMIT and puts it back at
// ABORT. Per item, at all times: available + reserved + sold == stock.
package inventory

import (
	"fmt"
	"maps"
	"slices"

	"github.com/dtx-dev/dtx/purchase"
	"github.com/dtx-dev/dtx/twopc"
)

// ID is the service's node name.
const ID = "inventory"

// Item is the stock of one item.
type Item struct {
	Stock     int64 `json:"stock"`     // initial stock
	Available int64 `json:"available"` // free to reserve
	Reserved  int64 `json:"reserved"`  // held by prepared branches
	Sold      int64 `json:"sold"`      // taken by committed branches
}

// Reservation is one committed (or, when in doubt, prepared) branch.
type Reservation struct {
	ItemID   string `json:"item_id"`
	Quantity int64  `json:"quantity"`
}

// Store is the inventory's state. It implements twopc.Resource.
type Store struct {
	items    map[string]*Item
	prepared map[string]Reservation
	sold     map[string]Reservation
}

var _ twopc.Resource = (*Store)(nil)

// New returns a store with the world's initial stock.
func New(w purchase.World) *Store {
	s := &Store{
		items:    make(map[string]*Item, len(w.Items)),
		prepared: make(map[string]Reservation),
		sold:     make(map[string]Reservation),
	}
	for id, it := range w.Items {
		s.items[id] = &Item{Stock: it.Stock, Available: it.Stock}
	}
	return s
}

func decode(op []byte) (purchase.Request, error) {
	var r purchase.Request
	if err := r.UnmarshalBinary(op); err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// Keys locks the item.
func (s *Store) Keys(tx string, op []byte) ([]string, error) {
	r, err := decode(op)
	if err != nil {
		return nil, err
	}
	return []string{"item:" + r.ItemID}, nil
}

// Prepare reserves the quantity if it is available.
func (s *Store) Prepare(tx string, op []byte) error {
	r, err := decode(op)
	if err != nil {
		return err
	}
	it := s.items[r.ItemID]
	switch {
	case it == nil:
		return fmt.Errorf("unknown item %s", r.ItemID)
	case it.Available < r.Quantity:
		return fmt.Errorf("insufficient stock for %s: %d available, %d requested", r.ItemID, it.Available, r.Quantity)
	}
	it.Available -= r.Quantity
	it.Reserved += r.Quantity
	s.prepared[tx] = Reservation{ItemID: r.ItemID, Quantity: r.Quantity}
	return nil
}

// Commit sells the reservation.
func (s *Store) Commit(tx string, _ []byte) {
	res, ok := s.prepared[tx]
	if !ok {
		panic("inventory: commit of an unprepared branch " + tx) // twopc guarantees it
	}
	it := s.items[res.ItemID]
	it.Reserved -= res.Quantity
	it.Sold += res.Quantity
	delete(s.prepared, tx)
	s.sold[tx] = res
}

// Abort puts the reservation back.
func (s *Store) Abort(tx string, _ []byte) {
	res, ok := s.prepared[tx]
	if !ok {
		return
	}
	it := s.items[res.ItemID]
	it.Reserved -= res.Quantity
	it.Available += res.Quantity
	delete(s.prepared, tx)
}

// State is the inventory's state as JSON.
type State struct {
	Items        map[string]Item        `json:"items"`
	Reservations map[string]Reservation `json:"reservations"` // committed
	Prepared     map[string]Reservation `json:"prepared,omitempty"`
}

// State returns a copy of the state.
func (s *Store) State() State {
	st := State{
		Items:        make(map[string]Item, len(s.items)),
		Reservations: maps.Clone(s.sold),
		Prepared:     maps.Clone(s.prepared),
	}
	for id, it := range s.items {
		st.Items[id] = *it
	}
	return st
}

// Check verifies available + reserved + sold == stock for every item and
// that reservations add up. It returns the first violation.
func (s *Store) Check() error {
	held := map[string]int64{}
	sold := map[string]int64{}
	for _, r := range s.prepared {
		held[r.ItemID] += r.Quantity
	}
	for _, r := range s.sold {
		sold[r.ItemID] += r.Quantity
	}
	for _, id := range slices.Sorted(maps.Keys(s.items)) {
		it := s.items[id]
		switch {
		case it.Available < 0 || it.Reserved < 0 || it.Sold < 0:
			return fmt.Errorf("inventory: item %s has a negative count: %+v", id, *it)
		case it.Available+it.Reserved+it.Sold != it.Stock:
			return fmt.Errorf("inventory: item %s does not add up: %+v", id, *it)
		case it.Reserved != held[id] || it.Sold != sold[id]:
			return fmt.Errorf("inventory: item %s: reserved %d/sold %d but branches say %d/%d", id, it.Reserved, it.Sold, held[id], sold[id])
		}
	}
	return nil
}
