package inventory

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"maps"
	"path"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/wal"
)

// snapState is the store's snapshot: every item, the prepared
// reservations (tentative changes included in the items' counts) and the
// committed ones in commit order.
type snapState struct {
	Items    map[string]Item
	Prepared map[string]Reservation
	Sold     []snapSale // committed sales not in the ledger file
	// LedgerLen and LedgerCount are the ledger file's length and entries
	// when the snapshot was taken (0: no ledger file; Sold holds them all).
	LedgerLen   int64
	LedgerCount int
}

type snapSale struct {
	Tx  string
	Res Reservation
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
// the items (as many as the world has) and the prepared reservations (as
// many as are in flight), freezes the ledger of sales (a copy of its chunk
// headers: committed reservations are never changed), and leaves the
// rest to the returned function: append the sales committed since the
// last snapshot to the ledger file and fsync it, then encode the snapshot
// with the file's new length (and no sale). Without a ledger file the
// snapshot holds every sale.
func (s *Store) SnapshotDeferred() (func() ([]byte, error), error) {
	items := make(map[string]Item, len(s.items))
	for id, it := range s.items {
		items[id] = *it
	}
	prepared := maps.Clone(s.prepared) // a reservation's Items never change
	sold := s.sold.Capture()
	return func() ([]byte, error) {
		n, count, inline, err := sold.Flush()
		if err != nil {
			return nil, fmt.Errorf("inventory: snapshot: %w", err)
		}
		st := snapState{Items: items, Prepared: prepared, Sold: make([]snapSale, 0, len(inline)), LedgerLen: n, LedgerCount: count}
		for _, x := range inline {
			st.Sold = append(st.Sold, snapSale{x.tx, x.res})
		}
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(st); err != nil {
			return nil, fmt.Errorf("inventory: snapshot: %w", err)
		}
		return b.Bytes(), nil
	}, nil
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
	s.sold = ledger.NewBook(encodeSale, decodeSale)
	s.sold.Restore(st.LedgerLen, st.LedgerCount)
	for _, x := range st.Sold {
		s.sold.Append(sale{x.Tx, x.Res})
	}
	return nil
}

// AttachLedger implements participant.LedgerAttacher: the sales live in
// dir's ledger file, cut to the length the restored snapshot recorded.
func (s *Store) AttachLedger(fsys wal.FS, dir string) error {
	return s.sold.Attach(fsys, path.Join(dir, ledger.FileName))
}

// CloseLedger closes the ledger file, if any (the service's incarnation
// ended).
func (s *Store) CloseLedger() error { return s.sold.Close() }

var _ interface {
	Snapshot() ([]byte, error)
	SnapshotDeferred() (func() ([]byte, error), error)
	RestoreSnapshot([]byte) error
} = (*Store)(nil)

// LedgerHeld implements participant.LedgerFlusher: the committed entries
// held in memory, not yet in the ledger file.
func (s *Store) LedgerHeld() int { return s.sold.Held() }

// CaptureLedger implements participant.LedgerFlusher: on the loop it
// freezes the ledger's tail; the function it returns, off the loop,
// appends the entries committed since the last flush to the ledger file and fsyncs it. A restart cuts the file back to the length
// the loaded snapshot recorded and the log replay rebuilds the rest, as
// for a snapshot's flush that never landed.
func (s *Store) CaptureLedger() func() error {
	c := s.sold.Capture()
	return func() error {
		if _, _, _, err := c.Flush(); err != nil {
			return fmt.Errorf("inventory: ledger flush: %w", err)
		}
		return nil
	}
}
