package sim

import (
	"errors"
	"fmt"
	"slices"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/participant"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// ---- participant snapshots ----
//
// Every snapEvery ticks a participant that is up and between two Readies
// snapshots its machine and its Resource with participant.TakeSnapshotSpill
// and node.Tables.Snapshot, the steps participant.Service takes: append to
// the table files, sync the log, write the snapshot (temporary file, sync,
// rename, sync dir), keep it and the newest valid one before it, compact
// the log up to that one, remove the table files no kept snapshot names.
// The faults: a crash in the middle of a table append or after each step
// of the write, a crash in the middle of the compaction, and damage to the
// newest snapshot or to what its table files gained.

var errSnapCrash = errors.New("sim: crash while writing a snapshot")

func (s *Sim) snapDir(c *comp) string { return "/" + c.id }

// Snapshot and RestoreSnapshot make the counting wrapper a
// participant.Snapshotter when the service's store is one.
func (r *countingResource) Snapshot() ([]byte, error) {
	sn, ok := r.Resource.(participant.Snapshotter)
	if !ok {
		return nil, errors.New("sim: not a Snapshotter")
	}
	return sn.Snapshot()
}

// AttachLedger forwards to the service's store, whose ledger file then
// lives on the simulated disk.
func (r *countingResource) AttachLedger(fsys wal.FS, dir string) error {
	if l, ok := r.Resource.(participant.LedgerAttacher); ok {
		return l.AttachLedger(fsys, dir)
	}
	return nil
}

// LedgerHeld and CaptureLedger make the counting wrapper a
// participant.LedgerFlusher when the service's store is one.
func (r *countingResource) LedgerHeld() int {
	if l, ok := r.Resource.(participant.LedgerFlusher); ok {
		return l.LedgerHeld()
	}
	return 0
}

func (r *countingResource) CaptureLedger() func() error {
	if l, ok := r.Resource.(participant.LedgerFlusher); ok {
		return l.CaptureLedger()
	}
	return func() error { return nil }
}

func (r *countingResource) RestoreSnapshot(b []byte) error {
	sn, ok := r.Resource.(participant.Snapshotter)
	if !ok {
		return errors.New("sim: not a Snapshotter")
	}
	return sn.RestoreSnapshot(b)
}

// maybeSnapshot snapshots c (a participant or the single coordinator) if
// it is due, with the production steps (participant.TakeSnapshotSpill or
// coordinator.TakeSnapshot, then node.Tables.Snapshot), cut by the
// faults.
func (s *Sim) maybeSnapshot(c *comp) {
	if s.p.snapEvery == 0 || c.role == roleReplica || !c.up || c.m.HasReady() || s.now-c.lastSnap < s.p.snapEvery {
		return
	}
	c.lastSnap = s.now
	var seq uint64
	var encode func(*node.Tables) ([][]byte, error)
	var err error
	if c.role == roleCoord {
		seq, encode, err = coordinator.TakeSnapshot(c.coord, c.log)
	} else {
		seq, encode, err = participant.TakeSnapshotSpill(c.part, c.res, c.log)
	}
	if err != nil {
		s.violate("recovery", "%s: snapshot: %v", c.id, err)
		return
	}
	s.writeSnapshot(c, seq, encode)
}

// snapshotTables reads the table files out of a snapshot of c.
func (s *Sim) snapshotTables(c *comp) func([]byte) ([]twopc.TableRef, error) {
	if c.role == roleCoord {
		return twopc.CoordinatorSnapshotTables
	}
	return participant.SnapshotTables
}

// writeSnapshot makes the snapshot that encode serializes, named by seq,
// durable with the production steps (node.Tables.Snapshot: the table
// files, then node.WriteSnapshot), and cuts them: a crash in the middle
// of an append to a table file or after a step of writing the file, a
// halt in the middle of the compaction, damage to the file just written
// or to what its table files gained for it.
func (s *Sim) writeSnapshot(c *comp, seq uint64, encode func(*node.Tables) ([][]byte, error)) {
	const stopTables = wal.SnapshotStep(255)
	var stop wal.SnapshotStep
	if !s.healed && s.on(CrashSnapshot) && s.roll(s.p.crashPoint) {
		stop = []wal.SnapshotStep{stopTables, wal.SnapWrite, wal.SnapSynced, wal.SnapRenamed}[s.rng.IntN(4)]
	}
	halted, crashAfter, tableHalt := false, false, false
	dir := s.snapDir(c)
	hooks := node.SnapshotHooks{
		Step: func(st wal.SnapshotStep) error {
			if st == stop {
				return errSnapCrash
			}
			return nil
		},
		BeforeCompact: func(upTo uint64) {
			if !s.healed && s.on(CrashCompact) && s.roll(max(s.p.crashPoint, 0.15)) {
				if n := s.segmentsBefore(c, upTo); n > 0 {
					c.fs.HaltAfter(s.rng.IntN(2 * n)) // each removal: a remove and a directory sync
					halted = true
				} else {
					crashAfter = true // nothing to remove: the power goes right after
				}
			}
		},
		Table: func(string) error {
			if stop == stopTables && !tableHalt {
				c.fs.HaltAfter(s.rng.IntN(2)) // the write or the fsync of the append
				tableHalt = true
			}
			return nil
		},
	}
	if c.role == roleCoord {
		hooks = coordinator.MarkerHooks(c.fs, dir, hooks) // with its marker file
	}
	if c.tables == nil {
		c.tables = node.NewTables(c.fs, dir)
	}
	res, err := c.tables.Snapshot(c.log, seq, encode, hooks, s.snapshotTables(c))
	switch {
	case errors.Is(err, errSnapCrash):
		s.tracef("%s crashes writing snapshot %d (after step %d)", c.id, seq, stop)
		s.crash(c, CrashSnapshot, true)
		return
	case err != nil && tableHalt:
		s.tracef("%s crashes appending to a table file for snapshot %d", c.id, seq)
		s.crash(c, CrashSnapshot, true)
		return
	case err != nil && halted:
		s.tracef("%s crashes compacting its log after snapshot %d", c.id, seq)
		s.crash(c, CrashCompact, true)
		return
	case err != nil:
		s.violate("disk", "%s: snapshot: %v", c.id, err)
		return
	}
	if tableHalt { // the disk halted after the appends: the power is out
		s.tracef("%s crashes after snapshot %d's table files", c.id, seq)
		s.crash(c, CrashSnapshot, true)
		return
	}
	if c.role == roleCoord {
		s.res.CoordSnapshots++
	} else {
		s.res.Snapshots++
	}
	s.res.TableBytes += uint64(res.TableBytes)
	if crashAfter {
		s.tracef("%s crashes after snapshot %d, with nothing to compact", c.id, seq)
		s.crash(c, CrashCompact, true)
		return
	}
	if !s.healed && s.on(FaultSnapshotDamage) && s.roll(s.p.disk) {
		if s.rng.IntN(2) == 0 && s.damageTables(c, seq, res.Appends) {
			return
		}
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

// damageTables tears or flips a bit of what a table file gained for
// snapshot seq (appends): the bytes only it reads, which the next
// snapshot reads back before building on them (node.Tables). The restart
// must then load an older snapshot. It reports whether it damaged
// anything.
func (s *Sim) damageTables(c *comp, seq uint64, appends []node.TableAppend) bool {
	if len(appends) == 0 {
		return false
	}
	a := appends[s.rng.IntN(len(appends))]
	path := s.snapDir(c) + "/" + a.File
	b, err := c.fs.ReadFile(path)
	if err != nil || int64(len(b)) < a.To || a.To <= a.From {
		return false
	}
	at := a.From + s.rng.Int64N(a.To-a.From)
	if s.rng.IntN(2) == 0 {
		b = b[:at] // torn
	} else {
		b[at] ^= byte(1 << s.rng.IntN(8))
	}
	if err := c.fs.WriteFile(path, b); err != nil {
		return false
	}
	s.count(FaultSnapshotDamage)
	s.tracef("%s: table file %s of snapshot %d damaged at %d", c.id, a.File, seq, at)
	return true
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
// newest valid snapshot on fsys (participant.LoadSnapshot) and returns the
// seq it covers (0: none).
func (s *Sim) loadSnapshot(c *comp, fsys *wal.MemFS, m *twopc.Participant, res *countingResource) (uint64, error) {
	seq, _, err := participant.LoadSnapshot(fsys, s.snapDir(c), m, res)
	if err != nil || seq == 0 {
		return 0, err
	}
	for _, tx := range m.InDoubtTxs() {
		res.prepared[tx] = true
	}
	return seq, nil
}

// maybeFlushLedger moves the committed entries participant c holds in
// memory to its ledger file once it holds ledgerHeld of them, as
// participant.Service does between snapshots (LedgerFlusher.CaptureLedger:
// captured at any point of the loop, written at once here), cut by a
// halt of its disk.
func (s *Sim) maybeFlushLedger(c *comp) {
	if s.p.ledgerHeld == 0 || c.role != rolePart || !c.up || c.res.LedgerHeld() < s.p.ledgerHeld {
		return
	}
	flush := c.res.CaptureLedger()
	halted := false
	if !s.healed && c.plan.disk == 0 && s.on(CrashLedgerFlush) && s.roll(0.3) {
		c.fs.HaltAfter(s.rng.IntN(4)) // the ledger's write and fsync, the id set's run: write, sync, rename, directory sync
		halted = true
	}
	err := flush()
	switch {
	case err != nil && halted:
		s.tracef("%s crashes moving its ledger's entries to the file", c.id)
		s.crash(c, CrashLedgerFlush, true)
		return
	case err != nil && c.plan.disk != 0:
		s.tracef("%s crashes: ledger flush failed (%s): %v", c.id, c.plan.disk, err)
		s.crash(c, c.plan.disk, true)
		return
	case err != nil:
		s.violate("disk", "%s: ledger flush: %v", c.id, err)
		return
	}
	if halted && !c.fs.Halted() {
		c.fs.Disarm() // the flush ended before the halt: no crash this time
	}
	s.res.LedgerFlushes++
}
