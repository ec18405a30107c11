package coordinator

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Checkpoint snapshots.
//
// At every rotation of its outcome generations the coordinator logs a
// CHECKPOINT head (seq S) and, once the Ready holding it is appended,
// captures the rotation on the loop (twopc.Coordinator.CheckpointSnapshot:
// references to the packed previous generation and the expired set, which
// no longer change). Off the loop, the snapshot writer serializes them,
// syncs the log (the head must be durable before a file claims it), writes
// the file named by S-1 (temp file, fsync, rename, fsync dir), keeps it and
// the newest valid older one, and compacts the log up to that older one's
// head: node.WriteSnapshot, the participants' own steps. A restart
// (Recover) loads the newest valid snapshot and replays the log from its
// head on, so it replays less than a window of records instead of two to
// three, and the log holds one to two windows.

// Recovered says how a coordinator came back from its data directory.
type Recovered struct {
	// Snapshot is the seq the checkpoint snapshot loaded is named by (the
	// replay began at the record after it), 0 if none was.
	Snapshot uint64
	// Skipped has an error for each newer snapshot skipped as torn or
	// damaged.
	Skipped []error
	// Checkpoints are the checkpoint heads replayed (node.Carrier).
	Checkpoints []uint64
	// LoadTook is how long reading and loading the snapshot took (the
	// retention tables' load time), Outcomes and Expired what it held.
	LoadTook          time.Duration
	Outcomes, Expired int
}

// Recover opens the coordinator's log (lc.Dir) and rebuilds the fresh
// machine m from it: from the newest whole, valid checkpoint snapshot in
// the directory and the records from its CHECKPOINT head on, or, with no
// snapshot, from the whole log; then starts m. A log compacted past every
// snapshot that could be loaded is an error, never a shorter history: two
// snapshot files exist once the log was compacted up to one, so with fewer
// than two damaged ones the log still starts where a replay from scratch
// may (the first record, or a checkpoint two rotations back, as the log
// was compacted before snapshots existed). The simulator recovers its
// coordinator with this too.
func Recover(lc wal.Config, m *twopc.Coordinator, h node.Hooks) (*wal.Log, Recovered, error) {
	var rec Recovered
	fsys := lc.FS
	if fsys == nil {
		fsys = wal.OSFS()
	}
	start := time.Now()
	after, skipped, err := LoadSnapshot(fsys, lc.Dir, m)
	rec.Skipped = skipped
	if err != nil {
		return nil, rec, err
	}
	if after > 0 {
		st := m.RetentionStats()
		rec.LoadTook, rec.Outcomes, rec.Expired = time.Since(start), st.Previous, st.Expired
	}
	if after == 0 {
		log, ckpts, err := node.RecoverCheckpoints(lc, m, h)
		rec.Checkpoints = ckpts
		return log, rec, err
	}
	log, err := node.RecoverAfter(lc, m, h, after)
	if err != nil {
		return nil, rec, err
	}
	if log.LastSeq() <= after {
		log.Close()
		return nil, rec, fmt.Errorf("replay: the log ends at record %d, without the CHECKPOINT %d of snapshot %s", log.LastSeq(), after+1, wal.SnapshotName(after))
	}
	rec.Snapshot = after
	return log, rec, nil
}

// LoadSnapshot restores the fresh machine m from the newest whole, valid
// checkpoint snapshot in dir and returns the seq it is named by: replay
// the log after it, from its CHECKPOINT head on. 0 means there is none
// and the whole log is to be replayed; that is an error if two or more
// snapshot files are there, all damaged (see Recover). skipped has an
// error for each newer snapshot skipped as torn or damaged.
func LoadSnapshot(fsys wal.FS, dir string, m *twopc.Coordinator) (after uint64, skipped []error, err error) {
	snap, found, skipped, err := wal.LoadSnapshot(fsys, dir)
	if err != nil {
		return 0, skipped, fmt.Errorf("checkpoint snapshot: %w", err)
	}
	if !found {
		if len(skipped) >= 2 {
			return 0, skipped, fmt.Errorf("every checkpoint snapshot in %s is damaged (%d), and the log may have been compacted up to one: %w",
				dir, len(skipped), skipped[0])
		}
		return 0, skipped, nil
	}
	if snap.Seq == 0 {
		return 0, skipped, fmt.Errorf("checkpoint snapshot %s: named by seq 0", snap.Name)
	}
	if err := m.RestoreCheckpointSnapshot(snap.Data); err != nil {
		return 0, skipped, fmt.Errorf("checkpoint snapshot %s: %w", snap.Name, err)
	}
	return snap.Seq, skipped, nil
}

// ckptJob is a captured rotation waiting to be written.
type ckptJob struct {
	after  uint64 // the seq before the CHECKPOINT head
	encode func() []byte
}

// SnapshotStats describes the checkpoint snapshots of a coordinator.
type SnapshotStats struct {
	// Loaded is the seq the snapshot loaded at the start is named by (0:
	// none); Skipped the snapshots skipped then as torn or damaged;
	// LoadTook, LoadedOutcomes and LoadedExpired as in Recovered.
	Loaded                        uint64
	Skipped                       []string
	LoadTook                      time.Duration
	LoadedOutcomes, LoadedExpired int
	// Taken counts the snapshots written by this run, Failed those that
	// could not be; LastBytes, LastSeq and LastTook describe the latest
	// one written; KeptFrom is the first seq the log keeps.
	Taken, Failed uint64
	LastBytes     int
	LastSeq       uint64
	LastTook      time.Duration
	KeptFrom      uint64
}

// onCheckpoint captures the rotation whose head is at seq (on the loop)
// and hands it to the writer, replacing one still waiting: the newer
// snapshot makes the older useless.
func (c *Coordinator) onCheckpoint(seq uint64) {
	enc, ok := c.m.CheckpointSnapshot()
	if !ok || seq == 0 {
		return
	}
	job := ckptJob{after: seq - 1, encode: enc}
	for {
		select {
		case c.snapJobs <- job:
			return
		default:
		}
		select {
		case <-c.snapJobs:
		default:
		}
	}
}

// snapshotWriter writes the captured rotations until ctx ends.
func (c *Coordinator) snapshotWriter(ctx context.Context) {
	fsys := c.cfg.Log.FS
	if fsys == nil {
		fsys = wal.OSFS()
	}
	for {
		var job ckptJob
		select {
		case <-ctx.Done():
			return
		case job = <-c.snapJobs:
		}
		start := time.Now()
		data := job.encode()
		from, err := node.WriteSnapshot(fsys, filepath.Clean(c.cfg.Dir), c.log, job.after, [][]byte{data}, c.cfg.SnapshotHooks)
		c.snapMu.Lock()
		if err != nil {
			c.snapStats.Failed++
			c.snapMu.Unlock()
			if ctx.Err() == nil {
				c.cfg.Logger.Warn("checkpoint snapshot failed; the log is kept whole until one is written", "seq", job.after, "err", err)
			}
			continue
		}
		c.snapStats.Taken++
		c.snapStats.LastBytes, c.snapStats.LastSeq, c.snapStats.LastTook = len(data), job.after, time.Since(start)
		if from > 0 {
			c.snapStats.KeptFrom = from
		}
		c.snapMu.Unlock()
		c.cfg.Logger.Info("checkpoint snapshot", "seq", job.after, "bytes", len(data), "took", time.Since(start), "log_from", from)
	}
}

// SnapshotStats returns the coordinator's checkpoint snapshot counters
// (zero for a replicated coordinator, whose group log is compacted by
// raft).
func (c *Coordinator) SnapshotStats() SnapshotStats {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	st := c.snapStats
	st.Skipped = append([]string(nil), st.Skipped...)
	return st
}
