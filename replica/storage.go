package replica

import (
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/wal"
)

// Record types of a replica's raft log on disk (a wal.Log).
const (
	diskEntry     uint8 = 1 // one raft entry (raftpb.Entry)
	diskHardState uint8 = 2 // the HardState (term, vote, commit)
	diskSnapshot  uint8 = 3 // a snapshot's metadata (raftpb.Snapshot)
)

// storage is a replica's raft storage: raft.MemoryStorage, which raft
// reads, in front of a wal.Log, which makes it durable. Every Ready's
// entries and HardState are appended to the wal (synced when the Ready
// says so) before the Ready's messages leave (raft's own ordering rule);
// a restart replays the wal into a fresh MemoryStorage. A nil wal keeps
// everything in memory (tests that stop a replica without a restart).
type storage struct {
	*raft.MemoryStorage
	wal *wal.Log
	// seqOf[i] is the wal seq of the record holding entry base+i: the
	// oldest record still needed once the log is compacted up to it.
	base  uint64
	seqOf []uint64
	hs    *pb.HardState
	buf   []wal.Entry
}

// openStorage opens (or creates) the raft log in cfg.Dir, or a memory
// only storage if cfg.Dir is empty. peers bootstrap a new group: every
// replica of a new group starts from the same configuration (a snapshot
// at index 0 naming the voters), so none needs a configuration entry.
func openStorage(cfg wal.Config, peers []uint64) (*storage, error) {
	s := &storage{MemoryStorage: raft.NewMemoryStorage(), hs: &pb.HardState{}}
	var snap *pb.Snapshot
	var ents []*pb.Entry
	var seqs []uint64
	if cfg.Dir != "" {
		log, err := wal.Open(cfg)
		if err != nil {
			return nil, fmt.Errorf("replica: open raft log: %w", err)
		}
		s.wal = log
		err = log.Replay(func(r wal.Record) error {
			switch r.Type {
			case diskEntry:
				e := &pb.Entry{}
				if err := proto.Unmarshal(r.Data, e); err != nil {
					return fmt.Errorf("raft log record %d: entry: %w", r.Seq, err)
				}
				ents, seqs = appendEntry(ents, seqs, e, r.Seq)
			case diskHardState:
				hs := &pb.HardState{}
				if err := proto.Unmarshal(r.Data, hs); err != nil {
					return fmt.Errorf("raft log record %d: hard state: %w", r.Seq, err)
				}
				s.hs = hs
			case diskSnapshot:
				sn := &pb.Snapshot{}
				if err := proto.Unmarshal(r.Data, sn); err != nil {
					return fmt.Errorf("raft log record %d: snapshot: %w", r.Seq, err)
				}
				snap = sn
			default:
				return fmt.Errorf("raft log record %d: unknown type %d", r.Seq, r.Type)
			}
			return nil
		})
		if err != nil {
			log.Close()
			return nil, fmt.Errorf("replica: %w", err)
		}
	}
	if snap == nil {
		// A new group (or a log whose first records were never synced):
		// the voters, at index 0.
		snap = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(0)), Term: new(uint64(0)), ConfState: &pb.ConfState{Voters: peers}}}
	}
	if err := s.ApplySnapshot(snap); err != nil {
		s.close()
		return nil, fmt.Errorf("replica: raft log snapshot: %w", err)
	}
	si := snap.GetMetadata().GetIndex()
	for len(ents) > 0 && ents[0].GetIndex() <= si {
		ents, seqs = ents[1:], seqs[1:]
	}
	if len(ents) > 0 && ents[0].GetIndex() != si+1 {
		s.close()
		return nil, fmt.Errorf("replica: raft log: entries start at %d, after the snapshot at %d: entries in between are missing", ents[0].GetIndex(), si)
	}
	if err := s.MemoryStorage.Append(ents); err != nil {
		s.close()
		return nil, fmt.Errorf("replica: raft log: %w", err)
	}
	s.base, s.seqOf = si+1, seqs
	if si := snap.GetMetadata().GetIndex(); !raft.IsEmptyHardState(s.hs) && s.hs.GetCommit() < si {
		// A snapshot holds only committed entries: its index is
		// committed, whatever an older HardState says (a log written
		// before the snapshot's own HardState was synced with it).
		hs := proto.Clone(s.hs).(*pb.HardState)
		hs.Commit = &si
		s.hs = hs
	}
	if !raft.IsEmptyHardState(s.hs) {
		if err := s.SetHardState(s.hs); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// appendEntry adds e (read at seq) to ents under raft's rule: an entry at
// an index already held replaces it and everything after it.
func appendEntry(ents []*pb.Entry, seqs []uint64, e *pb.Entry, seq uint64) ([]*pb.Entry, []uint64) {
	if len(ents) > 0 {
		first, last := ents[0].GetIndex(), ents[len(ents)-1].GetIndex()
		switch i := e.GetIndex(); {
		case i == last+1:
		case i >= first && i <= last:
			ents, seqs = ents[:i-first], seqs[:i-first]
		default:
			// Before the first or past a gap: records left over from
			// before a compaction; what follows starts over.
			ents, seqs = ents[:0], seqs[:0]
		}
	}
	return append(ents, e), append(seqs, seq)
}

// save makes a Ready's snapshot, entries and HardState durable (the wal
// syncs when sync is set) and hands them to the MemoryStorage.
func (s *storage) save(snap *pb.Snapshot, hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	if !raft.IsEmptySnap(snap) {
		// The HardState written (and synced) with the snapshot must be
		// this Ready's: raft does not ask to sync a Ready whose only news
		// is a snapshot and a higher commit, so the HardState appended
		// after it may be lost, and an older one's commit is below the
		// snapshot's index, which raft refuses at the next start.
		if !raft.IsEmptyHardState(hs) {
			s.hs = hs
		}
		if err := s.saveSnapshot(snap, true); err != nil {
			return err
		}
		if err := s.ApplySnapshot(snap); err != nil {
			return err
		}
		s.base, s.seqOf = snap.GetMetadata().GetIndex()+1, s.seqOf[:0]
	}
	if s.wal != nil && (len(ents) > 0 || !raft.IsEmptyHardState(hs)) {
		s.buf = s.buf[:0]
		for _, e := range ents {
			b, err := proto.Marshal(e)
			if err != nil {
				return err
			}
			s.buf = append(s.buf, wal.Entry{Type: diskEntry, Data: b})
		}
		if !raft.IsEmptyHardState(hs) {
			b, err := proto.Marshal(hs)
			if err != nil {
				return err
			}
			s.buf = append(s.buf, wal.Entry{Type: diskHardState, Data: b})
		}
		var last uint64
		var err error
		if sync {
			last, err = s.wal.Append(s.buf...)
		} else {
			last, err = s.wal.AppendNoSync(s.buf...)
		}
		if err != nil {
			return fmt.Errorf("replica: raft log: %w", err)
		}
		first := last - uint64(len(s.buf)) + 1
		for i, e := range ents {
			if idx := e.GetIndex(); idx >= s.base && idx-s.base <= uint64(len(s.seqOf)) {
				s.seqOf = append(s.seqOf[:idx-s.base], first+uint64(i))
			}
		}
	}
	if err := s.MemoryStorage.Append(ents); err != nil {
		return err
	}
	if !raft.IsEmptyHardState(hs) {
		s.hs = hs
		return s.SetHardState(hs)
	}
	return nil
}

// saveSnapshot writes a snapshot's record and the current HardState
// (both synced), so that compacting the wal below them keeps both.
func (s *storage) saveSnapshot(snap *pb.Snapshot, withHS bool) error {
	if s.wal == nil {
		return nil
	}
	b, err := proto.Marshal(snap)
	if err != nil {
		return err
	}
	es := []wal.Entry{{Type: diskSnapshot, Data: b}}
	if withHS && !raft.IsEmptyHardState(s.hs) {
		h, err := proto.Marshal(s.hs)
		if err != nil {
			return err
		}
		es = append(es, wal.Entry{Type: diskHardState, Data: h})
	}
	if _, err := s.wal.Append(es...); err != nil {
		return fmt.Errorf("replica: raft log: %w", err)
	}
	return nil
}

// compact drops the entries up to index (applied, so no longer needed:
// the entries after it replay into the whole machine) and records a
// snapshot at index with data; then removes the wal's segments that hold
// nothing after it.
func (s *storage) compact(index uint64, cs *pb.ConfState, data []byte) error {
	snap, err := s.CreateSnapshot(index, cs, data)
	if err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return nil
		}
		return err
	}
	if err := s.saveSnapshot(snap, true); err != nil {
		return err
	}
	if err := s.Compact(index); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return err
	}
	if index+1 < s.base {
		return nil
	}
	drop := index + 1 - s.base
	if drop > uint64(len(s.seqOf)) {
		drop = uint64(len(s.seqOf))
	}
	var upTo uint64
	if drop < uint64(len(s.seqOf)) {
		upTo = s.seqOf[drop]
	}
	s.seqOf = append(s.seqOf[:0], s.seqOf[drop:]...)
	s.base += drop
	if s.wal != nil && upTo > 0 {
		return s.wal.Compact(upTo)
	}
	return nil
}

func (s *storage) close() error {
	if s.wal == nil {
		return nil
	}
	return s.wal.Close()
}
