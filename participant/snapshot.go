package participant

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Snapshotter is the optional interface of a Resource whose state can be
// snapshotted, so that the service's log is compacted and a restart
// replays only the records after the snapshot. Snapshot is called on the
// service's loop between two Readies: it must capture everything the
// Resource holds, prepared branches' tentative changes included, and
// share nothing with the live state (or be copied before it returns).
// RestoreSnapshot is called on a fresh Resource (from NewResource) before
// any record is replayed into it.
type Snapshotter interface {
	Snapshot() ([]byte, error)
	RestoreSnapshot([]byte) error
}

// DeferredSnapshotter is a Snapshotter whose pause on the loop does not
// grow with its history: SnapshotDeferred, called on the loop between two
// Readies, captures the state (copying what the loop may change, sharing
// what it never changes again, such as an append-only ledger's chunks:
// chunk.List.Frozen) and returns the function that serializes that
// capture, called off the loop while the loop goes on. Its output must be
// what Snapshot would have returned at the capture. The built-in services
// implement it; a Resource that only implements Snapshotter is serialized
// on the loop.
type DeferredSnapshotter interface {
	Snapshotter
	SnapshotDeferred() (func() ([]byte, error), error)
}

// LedgerAttacher is a Snapshotter that keeps its committed entries in an
// append-only ledger file in the service's log directory (the built-in
// services: internal/ledger) instead of in memory and in every snapshot.
// LoadSnapshot calls AttachLedger after restoring the snapshot (or finding
// none), before the log is replayed: it opens the file through fsys and
// cuts it to the length the snapshot recorded. Its SnapshotDeferred's
// function appends the entries committed since the last snapshot to the
// file and fsyncs it before returning the snapshot that records the new
// length, so the file is durable before the snapshot is written.
type LedgerAttacher interface {
	AttachLedger(fsys wal.FS, dir string) error
}

// LedgerFlusher is a LedgerAttacher that can move the committed entries it
// holds in memory to its ledger file between two snapshots, so that the
// memory they take is bounded by SnapshotConfig.LedgerHeld instead of by
// the snapshot interval. LedgerHeld is read off the loop; CaptureLedger
// is called on the loop and the function it returns runs off it, one
// flush or snapshot of the service at a time. What a flush appends lies
// past the length the last snapshot recorded: a restart cuts it off and
// the log replay rebuilds it, as for a snapshot that never landed.
type LedgerFlusher interface {
	LedgerAttacher
	LedgerHeld() int
	CaptureLedger() func() error
}

// DefaultLedgerHeld is how many committed entries a LedgerFlusher holds in
// memory before they are moved to its ledger file, when the configuration
// does not say.
const DefaultLedgerHeld = 32768

// SnapshotConfig says when a service snapshots its state. Zero disables
// snapshots (the log then keeps every record).
type SnapshotConfig struct {
	// Every is the longest time between two snapshots while records are
	// logged (0: no time trigger).
	Every time.Duration
	// LogBytes snapshots once this many bytes of records were logged since
	// the last snapshot (0: no size trigger).
	LogBytes uint64
	// Check is how often the triggers are checked (0: 100 ms).
	Check time.Duration
	// LedgerHeld moves a LedgerFlusher's committed entries to its ledger
	// file once it holds this many in memory, between snapshots (0:
	// DefaultLedgerHeld; negative: only at snapshots).
	LedgerHeld int
}

func (c SnapshotConfig) on() bool { return c.Every > 0 || c.LogBytes > 0 }

// SnapshotStats describes the snapshots of a service.
type SnapshotStats struct {
	Taken uint64
	// LastPause and MaxPause are how long the service's loop stopped to
	// serialize the machine and the Resource (the write, fsyncs, rename
	// and compaction run off the loop).
	LastPause, MaxPause time.Duration
	LastBytes           int
	LastSeq             uint64
	// LastTableBytes is what the last snapshot appended to its table
	// files (what changed of the finished-branch tables since the one
	// before).
	LastTableBytes int64
	// LedgerFlushes counts the moves of a LedgerFlusher's entries to its
	// ledger file between snapshots.
	LedgerFlushes uint64
	// Loaded is the snapshot the service last started from (0: none), and
	// Skipped the damaged ones it passed over.
	Loaded  uint64
	Skipped []string
	// LoadTook is how long the last start took to load its snapshot (the
	// retention table's load, mostly), ReplayTook to replay the log
	// after it; LoadedFinished is the finished branches retained then.
	LoadTook, ReplayTook time.Duration
	LoadedFinished       int
}

// encodeSnapshot joins the machine's and the Resource's snapshots.
func encodeSnapshot(machine, res []byte) [][]byte {
	return [][]byte{binary.AppendUvarint(nil, uint64(len(machine))), machine, res}
}

func decodeSnapshot(b []byte) (machine, res []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errors.New("participant: snapshot: bad machine length")
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// LoadSnapshot restores a fresh machine m and its fresh Resource res
// from the newest whole, valid snapshot in dir and returns the seq it
// covers (0: none, or res is not a Snapshotter), with an error for each
// newer snapshot it skipped as torn or damaged. Replay the log after seq
// (node.RecoverAfter). participant.Service and the simulator both use it.
func LoadSnapshot(fsys wal.FS, dir string, m *twopc.Participant, res Resource) (seq uint64, skipped []error, err error) {
	sn, ok := res.(Snapshotter)
	if !ok {
		return 0, nil, nil
	}
	snap, src, found, skipped, err := node.LoadSnapshot(fsys, dir, SnapshotTables)
	if err != nil {
		return 0, skipped, err
	}
	if !found {
		return 0, skipped, attachLedger(fsys, dir, res)
	}
	mb, rb, err := decodeSnapshot(snap.Data)
	if err != nil {
		return 0, skipped, err
	}
	if err := sn.RestoreSnapshot(rb); err != nil {
		return 0, skipped, fmt.Errorf("snapshot %s: resource: %w", snap.Name, err)
	}
	if err := m.RestoreSnapshotFrom(mb, src); err != nil {
		return 0, skipped, fmt.Errorf("snapshot %s: %w", snap.Name, err)
	}
	if err := attachLedger(fsys, dir, res); err != nil {
		return 0, skipped, fmt.Errorf("snapshot %s: %w", snap.Name, err)
	}
	return snap.Seq, skipped, nil
}

// SnapshotTables returns the tables a service's snapshot keeps in files
// (twopc.ParticipantSnapshotTables of its machine's part).
func SnapshotTables(b []byte) ([]twopc.TableRef, error) {
	mb, _, err := decodeSnapshot(b)
	if err != nil {
		return nil, err
	}
	return twopc.ParticipantSnapshotTables(mb)
}

func attachLedger(fsys wal.FS, dir string, res Resource) error {
	if l, ok := res.(LedgerAttacher); ok {
		if err := fsys.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("participant: ledger: %w", err)
		}
		return l.AttachLedger(fsys, dir)
	}
	return nil
}

// TakeSnapshot captures m and res, which must be between two Readies (on
// the loop; it is the loop's whole pause), as the snapshot covering the
// log up to log.LastSeq(), and returns the function that serializes the
// capture, to be called off the loop (m may go on meanwhile). The
// machine's part is a copy of its prepared branches and a view of its
// finished-branch tables that shares their chunks, copy on write
// (twopc.Participant.SnapshotDeferred); the Resource's is
// SnapshotDeferred if it is a DeferredSnapshotter, and otherwise its whole
// Snapshot, on the loop.
func TakeSnapshot(m *twopc.Participant, res Resource, log *wal.Log) (seq uint64, encode func() ([][]byte, error), err error) {
	seq, enc, err := takeSnapshot(m, res, log)
	if err != nil {
		return 0, nil, err
	}
	return seq, func() ([][]byte, error) { return enc(nil) }, nil
}

// TakeSnapshotSpill is TakeSnapshot for a snapshot that keeps the
// machine's finished-branch tables in files through a node.Tables of the
// log's directory (given to encode, off the loop), which writes only what
// changed since its last snapshot.
func TakeSnapshotSpill(m *twopc.Participant, res Resource, log *wal.Log) (seq uint64, encode func(*node.Tables) ([][]byte, error), err error) {
	seq, enc, err := takeSnapshot(m, res, log)
	if err != nil {
		return 0, nil, err
	}
	return seq, func(t *node.Tables) ([][]byte, error) { return enc(t) }, nil
}

// takeSnapshot is TakeSnapshot with the tables kept through sp (nil:
// inline).
func takeSnapshot(m *twopc.Participant, res Resource, log *wal.Log) (uint64, func(sp twopc.TableSpill) ([][]byte, error), error) {
	sn, ok := res.(Snapshotter)
	if !ok {
		return 0, nil, errors.New("participant: the resource does not implement Snapshotter")
	}
	menc, err := m.SnapshotDeferredSpill()
	if err != nil {
		return 0, nil, err
	}
	var renc func() ([]byte, error)
	if d, ok := res.(DeferredSnapshotter); ok {
		if renc, err = d.SnapshotDeferred(); err != nil {
			return 0, nil, err
		}
	} else {
		rb, err := sn.Snapshot()
		if err != nil {
			return 0, nil, err
		}
		renc = func() ([]byte, error) { return rb, nil }
	}
	return log.LastSeq(), func(sp twopc.TableSpill) ([][]byte, error) {
		rb, err := renc()
		if err != nil {
			return nil, err
		}
		mb, err := menc(nil, sp)
		if err != nil {
			return nil, err
		}
		return encodeSnapshot(mb, rb), nil
	}, nil
}

// SnapshotHooks cut WriteSnapshot for crash tests.
type SnapshotHooks = node.SnapshotHooks

// WriteSnapshot makes a snapshot taken by TakeSnapshot durable, off the
// loop (node.WriteSnapshot: sync the log, write and check the file, keep
// it and the newest valid older one, compact the log up to that one). It
// returns the seq the log is kept from (0: all of it).
func WriteSnapshot(fsys wal.FS, dir string, log *wal.Log, seq uint64, data [][]byte, h SnapshotHooks) (keptFrom uint64, err error) {
	return node.WriteSnapshot(fsys, dir, log, seq, data, h)
}

// loadSnapshot is LoadSnapshot for the service, recording what it found.
// The caller holds snapMu.
func (s *Service) loadSnapshot(fsys wal.FS, dir string, m *twopc.Participant, res Resource) (uint64, error) {
	seq, skipped, err := LoadSnapshot(fsys, dir, m, res)
	s.snapStats.Skipped = nil
	for _, e := range skipped {
		s.cfg.Logger.Warn("snapshot skipped", "service", s.cfg.ID, "err", e)
		s.snapStats.Skipped = append(s.snapStats.Skipped, e.Error())
	}
	s.snapStats.Loaded = seq
	return seq, err
}

// snapshotter runs the service's snapshots until ctx ends: it checks the
// triggers, serializes on the loop (DoQuiet) and writes, prunes and
// compacts off it.
func (s *Service) snapshotter(ctx context.Context) {
	c := s.cfg.Snapshot
	check := c.Check
	if check <= 0 {
		check = 100 * time.Millisecond
	}
	t := time.NewTicker(check)
	defer t.Stop()
	var lastAt time.Time = time.Now()
	var lastBytes uint64
	var lastInc *incarnation
	held := c.LedgerHeld
	if held == 0 {
		held = DefaultLedgerHeld
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		inc := s.inc.Load()
		st := inc.log.Stats()
		if inc != lastInc { // a new incarnation: its counters start at zero
			lastInc, lastBytes = inc, 0
		}
		due := c.LogBytes > 0 && st.BytesWritten-lastBytes >= c.LogBytes ||
			c.Every > 0 && time.Since(lastAt) >= c.Every && st.BytesWritten > lastBytes
		if !due {
			if lf, ok := inc.res.(LedgerFlusher); ok && held > 0 && lf.LedgerHeld() >= held {
				if err := s.FlushLedgerNow(ctx); err != nil && ctx.Err() == nil {
					s.cfg.Logger.Warn("ledger flush failed", "service", s.cfg.ID, "err", err)
				}
			}
			continue
		}
		if err := s.SnapshotNow(ctx); err != nil {
			if !errors.Is(err, node.ErrBusy) && ctx.Err() == nil {
				s.cfg.Logger.Warn("snapshot failed", "service", s.cfg.ID, "err", err)
			}
			continue
		}
		lastAt, lastBytes = time.Now(), st.BytesWritten
	}
}

// SnapshotNow takes a snapshot of the running service now: the machine and
// the Resource are serialized on the loop, between two Readies; then, off
// the loop, the log is synced up to the snapshot's record, the snapshot
// written (temp file, fsync, rename, fsync dir), older snapshots pruned
// (the newest two are kept) and the log compacted up to the older of the
// two. It returns node.ErrBusy if the loop had work in hand (try again).
//
// One snapshot runs at a time (snapMu is held from the capture to the
// write): a Resource's ledger file is appended to by the function its
// capture returned, in capture order.
func (s *Service) SnapshotNow(ctx context.Context) error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	inc := s.inc.Load()
	var encode func(*node.Tables) ([][]byte, error)
	var seq uint64
	var serr error
	var pause time.Duration
	err := inc.node.DoQuiet(ctx, inc.done, func() {
		start := time.Now()
		seq, encode, serr = TakeSnapshotSpill(inc.m, inc.res, inc.log)
		pause = time.Since(start)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if s.inc.Load() != inc {
		return node.ErrBusy // crashed meanwhile
	}
	if s.tables == nil {
		// Tables of a new incarnation (a restart in the process) are new
		// tables to it, written whole to new files.
		s.tables = node.NewTables(s.fs(), s.dir())
	}
	res, err := s.tables.Snapshot(inc.log, seq, encode, SnapshotHooks{Step: s.cfg.SnapshotHook, BeforeCompact: s.cfg.CompactHook, Table: s.cfg.TableHook}, SnapshotTables)
	if err != nil {
		return fmt.Errorf("participant: %s: %w", s.cfg.ID, err)
	}
	if len(res.SetAside) > 0 {
		s.cfg.Logger.Warn("snapshots set aside: bytes they appended to a table file are damaged", "service", s.cfg.ID, "snapshots", res.SetAside)
	}
	if res.PruneErr != nil {
		s.cfg.Logger.Warn("table files not removed", "service", s.cfg.ID, "err", res.PruneErr)
	}
	from, size := res.KeptFrom, res.Bytes
	s.snapStats.Taken++
	s.snapStats.LastTableBytes = res.TableBytes
	s.snapStats.LastPause, s.snapStats.LastBytes, s.snapStats.LastSeq = pause, size, seq
	s.snapStats.MaxPause = max(s.snapStats.MaxPause, pause)
	s.cfg.Logger.Info("snapshot", "service", s.cfg.ID, "seq", seq, "bytes", size, "table_bytes", res.TableBytes, "loop_pause", pause, "log_from", from)
	return nil
}

// FlushLedgerNow moves the committed entries the Resource (a
// LedgerFlusher) holds in memory to its ledger file: captured on the loop
// (a copy of the ledger's chunk headers, whatever the loop is doing),
// appended and fsynced off it. It holds snapMu, so flushes and snapshots
// append to the file in the order they captured.
func (s *Service) FlushLedgerNow(ctx context.Context) error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	inc := s.inc.Load()
	lf, ok := inc.res.(LedgerFlusher)
	if !ok {
		return nil
	}
	var flush func() error
	start := time.Now()
	if err := inc.node.Do(ctx, inc.done, func() { flush = lf.CaptureLedger() }); err != nil {
		return err
	}
	pause := time.Since(start)
	if s.inc.Load() != inc {
		return node.ErrBusy // crashed meanwhile
	}
	if err := flush(); err != nil {
		return fmt.Errorf("participant: %s: %w", s.cfg.ID, err)
	}
	s.snapStats.LedgerFlushes++
	s.cfg.Logger.Debug("ledger flush", "service", s.cfg.ID, "capture", pause, "took", time.Since(start))
	return nil
}

// SnapshotStats returns the service's snapshot counters.
func (s *Service) SnapshotStats() SnapshotStats {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	st := s.snapStats
	st.Skipped = append([]string(nil), st.Skipped...)
	return st
}

func (s *Service) fs() wal.FS {
	if s.cfg.Log.FS != nil {
		return s.cfg.Log.FS
	}
	return wal.OSFS()
}

func (s *Service) dir() string { return filepath.Clean(s.cfg.Dir) }
