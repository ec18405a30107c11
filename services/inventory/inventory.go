// Package inventory is the example stock service: a branch reserves the
// quantity of every item of an order at PREPARE, sells them at COMMIT and
// puts them back at ABORT, all items or none. Per item, at all times:
// available + reserved + sold == stock.
//
// A branch locks one key per item, "item:<id>", in the order the request
// lists its items, not sorted: two orders that list the same items in
// opposite orders can deadlock inside this one service. That is on purpose
// (the requests' order is the client's), and the participant's deadlock
// handling (lock timeouts, the local wait-for graph, wound-wait) resolves
// such cycles like any other.
package inventory

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/dtx-dev/dtx/internal/ledger"
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

// Reservation is one committed (or, when in doubt, prepared) branch: the
// items of one order, in the order of the request. Its JSON form is
// {"items":[{"item_id":"i1","quantity":2}]}, for one item or many.
type Reservation struct {
	Items []ReservedItem `json:"items"`

	// ItemID and Quantity repeat Items[0] when the order has exactly one
	// item, and are empty otherwise (like purchase.Request's). They are
	// not in the JSON form: they are kept for services.CheckAtomic, which
	// compares them with the order's, until it compares Items.
	ItemID   string `json:"-"`
	Quantity int64  `json:"-"`
}

// ReservedItem is one item of a reservation.
type ReservedItem struct {
	ItemID   string `json:"item_id"`
	Quantity int64  `json:"quantity"`
}

func newReservation(lines []purchase.LineItem) Reservation {
	r := Reservation{Items: make([]ReservedItem, len(lines))}
	for i, l := range lines {
		r.Items[i] = ReservedItem{ItemID: l.ItemID, Quantity: l.Quantity}
	}
	if len(lines) == 1 {
		r.ItemID, r.Quantity = lines[0].ItemID, lines[0].Quantity
	}
	return r
}

func (r Reservation) clone() Reservation {
	r.Items = slices.Clone(r.Items)
	return r
}

// Store is the inventory's state. It implements twopc.Resource.
type Store struct {
	items    map[string]*Item
	prepared map[string]Reservation
	sold     *ledger.Book[sale]   // committed branches, in commit order
	ops      purchase.BinaryCache // the last operation decoded
}

var _ twopc.Resource = (*Store)(nil)

// New returns a store with the world's initial stock.
func New(w purchase.World) *Store {
	s := &Store{
		items:    make(map[string]*Item, len(w.Items)),
		prepared: make(map[string]Reservation),
		sold:     ledger.NewBook(encodeSale, decodeSale),
	}
	for id, it := range w.Items {
		s.items[id] = &Item{Stock: it.Stock, Available: it.Stock}
	}
	return s
}

// decode decodes an operation. Its Items are 1 to purchase.MaxItems lines
// with distinct item ids (UnmarshalBinary checks it).
// decode reads an operation; Keys and then Prepare of one branch decode
// it once.
func (s *Store) decode(op []byte) (purchase.Request, error) {
	r, err := s.ops.Decode(op)
	if err != nil {
		return r, fmt.Errorf("malformed operation: %w", err)
	}
	return r, nil
}

// Keys locks every item of the order, in the order of the request.
func (s *Store) Keys(tx string, op []byte) ([]string, error) {
	r, err := s.decode(op)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(r.Items))
	for i, it := range r.Items {
		keys[i] = "item:" + it.ItemID
	}
	return keys, nil
}

// Prepare reserves the quantity of every item if every one is available,
// and otherwise reserves nothing and names the first item, in the order of
// the request, that is unknown or short.
func (s *Store) Prepare(tx string, op []byte) error {
	r, err := s.decode(op)
	if err != nil {
		return err
	}
	if _, ok := s.prepared[tx]; ok { // twopc prepares a branch once
		return fmt.Errorf("inventory: %s is already prepared", tx)
	}
	for _, l := range r.Items {
		it := s.items[l.ItemID]
		switch {
		case it == nil:
			return fmt.Errorf("unknown item %s", l.ItemID)
		case it.Available < l.Quantity:
			return fmt.Errorf("insufficient stock for %s: %d available, %d requested", l.ItemID, it.Available, l.Quantity)
		}
	}
	for _, l := range r.Items { // the ids are distinct: each check above still holds
		it := s.items[l.ItemID]
		it.Available -= l.Quantity
		it.Reserved += l.Quantity
	}
	s.prepared[tx] = newReservation(r.Items)
	return nil
}

// Commit sells every item of the reservation.
func (s *Store) Commit(tx string, _ []byte) {
	res, ok := s.prepared[tx]
	if !ok {
		panic("inventory: commit of an unprepared branch " + tx) // twopc guarantees it
	}
	for _, l := range res.Items {
		it := s.items[l.ItemID]
		it.Reserved -= l.Quantity
		it.Sold += l.Quantity
	}
	delete(s.prepared, tx)
	s.sold.Append(sale{tx, res})
}

// encodeSale and decodeSale are a sale's form in the ledger file: the
// transaction id, the number of items, then each item's id and quantity.
func encodeSale(b []byte, x sale) []byte {
	b = ledger.AppendString(b, x.tx)
	b = binary.AppendUvarint(b, uint64(len(x.res.Items)))
	for _, it := range x.res.Items {
		b = ledger.AppendString(b, it.ItemID)
		b = binary.AppendVarint(b, it.Quantity)
	}
	return b
}

func decodeSale(p []byte) (sale, error) {
	r := ledger.Reader{B: p}
	x := sale{tx: r.String()}
	n := r.Uvarint()
	if n > uint64(len(p)) {
		return x, fmt.Errorf("sale of %d items in %d bytes", n, len(p))
	}
	lines := make([]purchase.LineItem, 0, n)
	for range n {
		lines = append(lines, purchase.LineItem{ItemID: r.String(), Quantity: r.Varint()})
	}
	x.res = newReservation(lines)
	return x, r.Done()
}

// sale is a committed branch's reservation.
type sale struct {
	tx  string
	res Reservation
}

// soldByTx returns the committed reservations by transaction, or an error
// naming a transaction committed twice. It reads the whole ledger (file
// and memory): for Check and State only.
func (s *Store) soldByTx() (map[string]Reservation, error) {
	m := make(map[string]Reservation, s.sold.Len())
	err := s.sold.Each(func(x sale) error {
		if _, dup := m[x.tx]; dup {
			return fmt.Errorf("inventory: %s committed twice", x.tx)
		}
		m[x.tx] = x.res
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Abort puts every item of the reservation back.
func (s *Store) Abort(tx string, _ []byte) {
	res, ok := s.prepared[tx]
	if !ok {
		return
	}
	for _, l := range res.Items {
		it := s.items[l.ItemID]
		it.Reserved -= l.Quantity
		it.Available += l.Quantity
	}
	delete(s.prepared, tx)
}

// State is the inventory's state as JSON.
type State struct {
	Items        map[string]Item        `json:"items"`
	Reservations map[string]Reservation `json:"reservations"` // committed
	Prepared     map[string]Reservation `json:"prepared,omitempty"`
	// LedgerError says why the ledger file could not be read whole
	// (Reservations then hold what was read before the error).
	LedgerError string `json:"ledger_error,omitempty"`
}

// State returns a copy of the state (sharing nothing with the store).
func (s *Store) State() State {
	st := State{
		Items:        make(map[string]Item, len(s.items)),
		Reservations: make(map[string]Reservation, s.sold.Len()),
		Prepared:     make(map[string]Reservation, len(s.prepared)),
	}
	for id, it := range s.items {
		st.Items[id] = *it
	}
	if err := s.sold.Each(func(x sale) error { st.Reservations[x.tx] = x.res.clone(); return nil }); err != nil {
		st.LedgerError = err.Error()
	}
	for tx, r := range s.prepared {
		st.Prepared[tx] = r.clone()
	}
	return st
}

// Check verifies available + reserved + sold == stock for every item, with
// nothing negative, and that the reservations add up: per item, reserved
// is the sum over prepared branches and sold the sum over committed ones,
// and every reservation names known items, each once, with a positive
// quantity. It returns the first violation.
func (s *Store) Check() error {
	held := map[string]int64{}
	sold := map[string]int64{}
	committed, err := s.soldByTx()
	if err != nil {
		return err
	}
	for _, m := range []struct {
		branches map[string]Reservation
		sum      map[string]int64
	}{{s.prepared, held}, {committed, sold}} {
		for _, tx := range slices.Sorted(maps.Keys(m.branches)) {
			r := m.branches[tx]
			if len(r.Items) == 0 {
				return fmt.Errorf("inventory: reservation of %s has no item", tx)
			}
			seen := make(map[string]bool, len(r.Items))
			for _, l := range r.Items {
				switch {
				case s.items[l.ItemID] == nil:
					return fmt.Errorf("inventory: reservation of %s names unknown item %s", tx, l.ItemID)
				case seen[l.ItemID]:
					return fmt.Errorf("inventory: reservation of %s names item %s twice", tx, l.ItemID)
				case l.Quantity <= 0:
					return fmt.Errorf("inventory: reservation of %s has quantity %d of item %s", tx, l.Quantity, l.ItemID)
				}
				seen[l.ItemID] = true
				m.sum[l.ItemID] += l.Quantity
			}
		}
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
