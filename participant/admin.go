package participant

import (
	"context"
	"errors"
	"time"

	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// ForceOutcome decides the in-doubt branch of tx by hand
// (twopc.Participant.ForceOutcome) and returns once its HEURISTIC record
// is durable.
func (s *Service) ForceOutcome(ctx context.Context, tx string, commit bool, note string) error {
	inc := s.inc.Load()
	var (
		ferr error
		seq  uint64 // the HEURISTIC record's seq once appended
	)
	err := inc.node.Do(ctx, inc.done, func() {
		// The loop appends the pending Ready's records, then this one.
		ahead := len(inc.m.Ready().Records)
		if ferr = inc.m.ForceOutcome(tx, commit, note); ferr == nil {
			seq = inc.log.LastSeq() + uint64(ahead) + 1
		}
	})
	if err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for inc.log.DurableSeq() < seq {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-inc.done:
			return errors.New("participant: the service stopped or crashed before the heuristic decision was durable; check its state")
		}
	}
	return nil
}

// Records calls fn for every record of the current log about tx, in log
// order, with its sequence number. It reads the log while the service
// runs: records not yet written may be missing, and records compacted
// into a snapshot are gone.
func (s *Service) Records(tx string, fn func(seq uint64, r twopc.Record)) error {
	return s.inc.Load().log.Replay(func(r wal.Record) error {
		rec, err := twopc.DecodeRecord(twopc.RecType(r.Type), r.Data)
		if err != nil || rec.Tx != tx {
			return nil
		}
		fn(r.Seq, rec)
		return nil
	})
}
