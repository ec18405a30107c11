package payment

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"maps"
	"path"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/wal"
)

// snapState is the store's snapshot: every account (holds included), the
// held charges of prepared branches and the captured ones in commit order.
// The date the store checks cards against is not in it: it is today's.
type snapState struct {
	Accounts map[string]Account
	Held     map[string]Charge
	Charges  []snapCapture // captured charges not in the ledger file
	// LedgerLen and LedgerCount are the ledger file's length and entries
	// when the snapshot was taken (0: no ledger file; Charges holds them
	// all).
	LedgerLen   int64
	LedgerCount int
}

type snapCapture struct {
	Tx string
	C  Charge
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
// the accounts (as many as the world has) and the held charges (as many as
// are in flight), freezes the ledger of captured charges (a copy of its
// chunk headers), and leaves the rest to the returned function: append
// the charges captured since the last snapshot to the ledger file and
// fsync it, then encode the snapshot with the file's new length (and no
// charge). Without a ledger file the snapshot holds every charge.
func (s *Store) SnapshotDeferred() (func() ([]byte, error), error) {
	accounts := make(map[string]Account, len(s.accounts))
	for id, a := range s.accounts {
		accounts[id] = *a
	}
	held := maps.Clone(s.held)
	charges := s.charges.Capture()
	return func() ([]byte, error) {
		n, count, inline, err := charges.Flush()
		if err != nil {
			return nil, fmt.Errorf("payment: snapshot: %w", err)
		}
		st := snapState{Accounts: accounts, Held: held, Charges: make([]snapCapture, 0, len(inline)), LedgerLen: n, LedgerCount: count}
		for _, x := range inline {
			st.Charges = append(st.Charges, snapCapture{x.tx, x.c})
		}
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(st); err != nil {
			return nil, fmt.Errorf("payment: snapshot: %w", err)
		}
		return b.Bytes(), nil
	}, nil
}

// RestoreSnapshot implements participant.Snapshotter.
func (s *Store) RestoreSnapshot(b []byte) error {
	var st snapState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return fmt.Errorf("payment: snapshot: %w", err)
	}
	s.accounts = make(map[string]*Account, len(st.Accounts))
	for id, a := range st.Accounts {
		s.accounts[id] = &a
	}
	s.held = st.Held
	if s.held == nil {
		s.held = map[string]Charge{}
	}
	s.charges = ledger.NewBook(encodeCapture, decodeCapture)
	s.charges.Restore(st.LedgerLen, st.LedgerCount)
	for _, x := range st.Charges {
		s.charges.Append(capture{x.Tx, x.C})
	}
	return nil
}

// AttachLedger implements participant.LedgerAttacher: the captured
// charges live in dir's ledger file, cut to the length the restored
// snapshot recorded.
func (s *Store) AttachLedger(fsys wal.FS, dir string) error {
	return s.charges.Attach(fsys, path.Join(dir, ledger.FileName))
}

// CloseLedger closes the ledger file, if any (the service's incarnation
// ended).
func (s *Store) CloseLedger() error { return s.charges.Close() }

var _ interface {
	Snapshot() ([]byte, error)
	SnapshotDeferred() (func() ([]byte, error), error)
	RestoreSnapshot([]byte) error
} = (*Store)(nil)

// LedgerHeld implements participant.LedgerFlusher: the committed entries
// held in memory, not yet in the ledger file.
func (s *Store) LedgerHeld() int { return s.charges.Held() }

// CaptureLedger implements participant.LedgerFlusher: on the loop it
// freezes the ledger's tail; the function it returns, off the loop,
// appends the entries committed since the last flush to the ledger file and fsyncs it. A restart cuts the file back to the length
// the loaded snapshot recorded and the log replay rebuilds the rest, as
// for a snapshot's flush that never landed.
func (s *Store) CaptureLedger() func() error {
	c := s.charges.Capture()
	return func() error {
		if _, _, _, err := c.Flush(); err != nil {
			return fmt.Errorf("payment: ledger flush: %w", err)
		}
		return nil
	}
}
