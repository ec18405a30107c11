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
	// Loaded is the snapshot the service last started from (0: none), and
	// Skipped the damaged ones it passed over.
	Loaded  uint64
	Skipped []string
}

// encodeSnapshot joins the machine's and the Resource's snapshots.
func encodeSnapshot(machine, res []byte) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 10+len(machine)+len(res)), uint64(len(machine)))
	b = append(b, machine...)
	return append(b, res...)
}

func decodeSnapshot(b []byte) (machine, res []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errors.New("participant: snapshot: bad machine length")
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// loadSnapshot restores m and res from the newest valid snapshot in dir and
// returns the seq it covers (0: none). The caller holds snapMu.
func (s *Service) loadSnapshot(fsys wal.FS, dir string, m *twopc.Participant, res Resource) (uint64, error) {
	sn, ok := res.(Snapshotter)
	if !ok {
		return 0, nil
	}
	snap, found, skipped, err := wal.LoadSnapshot(fsys, dir)
	if err != nil {
		return 0, err
	}
	s.snapStats.Skipped = nil
	for _, e := range skipped {
		s.cfg.Logger.Warn("snapshot skipped", "service", s.cfg.ID, "err", e)
		s.snapStats.Skipped = append(s.snapStats.Skipped, e.Error())
	}
	s.snapStats.Loaded = snap.Seq
	if !found {
		return 0, nil
	}
	mb, rb, err := decodeSnapshot(snap.Data)
	if err != nil {
		return 0, err
	}
	if err := sn.RestoreSnapshot(rb); err != nil {
		return 0, fmt.Errorf("snapshot %s: resource: %w", snap.Name, err)
	}
	if err := m.RestoreSnapshot(mb); err != nil {
		return 0, fmt.Errorf("snapshot %s: %w", snap.Name, err)
	}
	return snap.Seq, nil
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
func (s *Service) SnapshotNow(ctx context.Context) error {
	inc := s.inc.Load()
	sn, ok := inc.res.(Snapshotter)
	if !ok {
		return fmt.Errorf("participant: %s: the resource does not implement Snapshotter", s.cfg.ID)
	}
	var data []byte
	var seq uint64
	var serr error
	var pause time.Duration
	err := inc.node.DoQuiet(ctx, inc.done, func() {
		start := time.Now()
		defer func() { pause = time.Since(start) }()
		mb, err := inc.m.AppendSnapshot(nil)
		if err != nil {
			serr = err
			return
		}
		rb, err := sn.Snapshot()
		if err != nil {
			serr = err
			return
		}
		seq = inc.log.LastSeq()
		data = encodeSnapshot(mb, rb)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if s.inc.Load() != inc {
		return node.ErrBusy // crashed meanwhile
	}
	// The snapshot may not get ahead of the log: if it did and the log
	// then lost its unsynced tail, new records would reuse seqs the
	// snapshot claims to cover.
	if err := inc.log.Sync(); err != nil {
		return err
	}
	fsys, dir := s.fs(), s.dir()
	if err := wal.WriteSnapshot(fsys, dir, seq, data, s.cfg.SnapshotHook); err != nil {
		return err
	}
	if _, err := wal.ReadSnapshot(fsys, dir, seq); err != nil {
		return fmt.Errorf("participant: %s: snapshot not readable after writing it: %w", s.cfg.ID, err)
	}
	// Keep the newest valid snapshot before this one, and the log from it
	// on: if this one is ever found damaged, recovery falls back to it.
	older, ok := wal.OlderSnapshot(fsys, dir, seq)
	keep := []uint64{seq}
	if ok {
		keep = append(keep, older)
	}
	if err := wal.PruneSnapshots(fsys, dir, keep...); err != nil {
		return err
	}
	if ok {
		if err := inc.log.Compact(older + 1); err != nil {
			return err
		}
	}
	s.snapStats.Taken++
	s.snapStats.LastPause, s.snapStats.LastBytes, s.snapStats.LastSeq = pause, len(data), seq
	s.snapStats.MaxPause = max(s.snapStats.MaxPause, pause)
	s.cfg.Logger.Info("snapshot", "service", s.cfg.ID, "seq", seq, "bytes", len(data), "loop_pause", pause, "log_from", keep[len(keep)-1])
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
