package sim

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// ---- participant snapshots ----
//
// Every snapEvery ticks a participant that is up and between two Readies
// snapshots its machine and its Resource, as participant.Service does:
// sync the log, write the snapshot (temporary file, sync, rename, sync
// dir), keep it and the newest valid one before it, compact the log up to
// that one. The faults: a crash after each step of the write, a crash in
// the middle of the compaction, and damage to the newest snapshot.

type snapshotter interface {
	Snapshot() ([]byte, error)
	RestoreSnapshot([]byte) error
}

var errSnapCrash = errors.New("sim: crash while writing a snapshot")

func (s *Sim) snapDir(c *comp) string { return "/" + c.id }

func encodeSnap(mb, rb []byte) []byte {
	b := fmt.Appendf(nil, "%d:", len(mb))
	b = append(b, mb...)
	return append(b, rb...)
}

func decodeSnap(b []byte) (mb, rb []byte, err error) {
	var n int
	head, rest, ok := strings.Cut(string(b[:min(len(b), 24)]), ":")
	if _, err := fmt.Sscanf(head, "%d", &n); !ok || err != nil || n < 0 || len(head)+1+n > len(b) {
		return nil, nil, fmt.Errorf("sim: bad snapshot framing %q", rest)
	}
	b = b[len(head)+1:]
	return b[:n], b[n:], nil
}

// maybeSnapshot snapshots participant c if it is due.
func (s *Sim) maybeSnapshot(c *comp) {
	if s.p.snapEvery == 0 || c.role != rolePart || !c.up || c.m.HasReady() || s.now-c.lastSnap < s.p.snapEvery {
		return
	}
	c.lastSnap = s.now
	sn, ok := c.res.Resource.(snapshotter)
	if !ok {
		return
	}
	mb, err := c.part.AppendSnapshot(nil)
	if err != nil {
		s.violate("recovery", "%s: snapshot: %v", c.id, err)
		return
	}
	rb, err := sn.Snapshot()
	if err != nil {
		s.violate("recovery", "%s: snapshot: %v", c.id, err)
		return
	}
	seq := c.log.LastSeq()
	if err := c.log.Sync(); err != nil {
		s.violate("disk", "%s: sync before a snapshot: %v", c.id, err)
		return
	}
	dir := s.snapDir(c)
	var stop wal.SnapshotStep
	if !s.healed && s.on(CrashSnapshot) && s.roll(s.p.crashPoint) {
		stop = []wal.SnapshotStep{wal.SnapWrite, wal.SnapSynced, wal.SnapRenamed}[s.rng.IntN(3)]
	}
	err = wal.WriteSnapshot(c.fs, dir, seq, encodeSnap(mb, rb), func(st wal.SnapshotStep) error {
		if st == stop {
			return errSnapCrash
		}
		return nil
	})
	if errors.Is(err, errSnapCrash) {
		s.tracef("%s crashes writing snapshot %d (after step %d)", c.id, seq, stop)
		s.crash(c, CrashSnapshot, true)
		return
	}
	if err != nil {
		s.violate("disk", "%s: write snapshot: %v", c.id, err)
		return
	}
	s.res.Snapshots++
	older, ok := wal.OlderSnapshot(c.fs, dir, seq)
	keep := []uint64{seq}
	if ok {
		keep = append(keep, older)
	}
	if err := wal.PruneSnapshots(c.fs, dir, keep...); err != nil {
		s.violate("disk", "%s: prune snapshots: %v", c.id, err)
		return
	}
	if ok {
		halted := false
		if !s.healed && s.on(CrashCompact) && s.roll(s.p.crashPoint) {
			if n := s.segmentsBefore(c, older+1); n > 0 {
				c.fs.HaltAfter(s.rng.IntN(2 * n))
				halted = true
			}
		}
		if err := c.log.Compact(older + 1); err != nil {
			if !halted {
				s.violate("disk", "%s: compact: %v", c.id, err)
			}
			s.tracef("%s crashes compacting its log after snapshot %d", c.id, seq)
			s.crash(c, CrashCompact, true)
			return
		}
	}
	if !s.healed && s.on(FaultSnapshotDamage) && s.roll(s.p.disk) {
		path := dir + "/" + wal.SnapshotName(seq)
		b, err := c.fs.ReadFile(path)
		if err == nil && len(b) > 0 {
			if s.rng.IntN(2) == 0 {
				b = b[:s.rng.IntN(len(b))] // torn
			} else {
				b[s.rng.IntN(len(b))] ^= byte(1 << s.rng.IntN(8))
			}
			if err := c.fs.WriteFile(path, b); err == nil {
				s.count(FaultSnapshotDamage)
				s.tracef("%s: snapshot %d damaged", c.id, seq)
			}
		}
	}
}

// segmentsBefore counts the log segments of c that a compaction up to upTo
// removes.
func (s *Sim) segmentsBefore(c *comp, upTo uint64) int {
	var firsts []uint64
	for _, name := range c.fs.List("/" + c.id) {
		var first uint64
		if _, err := fmt.Sscanf(name, "%016x.wal", &first); err == nil && name == wal.SegmentName(first) {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)
	n := 0
	for i := 0; i+1 < len(firsts) && firsts[i+1] <= upTo; i++ {
		n++
	}
	return n
}

// loadSnapshot restores a fresh participant machine m over res from the
// newest valid snapshot on fsys and returns the seq it covers (0: none).
func (s *Sim) loadSnapshot(c *comp, fsys *wal.MemFS, m *twopc.Participant, res *countingResource) (uint64, error) {
	sn, ok := res.Resource.(snapshotter)
	if !ok {
		return 0, nil
	}
	snap, found, _, err := wal.LoadSnapshot(fsys, s.snapDir(c))
	if err != nil || !found {
		return 0, err
	}
	mb, rb, err := decodeSnap(snap.Data)
	if err != nil {
		return 0, err
	}
	if err := sn.RestoreSnapshot(rb); err != nil {
		return 0, err
	}
	if err := m.RestoreSnapshot(mb); err != nil {
		return 0, err
	}
	for _, tx := range m.InDoubtTxs() {
		res.prepared[tx] = true
	}
	return snap.Seq, nil
}
