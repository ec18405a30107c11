package order

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"maps"
)

// snapState is the store's snapshot: the pending orders and the committed
// ones. Orders is the form of version 1 (a map); a snapshot taken now
// fills Placed instead, in commit order.
type snapState struct {
	Pending map[string]Order
	Orders  map[string]Order
	Placed  []snapPlaced
}

type snapPlaced struct {
	Tx    string
	Order Order
}

// Snapshot implements participant.Snapshotter.
func (s *Store) Snapshot() ([]byte, error) {
	enc, err := s.SnapshotDeferred()
	if err != nil {
		return nil, err
	}
	return enc()
}

// SnapshotDeferred implements participant.DeferredSnapshotter: it copies
// the pending orders (as many as are in flight), freezes the ledger of
// committed ones (a copy of its chunk headers: a committed order never
// changes), and leaves the encoding to the returned function.
func (s *Store) SnapshotDeferred() (func() ([]byte, error), error) {
	pending := maps.Clone(s.pending)
	orders := s.orders.Frozen()
	return func() ([]byte, error) {
		st := snapState{Pending: pending, Placed: make([]snapPlaced, 0, orders.Len())}
		for x := range orders.All() {
			st.Placed = append(st.Placed, snapPlaced{x.tx, x.o})
		}
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(st); err != nil {
			return nil, fmt.Errorf("order: snapshot: %w", err)
		}
		return b.Bytes(), nil
	}, nil
}

// RestoreSnapshot implements participant.Snapshotter.
func (s *Store) RestoreSnapshot(b []byte) error {
	var st snapState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return fmt.Errorf("order: snapshot: %w", err)
	}
	s.pending = st.Pending
	if s.pending == nil {
		s.pending = map[string]Order{}
	}
	s.placed = make(map[string]int, len(st.Placed)+len(st.Orders))
	for tx, o := range st.Orders { // version 1
		s.place(tx, o)
	}
	for _, x := range st.Placed {
		if _, dup := s.placed[x.Tx]; dup {
			return fmt.Errorf("order: snapshot: %s committed twice", x.Tx)
		}
		s.place(x.Tx, x.Order)
	}
	return nil
}

var _ interface {
	Snapshot() ([]byte, error)
	SnapshotDeferred() (func() ([]byte, error), error)
	RestoreSnapshot([]byte) error
} = (*Store)(nil)
