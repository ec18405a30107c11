package twopc

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Outcome retention (CoordinatorConfig.Retention, RetainMax).
//
// Finished transactions live in Generations generations (participant.go
// says why eight). The current generation (done) takes every new outcome;
// every GenerationTicks(Retention) ticks the coordinator has run (or once
// the current generation holds a seventh of RetainMax outcomes, checked
// each tick) it rotates: the current generation joins the earlier ones
// (older), packed; once Generations-1 are there the oldest is dropped,
// keeping only its id hashes (an expired set), and the oldest of
// Generations-1 expired sets goes. A CHECKPOINT record marks each rotation
// in the log and carries every unfinished transaction, so that the log
// before the checkpoint CheckpointsKept-1 rotations back is no longer
// needed (a replicated coordinator compacted its raft log so; a single one
// takes snapshots, csnap.go, and needs less).
//
// So for an id whose outcome was decided in generation g (ticks of running
// time, a restart does not count its downtime), with a span of
// GenerationTicks(Retention), Generations-1 of which cover Retention:
//
//   - until rotation g+Generations, at least Retention ticks after the
//     outcome and less than Generations spans (about 8/7 of Retention): a
//     resubmission gets the first outcome, an inquiry the true answer;
//   - until rotation g+2×Generations-1 (at least 2×Retention, less than
//     about 15/7 of it): a resubmission is refused with ErrOutcomeExpired
//     (never run again); an inquiry or a late YES is answered ABORT
//     without remembering it — safe because a participant ACKs COMMIT
//     only after its COMMITTED is durable, so no branch of a committed,
//     ENDed transaction is in doubt;
//   - after that the id is unknown: a resubmission runs as a new
//     transaction. A client that resubmits an id must do so within
//     2×Retention of its first outcome to be sure of not running it twice.
//
// Retention 0 keeps every outcome forever (no checkpoint, no rotation).

// CheckpointsKept is how many checkpoints a replay must start from the
// oldest of to rebuild every generation and expired set: the oldest
// expired set is of the generation that began 2×Generations-2 rotations
// back.
const CheckpointsKept = 2*Generations - 1

// CheckpointChunk bounds how many unfinished transactions one CHECKPOINT
// record carries; a checkpoint with more is split into several records, the
// first (Attempt 0) marking the rotation and the others (Attempt 1, 2, ...)
// continuing it.
const CheckpointChunk = 1024

// RetentionStats describes the outcome tables.
type RetentionStats struct {
	// Current counts the outcomes of the current generation, Previous
	// those of the earlier ones; Expired the ids remembered only as
	// expired.
	Current, Previous, Expired int
	// Checkpoints counts the rotations of this incarnation.
	Checkpoints uint64
}

// RetentionStats returns the sizes of the outcome tables.
func (c *Coordinator) RetentionStats() RetentionStats {
	s := RetentionStats{Current: c.done.Len(), Checkpoints: c.checkpoints}
	for _, t := range c.older {
		s.Previous += t.Len()
	}
	s.Expired = c.expiredN
	return s
}

// known reports whether tx's outcome is retained.
func (c *Coordinator) known(tx string) bool {
	h := txHash(c.seed, tx)
	if c.done.hasH(tx, h) {
		return true
	}
	for _, t := range c.older {
		if t.hasH(tx, h) {
			return true
		}
	}
	return false
}

// expired reports whether tx's outcome was dropped but its id is still
// remembered. The sets a rotation makes share one key (one hash per
// lookup); sets restored from a snapshot may each have their own.
func (c *Coordinator) expired(tx string) bool {
	var k0, k1, h uint64
	hashed := false
	for i := range c.exps {
		e := &c.exps[i]
		if e.Len() == 0 {
			continue
		}
		if !hashed || e.k0 != k0 || e.k1 != k1 {
			k0, k1, h, hashed = e.k0, e.k1, e.hash(tx), true
		}
		if e.hasH(h) {
			return true
		}
	}
	return false
}

// Expired reports whether tx was decided but its outcome is past the
// retention window: the id is still remembered (a resubmission is refused
// with ErrOutcomeExpired), whether it committed is not. An id that is
// retained, in flight or unknown is not expired.
func (c *Coordinator) Expired(tx string) bool {
	_, active := c.active[tx]
	return !active && !c.known(tx) && c.expired(tx)
}

// rotate starts a new generation: the current one joins the earlier ones;
// past Generations-1 of those the oldest becomes an expired set, and past
// Generations-1 expired sets the oldest is dropped.
func (c *Coordinator) rotate() {
	for len(c.older) >= Generations-1 { // more only from a snapshot of another build
		drop := c.older[0]
		var e expiredSet
		if n := len(c.exps); n > 0 {
			e = drop.expiredSetKey(c.exps[n-1].k0, c.exps[n-1].k1)
		} else {
			e = drop.expiredSet()
		}
		c.exps = append(c.exps, e)
		c.older[0] = nil
		c.older = append(c.older[:0], c.older[1:]...)
	}
	for len(c.exps) > Generations-1 {
		c.exps[0] = expiredSet{}
		c.exps = append(c.exps[:0], c.exps[1:]...)
	}
	c.expiredN = 0
	for i := range c.exps {
		c.expiredN += c.exps[i].Len()
	}
	c.done.pack()
	c.older = append(c.older, c.done)
	c.done = newTxTableSeed(c.seed)
	c.genStart = c.now
	c.checkpoints++
}

// empty reports whether the coordinator holds nothing: no transaction in
// flight, no outcome, no expired id.
func (c *Coordinator) empty() bool {
	if len(c.active) > 0 || c.done.Len() > 0 || c.expiredN > 0 {
		return false
	}
	for _, t := range c.older {
		if t.Len() > 0 {
			return false
		}
	}
	return true
}

// maybeCheckpoint rotates and logs a checkpoint when the generation is due.
func (c *Coordinator) maybeCheckpoint() {
	if c.cfg.Retention == 0 {
		return
	}
	if c.now-c.genStart < GenerationTicks(c.cfg.Retention) &&
		(c.cfg.RetainMax <= 0 || c.done.Len() < (c.cfg.RetainMax+Generations-2)/(Generations-1)) {
		return
	}
	if c.empty() {
		// Nothing to rotate: a rotation would change nothing, so an idle
		// coordinator logs nothing (no CHECKPOINT every span).
		c.genStart = c.now
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
