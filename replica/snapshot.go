package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/dtx-dev/dtx/coordinator"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Snapshots.
//
// Every replica, leader or follower, applies the group's committed records
// to a machine of its own that is never started (state): the coordinator
// state as of its applied index, what a restarted coordinator would
// rebuild from the same records. When the coordinator's snapshot triggers
// say so (coordinator.SnapshotConfig: a time or an amount of log since the
// last one), the raft loop captures state (twopc.Coordinator.SnapshotDeferred:
// the unfinished transactions copied, the outcome tables shared copy on
// write) at its applied index, and off the loop the capture is written as
// a snapshot file named by that index in the raft log's directory (temp
// file, fsync, rename, fsync dir; the raft log is synced first, so the
// file never covers entries the log could lose). The replica keeps that
// file and the newest valid older one, and compacts its raft log up to the
// older one: raft's snapshot there says "the state is in the file at this
// index" (fileData). So the raft log holds about two snapshot intervals of
// entries, whatever the retention window, and a restart loads the newest
// valid file and applies only the entries after it.
//
// A new leader does not replay the raft log either: once its barrier is
// applied, its state is exactly the group's at the barrier, and its
// coordinator's machine is restored from a capture of it (the same
// encoding, decoded into a fresh machine), then started. The leader keeps
// its state apart from the running machine, whose tables run ahead of
// what the group has committed.
//
// A replica whose log ends before the leader's first entry gets raft's
// MsgSnap, which names the index and not the bytes: the replica fetches
// the file from the sender (SnapshotFetcher; the Raft/Snapshot call
// between networked replicas), writes it as its own, and only then lets
// raft install the snapshot, loading the file into a fresh state.
//
// A group whose raft log was compacted before this (a snapshot with
// legacyData, or the bootstrap snapshot at index 0, with no data) holds no
// state in its snapshot: the entries after it replay into a fresh machine.

// fileData is the data of a raft snapshot whose state is in the
// replica's snapshot file at the snapshot's index.
var fileData = []byte("dtx: coordinator state in the snapshot file at this index")

// legacyData marked the snapshots of replicas that compacted their raft
// log at coordinator checkpoints: no state, the entries after them start
// at a checkpoint and replay into the whole machine.
var legacyData = []byte("dtx: entries after this index start at a coordinator checkpoint")

// SnapshotFetcher is implemented by a Transport that can fetch another
// replica's snapshot file (Replica.SnapshotFile): a replica too far behind
// installs the sender's snapshot with it. A Transport without it leaves
// such a replica to wait (raft sends the snapshot again).
type SnapshotFetcher interface {
	FetchSnapshot(ctx context.Context, from, index uint64) ([]byte, error)
}

// SnapshotStats describes a replica's snapshots.
type SnapshotStats struct {
	// Loaded is the index of the snapshot file loaded at the start (0:
	// none); Skipped counts newer files skipped as torn or damaged.
	Loaded  uint64
	Skipped int
	// Taken counts the snapshots this run wrote, Installed those it
	// fetched from another replica, Failed the writes and fetches that
	// failed; LastIndex, LastBytes, LastPause (the raft loop's) and
	// LastTook (capture to durable) describe the latest written.
	Taken, Installed, Failed uint64
	LastIndex                uint64
	LastBytes                int
	LastPause, MaxPause      time.Duration
	LastTook                 time.Duration
}

// snapState is the raft loop's snapshot bookkeeping.
type snapState struct {
	cfg      coordinator.SnapshotConfig
	every    int // ticks between time-triggered snapshots (0: none)
	bytes    uint64
	ticks    int
	writing  bool
	fetching map[uint64]bool
	// fetched is the state decoded from a file fetched at fetchedAt, for
	// raft's install of it in the same turn (nil once that turn ended).
	fetched   *twopc.Coordinator
	fetchedAt uint64
	retryAt   time.Time // no fetch before this, after a failed one

	fileMu sync.Mutex // the snapshot files: writes, fetches and prunes

	mu    sync.Mutex
	stats SnapshotStats
}

func (r *Replica) snapshots() bool { return r.cfg.Log.Dir != "" && !r.snap.cfg.Off }

func (r *Replica) fsys() wal.FS { return fsysOf(r.cfg.Log) }

func fsysOf(lc wal.Config) wal.FS {
	if lc.FS != nil {
		return lc.FS
	}
	return wal.OSFS()
}

// statefulSnap reports whether a raft snapshot's state is in a file.
func statefulSnap(s *pb.Snapshot) bool { return bytes.Equal(s.GetData(), fileData) }

// loadState builds the state a replica starts from: a fresh machine
// restored from the newest valid snapshot file at or after the raft log's
// snapshot (and not past what the log says is committed), or a fresh machine if the
// raft snapshot holds no state and no file is there. It returns the state
// and the index it is at: raft applies the entries after it.
func loadState(lc wal.Config, st *storage, mc twopc.CoordinatorConfig) (m *twopc.Coordinator, at uint64, fromFile bool, skipped int, err error) {
	if m, err = twopc.NewCoordinator(mc); err != nil {
		return nil, 0, false, 0, err
	}
	snap, _ := st.Snapshot()
	si := snap.GetMetadata().GetIndex()
	if lc.Dir == "" {
		return m, si, false, 0, nil
	}
	fsys := fsysOf(lc)
	// The newest valid file within what the log says is committed. A
	// replica writes its own files only after syncing a commit index at
	// least theirs; a file past it is one fetched from the leader whose
	// install did not reach the log before a crash, and the entries of
	// this log up to it may not be the group's.
	commit := max(st.hs.GetCommit(), si)
	seqs := wal.SnapshotSeqs(fsys, lc.Dir)
	for _, seq := range slices.Backward(seqs) {
		if seq > commit {
			continue
		}
		if seq < si {
			break
		}
		s, rerr := wal.ReadSnapshot(fsys, lc.Dir, seq)
		if rerr != nil {
			skipped++
			continue
		}
		if err := m.RestoreSnapshot(s.Data); err != nil {
			return nil, 0, false, 0, fmt.Errorf("replica: snapshot %s: %w", s.Name, err)
		}
		return m, seq, true, skipped, nil
	}
	if statefulSnap(snap) {
		return nil, 0, false, 0, fmt.Errorf("replica: the raft log was compacted up to index %d and no snapshot file at or after it can be loaded (%d damaged): refusing to start with a shorter history", si, skipped)
	}
	return m, si, false, skipped, nil
}

// maybeSnapshot captures the state if a snapshot is due and none is being
// written; a running replica writes it off the loop, a stepped one at once.
func (r *Replica) maybeSnapshot() {
	s := &r.snap
	if !r.snapshots() || s.writing || r.applied <= r.snapshotAt() {
		return
	}
	due := (s.cfg.LogBytes > 0 && s.bytes >= s.cfg.LogBytes) || (s.every > 0 && s.ticks >= s.every && s.bytes > 0)
	if !due {
		return
	}
	start := time.Now()
	enc, err := r.state.SnapshotDeferred()
	if err != nil {
		r.cfg.Logger.Error("replica: capture a snapshot", "id", r.cfg.ID, "err", err)
		return
	}
	index, pause, raftSnap := r.applied, time.Since(start), r.snapshot
	s.bytes, s.ticks, s.writing = 0, 0, true
	if r.cfg.Lead != nil {
		older, n, err := r.writeSnapshot(index, raftSnap, enc)
		r.snapshotWritten(index, older, n, start, pause, err)
		return
	}
	go func() {
		older, n, err := r.writeSnapshot(index, raftSnap, enc)
		r.post(func() { r.snapshotWritten(index, older, n, start, pause, err) })
	}()
}

// snapshotAt is the index of the newest snapshot file written or loaded.
func (r *Replica) snapshotAt() uint64 {
	r.snap.mu.Lock()
	defer r.snap.mu.Unlock()
	return max(r.snap.stats.LastIndex, r.snap.stats.Loaded, r.snapshot)
}

// writeSnapshot serializes a capture at index and makes it durable; it
// keeps it and the newest valid older file and returns that one's index
// (0: none), which the log may be compacted up to. It also keeps the file
// at raftSnap, the raft log's snapshot when the capture was taken: until
// the raft log is compacted past it (later, on the loop), it is the file
// a replica behind is sent, and a crash before that compaction must not
// leave the raft log's snapshot without its file.
func (r *Replica) writeSnapshot(index, raftSnap uint64, enc func() []byte) (older uint64, n int, err error) {
	data := enc()
	if err := r.st.wal.Sync(); err != nil {
		return 0, 0, &logError{err}
	}
	fsys, dir := r.fsys(), r.cfg.Log.Dir
	r.snap.fileMu.Lock()
	defer r.snap.fileMu.Unlock()
	if err := wal.WriteSnapshotParts(fsys, dir, index, [][]byte{data}, r.cfg.SnapshotHooks.Step); err != nil {
		return 0, 0, err
	}
	if err := wal.CheckSnapshot(fsys, dir, index); err != nil {
		return 0, 0, fmt.Errorf("snapshot not readable after writing it: %w", err)
	}
	older, ok := wal.OlderSnapshot(fsys, dir, index)
	keep := []uint64{index, raftSnap}
	if ok {
		keep = append(keep, older)
	} else {
		older = 0
	}
	for _, i := range wal.SnapshotSeqs(fsys, dir) {
		if i > index {
			keep = append(keep, i) // fetched from the leader, maybe being installed
		}
	}
	if err := wal.PruneSnapshots(fsys, dir, keep...); err != nil {
		return 0, 0, err
	}
	return older, len(data), nil
}

// logError is a failure of the raft log itself while a snapshot was
// written (its sync): the replica must stop, as for any raft log failure.
type logError struct{ err error }

func (e *logError) Error() string { return e.err.Error() }

// snapshotWritten follows a snapshot's write on the raft loop: the raft
// log is compacted up to the older file kept.
func (r *Replica) snapshotWritten(index, older uint64, n int, start time.Time, pause time.Duration, err error) {
	r.snap.writing = false
	r.snap.mu.Lock()
	if err != nil {
		r.snap.stats.Failed++
	} else {
		st := &r.snap.stats
		st.Taken++
		st.LastIndex, st.LastBytes, st.LastPause, st.LastTook = index, n, pause, time.Since(start)
		st.MaxPause = max(st.MaxPause, pause)
	}
	r.snap.mu.Unlock()
	if le := (*logError)(nil); errors.As(err, &le) {
		r.fatal = fmt.Errorf("replica: raft log: %w", le.err)
		return
	}
	if err != nil {
		// The file is not written: the raft log is left as it is, and
		// the next snapshot tries again.
		r.cfg.Logger.Warn("replica: snapshot not written", "id", r.cfg.ID, "index", index, "err", err)
		return
	}
	if older > r.snapshot && older <= r.applied {
		if h := r.cfg.SnapshotHooks.BeforeCompact; h != nil {
			h(older)
		}
		if err := r.st.compact(older, r.cs, fileData); err != nil {
			r.fatal = fmt.Errorf("replica: compact raft log: %w", err)
			return
		}
		r.snapshot = older
	}
}

// installed prunes the snapshot files older than an installed snapshot,
// once the raft log holds it: the log starts after it now, so they have
// nothing to fall back to.
func (r *Replica) installed(snap *pb.Snapshot) error {
	if !statefulSnap(snap) {
		return nil
	}
	r.snap.fileMu.Lock()
	defer r.snap.fileMu.Unlock()
	return wal.PruneSnapshots(r.fsys(), r.cfg.Log.Dir, snap.GetMetadata().GetIndex())
}

// install loads the state of a snapshot raft is about to install: a
// leader's, fetched into this replica's directory by receive (whose
// decoded state is kept for this in fetched), or one holding no state.
func (r *Replica) install(snap *pb.Snapshot) error {
	index := snap.GetMetadata().GetIndex()
	m := r.snap.fetched
	if r.snap.fetchedAt != index {
		m = nil
	}
	r.snap.fetched = nil
	if m == nil {
		var err error
		if m, err = twopc.NewCoordinator(r.cfg.Coordinator.Machine); err != nil {
			return err
		}
		if statefulSnap(snap) {
			s, err := wal.ReadSnapshot(r.fsys(), r.cfg.Log.Dir, index)
			if err == nil {
				err = m.RestoreSnapshot(s.Data)
			}
			if err != nil {
				return fmt.Errorf("replica: install snapshot at %d: %w", index, err)
			}
		}
	}
	r.state = m
	r.snap.bytes, r.snap.ticks = 0, 0
	r.snap.mu.Lock()
	r.snap.stats.Installed++
	r.snap.mu.Unlock()
	return nil
}

// receive steps a raft message, unless it is a snapshot whose file this
// replica does not have yet: that is fetched from the sender first (a
// running replica fetches off the loop and steps the message once the
// file is written; raft meanwhile sends it again, which is ignored).
func (r *Replica) receive(m *pb.Message) {
	if m.GetType() != pb.MsgSnap || !statefulSnap(m.GetSnapshot()) || r.cfg.Log.Dir == "" {
		_ = r.rn.Step(m) // a message of another term or a stale one: raft ignores it
		return
	}
	index := m.GetSnapshot().GetMetadata().GetIndex()
	if index <= r.rn.BasicStatus().GetCommit() || wal.CheckSnapshot(r.fsys(), r.cfg.Log.Dir, index) == nil {
		_ = r.rn.Step(m)
		return
	}
	f, ok := r.cfg.Transport.(SnapshotFetcher)
	if !ok || r.snap.fetching[index] {
		return
	}
	if r.cfg.Lead == nil && time.Now().Before(r.snap.retryAt) {
		return // a fetch failed a moment ago: raft sends the snapshot again
	}
	if r.cfg.Lead != nil {
		st, err := r.fetchSnapshot(context.Background(), f, m.GetFrom(), index)
		r.fetchDone(m, index, st, err)
		return
	}
	if r.snap.fetching == nil {
		r.snap.fetching = map[uint64]bool{}
	}
	r.snap.fetching[index] = true
	ctx := r.ctx
	go func() {
		st, err := r.fetchSnapshot(ctx, f, m.GetFrom(), index)
		r.post(func() {
			delete(r.snap.fetching, index)
			r.fetchDone(m, index, st, err)
		})
	}()
}

// fetchDone steps the snapshot message m once its file is here.
func (r *Replica) fetchDone(m *pb.Message, index uint64, st *twopc.Coordinator, err error) {
	if err != nil {
		r.snap.mu.Lock()
		r.snap.stats.Failed++
		r.snap.mu.Unlock()
		r.snap.retryAt = time.Now().Add(fetchBackoff)
		r.cfg.Logger.Warn("replica: fetch a snapshot", "id", r.cfg.ID, "from", m.GetFrom(), "index", index, "err", err)
		return
	}
	r.snap.fetched, r.snap.fetchedAt = st, index
	_ = r.rn.Step(m)
}

// Fetches: a failed one is not retried for fetchBackoff (raft sends the
// snapshot again every few ticks, and each try reads and streams the whole
// file), and one gives up after fetchTimeout (a peer cut off mid-stream).
const (
	fetchBackoff = time.Second
	fetchTimeout = 2 * time.Minute
)

// fetchSnapshot fetches the snapshot at index from replica from, decodes
// it into a fresh state and writes it as this replica's own file.
func (r *Replica) fetchSnapshot(ctx context.Context, f SnapshotFetcher, from, index uint64) (*twopc.Coordinator, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	data, err := f.FetchSnapshot(ctx, from, index)
	if err != nil {
		return nil, err
	}
	// Decoded before it is written: a snapshot that does not decode must
	// not take the place of this replica's own history.
	m, err := twopc.NewCoordinator(r.cfg.Coordinator.Machine)
	if err != nil {
		return nil, err
	}
	if err := m.RestoreSnapshot(data); err != nil {
		return nil, fmt.Errorf("snapshot from replica %d: %w", from, err)
	}
	fsys, dir := r.fsys(), r.cfg.Log.Dir
	r.snap.fileMu.Lock()
	defer r.snap.fileMu.Unlock()
	if err := wal.WriteSnapshotParts(fsys, dir, index, [][]byte{data}, nil); err != nil {
		return nil, err
	}
	if err := wal.CheckSnapshot(fsys, dir, index); err != nil {
		return nil, err
	}
	return m, nil
}

// SnapshotFile returns the data of this replica's snapshot file at index,
// for a replica that fetches it.
func (r *Replica) SnapshotFile(index uint64) ([]byte, error) {
	if r.cfg.Log.Dir == "" {
		return nil, fmt.Errorf("replica %d: no snapshot files (raft log in memory)", r.cfg.ID)
	}
	s, err := wal.ReadSnapshot(r.fsys(), r.cfg.Log.Dir, index)
	if err != nil {
		return nil, fmt.Errorf("replica %d: %w", r.cfg.ID, err)
	}
	return s.Data, nil
}

// SnapshotStats returns the replica's snapshot figures.
func (r *Replica) SnapshotStats() SnapshotStats {
	r.snap.mu.Lock()
	defer r.snap.mu.Unlock()
	return r.snap.stats
}

// applyState applies a committed entry's records to the state and counts
// them towards the next snapshot.
func (r *Replica) applyState(e *pb.Entry) error {
	r.snap.bytes += uint64(len(e.GetData()))
	return eachEntryRecord([]*pb.Entry{e}, func(_ uint64, rec twopc.Record) error {
		return r.state.Restore(rec)
	})
}
