package inventory

import (
	"bytes"
	"encoding/gob"
	"fmt"
)

// snapState is the store's snapshot: every item, the prepared
// reservations (tentative changes included in the items' counts) and the
// committed ones in commit order.
type snapState struct {
	Items    map[string]Item
	Prepared map[string]Reservation
	Sold     []snapSale
}

type snapSale struct {
	Tx  string
	Res Reservation
}

// Snapshot implements participant.Snapshotter.
func (s *Store) Snapshot() ([]byte, error) {
	st := snapState{Items: make(map[string]Item, len(s.items)), Prepared: s.prepared, Sold: make([]snapSale, 0, s.sold.Len())}
	for id, it := range s.items {
		st.Items[id] = *it
	}
	for x := range s.sold.All() {
		st.Sold = append(st.Sold, snapSale{x.tx, x.res})
	}
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(st); err != nil {
		return nil, fmt.Errorf("inventory: snapshot: %w", err)
	}
	return b.Bytes(), nil
}

// RestoreSnapshot implements participant.Snapshotter: it replaces the
// store's state with the snapshot's.
func (s *Store) RestoreSnapshot(b []byte) error {
	var st snapState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return fmt.Errorf("inventory: snapshot: %w", err)
	}
	s.items = make(map[string]*Item, len(st.Items))
	for id, it := range st.Items {
		s.items[id] = &it
	}
	s.prepared = st.Prepared
	if s.prepared == nil {
		s.prepared = map[string]Reservation{}
	}
	for _, x := range st.Sold {
		s.sold.Append(sale{x.Tx, x.Res})
	}
	return nil
}

var _ interface {
	Snapshot() ([]byte, error)
	RestoreSnapshot([]byte) error
} = (*Store)(nil)
