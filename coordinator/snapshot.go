package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dtx-dev/dtx/node"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Snapshots.
//
// A coordinator that runs on a wal of its own (Open) snapshots its machine
// as a participant does: when SnapshotConfig.Every passed or LogBytes were
// logged since the last one, the loop stops between two Readies only to
// capture it (twopc.Coordinator.SnapshotDeferred: a copy of the unfinished
// transactions, views of the outcome tables that share their chunks); off
// the loop the capture is serialized and node.WriteSnapshot syncs the log,
// writes the file (temp file, fsync, rename, fsync dir), keeps it and the
// newest valid older one and compacts the log up to that one. A restart
// (Recover) loads the newest valid snapshot and replays only the records
// after it. So the log holds at most about two snapshot intervals of
// records and a restart replays at most one, whatever the retention
// window, instead of the two to three windows a replay from the third
// newest checkpoint needs.

// SnapshotConfig says when the coordinator snapshots. The zero value
// means the defaults (every DefaultSnapshotEvery or DefaultSnapshotLogBytes,
// whichever comes first).
type SnapshotConfig struct {
	// Every is the longest time between two snapshots while records are
	// logged (0 with LogBytes set: no time trigger).
	Every time.Duration
	// LogBytes snapshots once this many bytes of records were logged
	// since the last one (0 with Every set: no size trigger).
	LogBytes uint64
	// Check is how often the triggers are checked (0: 100 ms).
	Check time.Duration
	// Off takes no snapshot: the log then keeps every record (it is not
	// compacted at checkpoints either, which could cut it past a snapshot
	// an earlier run left).
	Off bool
}

// The defaults of SnapshotConfig, those of the services too.
const (
	DefaultSnapshotEvery    = time.Minute
	DefaultSnapshotLogBytes = 1 << 20
	// DefaultReplicaSnapshotLogBytes is the size trigger of a replica of
	// a replicated coordinator: its snapshots hold the outcome tables
	// whole (a replica behind fetches one file), so they are taken less
	// often.
	DefaultReplicaSnapshotLogBytes = 64 << 20
)

// WithDefaults returns c with the defaults filled in where it says nothing.
func (c SnapshotConfig) WithDefaults() SnapshotConfig {
	return c.withDefaults(DefaultSnapshotLogBytes)
}

// WithReplicaDefaults is WithDefaults for a replica of a replicated
// coordinator (DefaultReplicaSnapshotLogBytes).
func (c SnapshotConfig) WithReplicaDefaults() SnapshotConfig {
	return c.withDefaults(DefaultReplicaSnapshotLogBytes)
}

func (c SnapshotConfig) withDefaults(logBytes uint64) SnapshotConfig {
	if c.Every == 0 && c.LogBytes == 0 {
		c.Every, c.LogBytes = DefaultSnapshotEvery, logBytes
	}
	return c
}

// Recovered says how a coordinator came back from its data directory.
type Recovered struct {
	// Snapshot is the seq the snapshot loaded covers (the replay began
	// at the record after it), 0 if none was.
	Snapshot uint64
	// Skipped has an error for each newer snapshot skipped as torn or
	// damaged.
	Skipped []error
	// LoadTook is how long reading and loading the snapshot took (mostly
	// the retention tables' load time), Outcomes and Expired what it
	// held: retained outcomes and expired ids.
	LoadTook          time.Duration
	Outcomes, Expired int
	// ReplayTook is how long the replay of the log after the snapshot took.
	ReplayTook time.Duration
}

// Recover opens the coordinator's log (lc.Dir) and rebuilds the fresh
// machine m from it, then starts m: from the newest whole, valid snapshot
// in the directory and the records after it; or, with none, from the whole
// log, which is right if the log was never compacted (it still starts at
// record 1, whatever snapshot files are damaged) or was compacted only at
// checkpoints, as before coordinators took snapshots (no SnapshotMarker).
// A log compacted after snapshots of which none can be loaded is an
// error, never a shorter history. The simulator recovers its coordinator
// with this too.
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
	if after == 0 {
		first, ok, err := wal.FirstSegment(fsys, lc.Dir)
		if err != nil {
			return nil, rec, err
		}
		if ok && first > 1 {
			marked, err := hasMarker(fsys, lc.Dir)
			if err != nil {
				return nil, rec, err
			}
			if marked || len(skipped) >= 2 { // two files are kept only once the log may be compacted after them
				return nil, rec, fmt.Errorf("the log in %s starts at record %d, compacted after snapshots, and no snapshot can be loaded (%d damaged): refusing to start with a shorter history",
					lc.Dir, first, len(skipped))
			}
		}
		log, err := node.Recover(lc, m, h)
		return log, rec, err
	}
	st := m.RetentionStats()
	rec.LoadTook, rec.Outcomes, rec.Expired = time.Since(start), st.Current+st.Previous, st.Expired
	t1 := time.Now()
	log, err := node.RecoverAfter(lc, m, h, after)
	if err != nil {
		return nil, rec, err
	}
	rec.ReplayTook = time.Since(t1)
	rec.Snapshot = after
	return log, rec, nil
}

// SnapshotMarker is the file a coordinator's directory holds from just
// before its log is first compacted after a snapshot: a restart that then
// cannot load a snapshot must not replay what is left of the log as if it
// were whole.
const SnapshotMarker = "SNAPSHOTS"

func hasMarker(fsys wal.FS, dir string) (bool, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("list %s: %w", dir, err)
	}
	return slices.Contains(names, SnapshotMarker), nil
}

// WriteSnapshot makes a snapshot taken by TakeSnapshot durable, off the
// loop, with node.WriteSnapshot's steps (sync the log, write and check the
// file, keep it and the newest valid older one, compact the log up to that
// one), and makes sure SnapshotMarker exists (created, synced, directory
// synced) before the log is first compacted. It returns the seq the log is
// kept from (0: all of it).
func WriteSnapshot(fsys wal.FS, dir string, log *wal.Log, seq uint64, data [][]byte, h node.SnapshotHooks) (keptFrom uint64, err error) {
	return node.WriteSnapshot(fsys, dir, log, seq, data, MarkerHooks(fsys, dir, h))
}

// MarkerHooks returns h with the marker file written before the first
// compaction (WriteSnapshot).
func MarkerHooks(fsys wal.FS, dir string, h node.SnapshotHooks) node.SnapshotHooks {
	may := h.MayCompact
	h.MayCompact = func() error {
		if err := ensureMarker(fsys, dir); err != nil {
			return err
		}
		if may != nil {
			return may()
		}
		return nil
	}
	return h
}

// ensureMarker creates SnapshotMarker in dir if it is not there.
func ensureMarker(fsys wal.FS, dir string) error {
	marked, err := hasMarker(fsys, dir)
	if err != nil || marked {
		return err
	}
	f, err := fsys.OpenFile(filepath.Join(dir, SnapshotMarker), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("snapshot marker: %w", err)
	}
	if _, err := f.Write([]byte("this log is compacted after snapshots; a restart needs one of them\n")); err != nil {
		f.Close()
		return fmt.Errorf("snapshot marker: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("snapshot marker: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("snapshot marker: %w", err)
	}
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("snapshot marker: %w", err)
	}
	return nil
}

// LoadSnapshot restores the fresh machine m from the newest whole, valid
// snapshot in dir and returns the seq it covers: replay the log after it
// (0: there is none). skipped has an error for each newer snapshot
// skipped as torn or damaged.
func LoadSnapshot(fsys wal.FS, dir string, m *twopc.Coordinator) (after uint64, skipped []error, err error) {
	snap, src, found, skipped, err := node.LoadSnapshot(fsys, dir, twopc.CoordinatorSnapshotTables)
	if err != nil {
		return 0, skipped, fmt.Errorf("snapshot: %w", err)
	}
	if !found {
		return 0, skipped, nil
	}
	if snap.Seq == 0 {
		return 0, skipped, fmt.Errorf("snapshot %s covers no record", snap.Name)
	}
	if err := m.RestoreSnapshotFrom(snap.Data, src); err != nil {
		return 0, skipped, fmt.Errorf("snapshot %s: %w", snap.Name, err)
	}
	return snap.Seq, skipped, nil
}

// TakeSnapshot captures m, which must be between two Readies (on the loop;
// it is the loop's whole pause), as the snapshot covering the log up to
// log.LastSeq(), and returns the function that serializes the capture, to
// be called off the loop with the node.Tables of the log's directory,
// through which it keeps its tables in files (writing only what changed
// since its last snapshot).
func TakeSnapshot(m *twopc.Coordinator, log *wal.Log) (seq uint64, encode func(*node.Tables) ([][]byte, error), err error) {
	enc, err := m.SnapshotDeferredSpill()
	if err != nil {
		return 0, nil, err
	}
	return log.LastSeq(), func(t *node.Tables) ([][]byte, error) {
		b, err := enc(t)
		return [][]byte{b}, err
	}, nil
}

// SnapshotStats describes the snapshots of a coordinator.
type SnapshotStats struct {
	// Loaded is the seq the snapshot loaded at the start covers (0:
	// none); Skipped the snapshots skipped then as torn or damaged;
	// LoadTook, ReplayTook, LoadedOutcomes and LoadedExpired as in
	// Recovered.
	Loaded                        uint64
	Skipped                       []string
	LoadTook, ReplayTook          time.Duration
	LoadedOutcomes, LoadedExpired int
	// Taken counts the snapshots written by this run; LastBytes, LastSeq,
	// LastPause (the loop's) and LastTook (capture to durable) describe
	// the latest; MaxPause is the longest pause; KeptFrom is the first
	// seq the log keeps.
	Taken               uint64
	LastBytes           int
	LastSeq             uint64
	LastPause, MaxPause time.Duration
	LastTook            time.Duration
	// LastTableBytes is what the last snapshot appended to its table
	// files (what changed of the outcome tables since the one before).
	LastTableBytes int64
	KeptFrom       uint64
}

// snapshotter takes a snapshot whenever one is due, until ctx ends.
func (c *Coordinator) snapshotter(ctx context.Context) {
	cfg := c.cfg.Snapshot.WithDefaults()
	check := cfg.Check
	if check <= 0 {
		check = 100 * time.Millisecond
	}
	t := time.NewTicker(check)
	defer t.Stop()
	lastAt, lastBytes, lastSeq := time.Now(), uint64(0), c.log.LastSeq()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		written, seq := c.log.Stats().BytesWritten, c.log.LastSeq()
		due := cfg.LogBytes > 0 && written-lastBytes >= cfg.LogBytes ||
			cfg.Every > 0 && time.Since(lastAt) >= cfg.Every && seq > lastSeq
		if !due {
			continue
		}
		if err := c.SnapshotNow(ctx); err != nil {
			if !errors.Is(err, node.ErrBusy) && ctx.Err() == nil {
				c.cfg.Logger.Warn("snapshot failed; the log is kept until one is written", "err", err)
			}
			continue
		}
		lastAt, lastBytes, lastSeq = time.Now(), written, c.SnapshotStats().LastSeq
	}
}

// SnapshotNow takes a snapshot of the running coordinator now: captured on
// the loop between two Readies, serialized and written off it
// (node.WriteSnapshot), the log then compacted up to the older snapshot
// kept. It returns node.ErrBusy if the loop had work in hand (try again).
// One runs at a time.
func (c *Coordinator) SnapshotNow(ctx context.Context) error {
	if c.log == nil {
		return errors.New("coordinator: snapshots need the coordinator's own log (Open)")
	}
	c.mu.Lock()
	running := c.mu.running && !c.mu.closed
	c.mu.Unlock()
	if !running {
		return ErrClosed // not running (yet, or any more): no loop to capture on
	}
	c.snapRun.Lock()
	defer c.snapRun.Unlock()
	start := time.Now()
	var seq uint64
	var encode func(*node.Tables) ([][]byte, error)
	var serr error
	var pause time.Duration
	err := c.node.DoQuiet(ctx, c.loopDone, func() {
		t0 := time.Now()
		seq, encode, serr = TakeSnapshot(c.m, c.log)
		pause = time.Since(t0)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	fsys := c.cfg.Log.FS
	if fsys == nil {
		fsys = wal.OSFS()
	}
	dir := filepath.Clean(c.cfg.Dir)
	if c.tables == nil {
		c.tables = node.NewTables(fsys, dir)
	}
	res, err := c.tables.Snapshot(c.log, seq, encode, MarkerHooks(fsys, dir, c.cfg.SnapshotHooks), twopc.CoordinatorSnapshotTables)
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if len(res.SetAside) > 0 {
		c.cfg.Logger.Warn("snapshots set aside: bytes they appended to a table file are damaged", "snapshots", res.SetAside)
	}
	if res.PruneErr != nil {
		c.cfg.Logger.Warn("table files not removed", "err", res.PruneErr)
	}
	size, from := res.Bytes, res.KeptFrom
	took := time.Since(start)
	c.snapMu.Lock()
	c.snapStats.Taken++
	c.snapStats.LastBytes, c.snapStats.LastSeq, c.snapStats.LastPause, c.snapStats.LastTook = size, seq, pause, took
	c.snapStats.LastTableBytes = res.TableBytes
	c.snapStats.MaxPause = max(c.snapStats.MaxPause, pause)
	if from > 0 {
		c.snapStats.KeptFrom = from
	}
	c.snapMu.Unlock()
	c.cfg.Logger.Info("snapshot", "seq", seq, "bytes", size, "table_bytes", res.TableBytes, "loop_pause", pause, "took", took, "log_from", from)
	return nil
}

// SnapshotStats returns the coordinator's snapshot counters (zero for a
// replicated coordinator, whose group log is compacted by raft).
func (c *Coordinator) SnapshotStats() SnapshotStats {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	st := c.snapStats
	st.Skipped = append([]string(nil), st.Skipped...)
	return st
}
