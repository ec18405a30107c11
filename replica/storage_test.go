package replica

import (
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/dtx-dev/dtx/wal"
)

func ents(term uint64, from, to uint64) []*pb.Entry {
	var out []*pb.Entry
	for i := from; i <= to; i++ {
		out = append(out, &pb.Entry{Term: new(term), Index: new(i), Data: make([]byte, 100)})
	}
	return out
}

// TestStorageReopen: entries (one run overwritten by a later term), the
// HardState and a compaction come back after a restart, from the wal
// alone, and the wal keeps no segment wholly before the compaction.
func TestStorageReopen(t *testing.T) {
	lc := wal.DefaultConfig(t.TempDir())
	lc.SegmentSize = 4 << 10
	lc.PreallocSize = 0
	s, err := openStorage(lc, []uint64{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.save(nil, &pb.HardState{Term: new(uint64(1)), Commit: new(uint64(0))}, ents(1, 1, 200), true); err != nil {
		t.Fatal(err)
	}
	// A new leader's entries replace 150.. (never committed).
	if err := s.save(nil, &pb.HardState{Term: new(uint64(2)), Commit: new(uint64(180))}, ents(2, 150, 180), true); err != nil {
		t.Fatal(err)
	}
	cs := &pb.ConfState{Voters: []uint64{1, 2, 3}}
	if err := s.compact(120, cs, legacyData); err != nil {
		t.Fatal(err)
	}
	segsBefore := s.wal.FirstSeq()
	s.close()
	s, err = openStorage(lc, []uint64{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 121 || last != 180 {
		t.Fatalf("after reopen: entries %d..%d, want 121..180", first, last)
	}
	for i, want := range map[uint64]uint64{121: 1, 149: 1, 150: 2, 180: 2} {
		if term, err := s.Term(i); err != nil || term != want {
			t.Fatalf("term of %d = %d, %v; want %d", i, term, err, want)
		}
	}
	hs, _, _ := s.InitialState()
	if hs.GetTerm() != 2 || hs.GetCommit() != 180 {
		t.Fatalf("hard state after reopen: %v", hs)
	}
	snap, _ := s.Snapshot()
	if snap.GetMetadata().GetIndex() != 120 || len(snap.GetMetadata().GetConfState().GetVoters()) != 3 {
		t.Fatalf("snapshot after reopen: %v", snap.GetMetadata())
	}
	if segsBefore <= 1 {
		t.Fatalf("the wal was not compacted (first seq %d)", segsBefore)
	}
}

// TestStorageSnapshotSurvivesPowerLoss: a follower installs a snapshot
// from its leader in a Ready that raft does not ask to sync (only the
// snapshot and a higher commit are new); a power loss then keeps only
// what was synced, which is the snapshot's record and the HardState
// written with it. That HardState must be the Ready's (commit at least the
// snapshot's index): with the one before it (commit 21 under a snapshot at
// 33) raft refuses to start ("state.commit 21 is out of range"). A log
// written that way by an older build is repaired at open. Found by the
// replicated simulation (seed 1004338).
func TestStorageSnapshotSurvivesPowerLoss(t *testing.T) {
	fsys := wal.NewMemFS(1)
	lc := wal.Config{Dir: "/r", FS: fsys, SegmentSize: 4 << 10}
	peers := []uint64{1, 2, 3}
	s, err := openStorage(lc, peers)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.save(nil, &pb.HardState{Term: new(uint64(1)), Vote: new(uint64(2)), Commit: new(uint64(21))}, ents(1, 1, 21), true); err != nil {
		t.Fatal(err)
	}
	snap := &pb.Snapshot{Data: legacyData, Metadata: &pb.SnapshotMetadata{Index: new(uint64(33)), Term: new(uint64(1)), ConfState: &pb.ConfState{Voters: peers}}}
	if err := s.save(snap, &pb.HardState{Term: new(uint64(1)), Vote: new(uint64(2)), Commit: new(uint64(33))}, nil, false); err != nil {
		t.Fatal(err)
	}
	fsys.Crash(wal.CrashSyncedOnly)
	s, err = openStorage(lc, peers)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if c := s.hs.GetCommit(); c < 33 {
		t.Fatalf("after the power loss the HardState's commit is %d, below the snapshot at 33", c)
	}
	if _, err := raft.NewRawNode(&raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: s, Applied: 33,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16}); err != nil {
		t.Fatalf("raft refuses the reopened log: %v", err)
	}
}
