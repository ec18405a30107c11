package node

import (
	"fmt"

	"github.com/dtx-dev/dtx/wal"
)

// SnapshotHooks cut WriteSnapshot for crash tests.
type SnapshotHooks struct {
	// Step is called after each step of writing the file and may stop
	// the write there with an error (returned as is).
	Step func(wal.SnapshotStep) error
	// MayCompact, if set, is called before the log is compacted (after
	// the snapshot is durable); an error stops the compaction and is
	// returned. A coordinator writes its marker file there.
	MayCompact func() error
	// BeforeCompact is called before the log is compacted up to upTo.
	BeforeCompact func(upTo uint64)
	// Table is called before each append to a table file (Tables.Hook)
	// and may stop it with an error.
	Table func(file string) error
}

// WriteSnapshot makes a snapshot durable, off the loop (a participant's,
// taken by participant.TakeSnapshot, or a coordinator's checkpoint
// snapshot): it syncs log up to the snapshot's record (a snapshot may never get
// ahead of its log: if the log then lost its unsynced tail, new records
// would reuse seqs the snapshot claims to cover), writes the file
// (wal.WriteSnapshot), checks it reads back, keeps it and the newest valid
// older snapshot, removes the others, and compacts the log up to that
// older one, so that recovery can fall back to it. It returns the seq the
// log is kept from (0: all of it).
func WriteSnapshot(fsys wal.FS, dir string, log *wal.Log, seq uint64, data [][]byte, h SnapshotHooks) (keptFrom uint64, err error) {
	if err := log.Sync(); err != nil {
		return 0, err
	}
	if err := wal.WriteSnapshotParts(fsys, dir, seq, data, h.Step); err != nil {
		return 0, err
	}
	if err := wal.CheckSnapshot(fsys, dir, seq); err != nil {
		return 0, fmt.Errorf("snapshot not readable after writing it: %w", err)
	}
	older, ok := wal.OlderSnapshot(fsys, dir, seq)
	keep := []uint64{seq}
	if ok {
		keep = append(keep, older)
	}
	if err := wal.PruneSnapshots(fsys, dir, keep...); err != nil {
		return 0, err
	}
	if !ok {
		return 0, nil
	}
	if h.MayCompact != nil {
		if err := h.MayCompact(); err != nil {
			return 0, err
		}
	}
	if h.BeforeCompact != nil {
		h.BeforeCompact(older + 1)
	}
	if err := log.Compact(older + 1); err != nil {
		return 0, err
	}
	return older + 1, nil
}
