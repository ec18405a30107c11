package order

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"maps"
	"path"

	"github.com/dtx-dev/dtx/internal/idset"
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
// it, write their ids' hashes as a run file of the id set (and merge its
// runs), then encode the snapshot with the file's new length (and no
// order). Without a ledger file the snapshot holds every order.
func (s *Store) SnapshotDeferred() (func() ([]byte, error), error) {
	pending := maps.Clone(s.pending)
	orders := s.orders.Capture()
	ids := s.ids.Capture()
	return func() ([]byte, error) {
		n, count, inline, err := flushLedger(orders, ids)
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
	s.ids.Close()
	s.ids = idset.New()
	s.ids.Restore(st.LedgerCount)
	s.orders = ledger.NewBook(encodePlaced, decodePlaced)
	s.orders.Restore(st.LedgerLen, st.LedgerCount)
	for tx, o := range st.Orders { // version 1
		s.place(tx, o)
	}
	for _, x := range st.Placed {
		if dup, _ := s.ids.Has(x.Tx); dup { // in memory: no error
			return fmt.Errorf("order: snapshot: %s committed twice", x.Tx)
		}
		s.place(x.Tx, x.Order)
	}
	return nil
}

// AttachLedger implements participant.LedgerAttacher: the committed
// orders live in dir's ledger file, cut to the length the restored
// snapshot recorded, and their ids in the id set's run files beside it
// (idset.Set.Attach), which read only the part of the ledger no run
// covers. The ids of the orders the snapshot held itself are added again
// after it.
func (s *Store) AttachLedger(fsys wal.FS, dir string) error {
	name := path.Join(dir, ledger.FileName)
	if err := s.orders.Attach(fsys, name); err != nil {
		return err
	}
	tail := s.orders.Tail()
	count := s.orders.Len() - tail
	if err := s.ids.Attach(fsys, dir, name, s.orders.FileLen(), count, idOf); err != nil {
		return fmt.Errorf("order: %w", err)
	}
	for i := range tail {
		s.ids.Add(s.orders.TailAt(i).tx)
	}
	return nil
}

// CloseLedger closes the ledger file and the id set's files, if any (the
// service's incarnation ended).
func (s *Store) CloseLedger() error { return errors.Join(s.orders.Close(), s.ids.Close()) }

var _ interface {
	Snapshot() ([]byte, error)
	SnapshotDeferred() (func() ([]byte, error), error)
	RestoreSnapshot([]byte) error
} = (*Store)(nil)

// LedgerHeld implements participant.LedgerFlusher: the committed entries
// held in memory, not yet in the ledger file.
func (s *Store) LedgerHeld() int { return s.orders.Held() }

// CaptureLedger implements participant.LedgerFlusher: on the loop it
// freezes the ledger's tail; the function it returns, off the loop,
// appends the orders committed since the last flush to the ledger file and fsyncs it, then writes their ids' hashes as a run file of the id set. A restart cuts the file back to the length
// the loaded snapshot recorded and the log replay rebuilds the rest, as
// for a snapshot's flush that never landed.
func (s *Store) CaptureLedger() func() error {
	orders := s.orders.Capture()
	ids := s.ids.Capture()
	return func() error {
		if _, _, _, err := flushLedger(orders, ids); err != nil {
			return fmt.Errorf("order: ledger flush: %w", err)
		}
		return nil
	}
}

// flushLedger appends the captured orders to the ledger file and fsyncs
// it, then writes their ids' hashes as a run of the id set (the set is
// never ahead of the ledger). Without a ledger file it returns the orders
// instead (inline), for a snapshot to hold.
func flushLedger(orders ledger.Capture[placed], ids idset.Capture) (n int64, count int, inline []placed, err error) {
	n, count, inline, err = orders.Flush()
	if err != nil || inline != nil {
		return n, count, inline, err
	}
	return n, count, nil, ids.Flush(n, count)
}
