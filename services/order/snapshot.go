package order

import (
	"bytes"
	"encoding/gob"
	"fmt"
)

type snapState struct {
	Pending map[string]Order
	Orders  map[string]Order
}

// Snapshot implements participant.Snapshotter.
func (s *Store) Snapshot() ([]byte, error) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(snapState{Pending: s.pending, Orders: s.orders}); err != nil {
		return nil, fmt.Errorf("order: snapshot: %w", err)
	}
	return b.Bytes(), nil
}

// RestoreSnapshot implements participant.Snapshotter.
func (s *Store) RestoreSnapshot(b []byte) error {
	var st snapState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return fmt.Errorf("order: snapshot: %w", err)
	}
	s.pending, s.orders = st.Pending, st.Orders
	if s.pending == nil {
		s.pending = map[string]Order{}
	}
	if s.orders == nil {
		s.orders = map[string]Order{}
	}
	return nil
}

var _ interface {
	Snapshot() ([]byte, error)
	RestoreSnapshot([]byte) error
} = (*Store)(nil)
