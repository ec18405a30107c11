package order

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"hash/maphash"
	"maps"
	"path"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/wal"
)

// snapState is the store's snapshot: the pending orders and the committed
// ones. Orders is the form of version 1 (a map); a snapshot taken now
// fills Placed instead, in commit order.
type snapState struct {
	Pending map[string]Order
	Orders  map[string]Order
	Placed  []snapPlaced // committed orders not in the ledger file
	// LedgerLen and LedgerCount are the ledger file's length and entries
	// when the snapshot was taken (0: no ledger file; Placed holds them
	// all).
	LedgerLen   int64
	LedgerCount int
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
// changes), and leaves the rest to the returned function: append the
// orders committed since the last snapshot to the ledger file and fsync
// it, then encode the snapshot with the file's new length (and no order).
// Without a ledger file the snapshot holds every order.
func (s *Store) SnapshotDeferred() (func() ([]byte, error), error) {
	pending := maps.Clone(s.pending)
	orders := s.orders.Capture()
	return func() ([]byte, error) {
		n, count, inline, err := orders.Flush()
		if err != nil {
			return nil, fmt.Errorf("order: snapshot: %w", err)
		}
		st := snapState{Pending: pending, Placed: make([]snapPlaced, 0, len(inline)), LedgerLen: n, LedgerCount: count}
		for _, x := range inline {
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
	s.ids = make(map[uint64]struct{}, len(st.Placed)+len(st.Orders)+st.LedgerCount)
	s.orders = ledger.NewBook(encodePlaced, decodePlaced)
	s.orders.Restore(st.LedgerLen, st.LedgerCount)
	for tx, o := range st.Orders { // version 1
		s.place(tx, o)
	}
	for _, x := range st.Placed {
		if _, dup := s.ids[maphash.String(s.seed, x.Tx)]; dup {
			return fmt.Errorf("order: snapshot: %s committed twice", x.Tx)
		}
		s.place(x.Tx, x.Order)
	}
	return nil
}

// AttachLedger implements participant.LedgerAttacher: the committed
// orders live in dir's ledger file, cut to the length the restored
// snapshot recorded. The file is read once, streaming, to rebuild the
// index of order ids.
func (s *Store) AttachLedger(fsys wal.FS, dir string) error {
	if err := s.orders.Attach(fsys, path.Join(dir, ledger.FileName)); err != nil {
		return err
	}
	tail := s.orders.Tail()
	i := 0
	return s.orders.Each(func(x placed) error {
		if i < s.orders.Len()-tail { // the tail's ids are in already
			s.ids[maphash.String(s.seed, x.tx)] = struct{}{}
		}
		i++
		return nil
	})
}

// CloseLedger closes the ledger file, if any (the service's incarnation
// ended).
func (s *Store) CloseLedger() error { return s.orders.Close() }

var _ interface {
	Snapshot() ([]byte, error)
	SnapshotDeferred() (func() ([]byte, error), error)
	RestoreSnapshot([]byte) error
} = (*Store)(nil)
