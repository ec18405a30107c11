package twopc

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Participant snapshots. A snapshot of the machine holds what its log
// would rebuild: the highest coordinator epoch seen, every prepared branch
// (id, attempt, operation) and every finished branch (state, attempt,
// generation, reason). Waiting branches are not in it (nothing of them is
// logged). The Resource's own snapshot (taken in the same turn) already
// holds the prepared branches' tentative changes, so RestoreSnapshot takes
// their locks again but does not call Resource.Prepare.
//
//	version byte (1)
//	maxEpoch uvarint
//	prepared uvarint count, then each: tx, attempt uvarint, op
//	finished uvarint count, then each: tx, state byte, attempt uvarint, gen uvarint, reason
//	heuristic decisions, only if there are any (heuristic.go)
//
// (strings and byte slices: uvarint length + bytes)

const snapshotVersion = 1

// AppendSnapshot appends the machine's snapshot to b. Take it between two
// Readies (HasReady false): the state must be what the log holds.
func (p *Participant) AppendSnapshot(b []byte) ([]byte, error) {
	if p.HasReady() {
		return b, fmt.Errorf("twopc: %s: snapshot with a Ready not carried out", p.cfg.ID)
	}
	b = append(b, snapshotVersion)
	b = binary.AppendUvarint(b, p.maxEpoch)
	var prepared []string
	for tx, br := range p.branches {
		if br.state == BranchPrepared {
			prepared = append(prepared, tx)
		}
	}
	slices.Sort(prepared)
	b = binary.AppendUvarint(b, uint64(len(prepared)))
	for _, tx := range prepared {
		br := p.branches[tx]
		b = appendString(b, tx)
		b = binary.AppendUvarint(b, uint64(br.attempt))
		b = binary.AppendUvarint(b, uint64(len(br.op)))
		b = append(b, br.op...)
	}
	b = binary.AppendUvarint(b, uint64(p.finished.Len()))
	p.finished.All(func(tx string, v txVal, reason string) bool {
		b = appendString(b, tx)
		b = append(b, v.state)
		b = binary.AppendUvarint(b, uint64(v.a))
		b = binary.AppendUvarint(b, uint64(v.b))
		b = appendString(b, reason)
		return true
	})
	return p.appendHeuristics(b), nil
}

// RestoreSnapshot loads a snapshot into a participant that has restored
// nothing yet; the Resource must already hold its own snapshot of the same
// turn. Records logged after the snapshot are then replayed with Restore.
func (p *Participant) RestoreSnapshot(b []byte) error {
	if p.started || p.restored || len(p.branches) > 0 || p.finished.Len() > 0 {
		return fmt.Errorf("twopc: %s: RestoreSnapshot on a participant that is not fresh", p.cfg.ID)
	}
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != snapshotVersion {
		return fmt.Errorf("%w: snapshot version %d", ErrDecode, v)
	}
	p.maxEpoch = d.uvarint()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("prepared count %d exceeds payload", n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		tx := d.string()
		attempt := d.uvarint()
		op := d.bytes()
		if d.err != nil {
			break
		}
		op = slices.Clone(op)
		keys, err := p.res.Keys(tx, op)
		if err != nil {
			return fmt.Errorf("%w: snapshot: %s: keys: %v", ErrBadRecord, tx, err)
		}
		granted, err := p.locks.Acquire(tx, keys)
		if err != nil || !granted {
			return fmt.Errorf("%w: snapshot: %s: locks not free (granted=%v, err=%v)", ErrBadRecord, tx, granted, err)
		}
		p.branches[tx] = &branch{state: BranchPrepared, op: op, attempt: uint32(max(attempt, 1))}
		p.inDoubt++
	}
	n = d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("finished count %d exceeds payload", n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		tx := d.string()
		st := d.byte()
		a := d.uvarint()
		g := d.uvarint()
		reason := d.string()
		if d.err == nil && BranchState(st) != BranchCommitted && BranchState(st) != BranchAborted {
			d.fail("finished branch %s in state %d", tx, st)
		}
		if d.err == nil {
			p.finished.Put(tx, txVal{state: st, a: uint32(a), b: uint32(g)}, reason)
		}
	}
	p.restoreHeuristics(&d)
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("snapshot: %w", d.err)
	}
	p.restored = true
	return nil
}
