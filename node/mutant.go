package node

import (
	"fmt"

	"github.com/dtx-dev/dtx/internal/mutant"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// The bugs package mutant can plant in the carry and replay paths. They run
// only when Hooks.Mutants is not zero, which production never sets.

func hasRecord(rd *twopc.Ready, t twopc.RecType) bool {
	for i := range rd.Records {
		if rd.Records[i].Type == t {
			return true
		}
	}
	return false
}

// mutantSync is whether the mutant driver syncs rd (sync: whether the
// correct one does).
func mutantSync(ms mutant.Set, rd *twopc.Ready, sync bool) bool {
	switch {
	case ms.Has(mutant.SkipCommitSync) && hasRecord(rd, twopc.RecCommit):
		return false
	case ms.Has(mutant.NoForce):
		return len(rd.Outcomes) > 0
	case ms.Has(mutant.ReplyUnforced):
		for i := range rd.Records {
			if rd.Records[i].Force {
				return true
			}
		}
		return false
	}
	return sync
}

// mutantEarly splits rd's messages into those the mutant driver sends
// before the records are written (only the kind its bug is about) and the
// rest, and says whether the outcomes go early too.
func mutantEarly(ms mutant.Set, rd *twopc.Ready) (early, rest []twopc.Message, outcomes bool) {
	var typ twopc.MsgType
	switch {
	case ms.Has(mutant.CommitBeforeLog) && hasRecord(rd, twopc.RecCommit):
		typ, outcomes = twopc.MsgCommit, true
	case ms.Has(mutant.VoteBeforePrepared) && hasRecord(rd, twopc.RecPrepared):
		typ = twopc.MsgVote
	case ms.Has(mutant.AckBeforeCommitted) && hasRecord(rd, twopc.RecCommitted):
		typ = twopc.MsgAck
	default:
		return nil, rd.Messages, false
	}
	for _, m := range rd.Messages {
		if m.Type == typ {
			early = append(early, m)
		} else {
			rest = append(rest, m)
		}
	}
	return early, rest, outcomes
}

// mutantReplay is Replay with the replay bugs of ms planted.
func mutantReplay(log *wal.Log, restore func(twopc.Record, uint64) error, ms mutant.Set) error {
	var held *twopc.Record // ReplayDropsLast: one record behind, the last never handed over
	var heldSeq uint64
	return log.Replay(func(r wal.Record) error {
		rec, err := twopc.DecodeRecord(twopc.RecType(r.Type), r.Data)
		if err != nil {
			return fmt.Errorf("log record %d: %w", r.Seq, err)
		}
		if ms.Has(mutant.ReplaySkipsCommit) && rec.Type == twopc.RecCommit {
			return nil
		}
		if ms.Has(mutant.ReplayDropsLast) {
			prev, prevSeq := held, heldSeq
			held, heldSeq = &rec, r.Seq
			if prev == nil {
				return nil
			}
			return restore(*prev, prevSeq)
		}
		return restore(rec, r.Seq)
	})
}
