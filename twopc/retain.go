package twopc

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Outcome retention (CoordinatorConfig.Retention, RetainMax).
//
// Finished transactions live in generations. The current generation (done)
// takes every new outcome; every Retention ticks the coordinator has run
// (or once the current generation holds RetainMax outcomes, checked each
// tick) it rotates: the previous generation's outcomes are dropped, keeping
// only their id hashes (expired), the current generation becomes the
// previous one and a new one begins. A CHECKPOINT record marks each
// rotation in the log and carries every unfinished transaction, so that
// the log before the checkpoint two rotations back is no longer needed
// (a replicated coordinator compacts its raft log so; a single one takes
// snapshots, csnap.go, and needs less).
//
// So for an id whose outcome was decided in generation g (ticks of running
// time, a restart does not count its downtime):
//
//   - until rotation g+2, at least Retention ticks after the outcome and
//     less than 2×Retention: a resubmission gets the first outcome, an
//     inquiry the true answer;
//   - until rotation g+3 (at least 2×Retention, less than 3×Retention): a
//     resubmission is refused with ErrOutcomeExpired (never run again);
//     an inquiry or a late YES is answered ABORT without remembering it —
//     safe because a participant ACKs COMMIT only after its COMMITTED is
//     durable, so no branch of a committed, ENDed transaction is in doubt;
//   - after that the id is unknown: a resubmission runs as a new
//     transaction. A client that resubmits an id must do so within
//     2×Retention of its first outcome to be sure of not running it twice.
//
// Retention 0 keeps every outcome forever (no checkpoint, no rotation).

// CheckpointChunk bounds how many unfinished transactions one CHECKPOINT
// record carries; a checkpoint with more is split into several records, the
// first (Attempt 0) marking the rotation and the others (Attempt 1, 2, ...)
// continuing it.
const CheckpointChunk = 1024

// RetentionStats describes the outcome tables.
type RetentionStats struct {
	// Current and Previous count the outcomes of the two retained
	// generations; Expired the ids remembered only as expired.
	Current, Previous, Expired int
	// Checkpoints counts the rotations of this incarnation.
	Checkpoints uint64
}

// RetentionStats returns the sizes of the outcome tables.
func (c *Coordinator) RetentionStats() RetentionStats {
	s := RetentionStats{Current: c.done.Len(), Checkpoints: c.checkpoints}
	if c.prev != nil {
		s.Previous = c.prev.Len()
	}
	s.Expired = c.expiredN
	return s
}

// known reports whether tx's outcome is retained.
func (c *Coordinator) known(tx string) bool {
	h := txHash(c.seed, tx)
	return c.done.hasH(tx, h) || (c.prev != nil && c.prev.hasH(tx, h))
}

// expired reports whether tx's outcome was dropped but its id is still
// remembered.
func (c *Coordinator) expired(tx string) bool { return c.exp.has(tx) }

// Expired reports whether tx was decided but its outcome is past the
// retention window: the id is still remembered (a resubmission is refused
// with ErrOutcomeExpired), whether it committed is not. An id that is
// retained, in flight or unknown is not expired.
func (c *Coordinator) Expired(tx string) bool {
	_, active := c.active[tx]
	return !active && !c.known(tx) && c.expired(tx)
}

// rotate starts a new generation.
func (c *Coordinator) rotate() {
	c.exp, c.expiredN = expiredSet{}, 0
	if c.prev != nil {
		c.exp = c.prev.expiredSet()
		c.expiredN = c.prev.Len()
	}
	c.prev = c.done
	c.prev.pack()
	c.done = newTxTableSeed(c.seed)
	c.genStart = c.now
	c.checkpoints++
}

// maybeCheckpoint rotates and logs a checkpoint when the generation is due.
func (c *Coordinator) maybeCheckpoint() {
	if c.cfg.Retention == 0 {
		return
	}
	if c.now-c.genStart < c.cfg.Retention && (c.cfg.RetainMax <= 0 || c.done.Len() < c.cfg.RetainMax) {
		return
	}
	c.rotate()
	ids := make([]string, 0, len(c.active))
	for id := range c.active {
		ids = append(ids, id)
	}
	slices.Sort(ids) // deterministic
	part := uint32(0)
	for {
		n := min(len(ids), CheckpointChunk)
		var op []byte
		for _, id := range ids[:n] {
			op = appendCheckpointTx(op, c.active[id])
		}
		c.rd.Records = append(c.rd.Records, Record{Type: RecCheckpoint, Epoch: c.epoch, Op: op, Attempt: part})
		ids = ids[n:]
		part++
		if len(ids) == 0 {
			return
		}
	}
}

// A checkpointed transaction: id, state, attempt, node count, then per
// node its name and a flag byte (1: acknowledged COMMIT).
func appendCheckpointTx(b []byte, t *coordTx) []byte {
	b = appendString(b, t.id)
	b = append(b, byte(t.state))
	b = binary.AppendUvarint(b, uint64(t.attempt))
	b = binary.AppendUvarint(b, uint64(len(t.nodes)))
	for i, n := range t.nodes {
		b = appendString(b, n)
		var f byte
		if t.acked[i] {
			f = 1
		}
		b = append(b, f)
	}
	return b
}

// restoreCheckpoint applies a CHECKPOINT record: the head rotates the
// generations as the live coordinator did; every record adds the
// unfinished transactions it carries that the replay does not know yet
// (their earlier records may be compacted away).
func (c *Coordinator) restoreCheckpoint(r Record) error {
	if r.Attempt == 0 {
		c.rotate()
		c.epoch = max(c.epoch, r.Epoch)
	}
	d := decoder{b: r.Op}
	for len(d.b) > 0 && d.err == nil {
		id := d.string()
		st := CoordState(d.byte())
		attempt := d.uvarint()
		n := d.uvarint()
		if d.err == nil && n > uint64(len(d.b)) {
			d.fail("node count %d exceeds payload", n)
		}
		if d.err != nil {
			break
		}
		t := &coordTx{id: id, state: st, attempt: uint32(max(attempt, 1))}
		for i := uint64(0); i < n && d.err == nil; i++ {
			t.nodes = append(t.nodes, d.string())
			t.acked = append(t.acked, d.byte() == 1)
		}
		t.votes = make([]Vote, len(t.nodes))
		if d.err != nil {
			break
		}
		if st != CoordCollecting && st != CoordCommitting {
			return fmt.Errorf("%w: CHECKPOINT: %s in state %v", ErrBadRecord, id, st)
		}
		if _, ok := c.active[id]; ok {
			continue
		}
		if c.known(id) {
			return fmt.Errorf("%w: CHECKPOINT: %s unfinished but its outcome is known", ErrBadRecord, id)
		}
		c.active[id] = t
	}
	if d.err != nil {
		return fmt.Errorf("%w: CHECKPOINT: %v", ErrBadRecord, d.err)
	}
	return nil
}
