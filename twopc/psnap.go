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
//	version byte (2)
//	maxEpoch uvarint
//	prepared uvarint count, then each: tx, attempt uvarint, op
//	finished uvarint count, then each: tx, state byte, attempt uvarint, gen uvarint, reason
//	  (the previous generation's branches)
//	finished, the same, of the current generation
//	forgot byte (1: a generation was dropped)
//
// (strings and byte slices: uvarint length + bytes). Version 1 has one
// list of finished branches and no flag; it loads as the current
// generation. A restored current generation starts its Retention afresh
// (the safe side: remembered longer).

const (
	snapshotVersion   = 2
	snapshotVersionV1 = 1
)

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
	b = appendFinished(b, p.prevFin)
	b = appendFinished(b, p.finished)
	var f byte
	if p.forgot {
		f = 1
	}
	return append(b, f), nil
}

func appendFinished(b []byte, t *txTable) []byte {
	if t == nil {
		return binary.AppendUvarint(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(t.Len()))
	t.All(func(tx string, v txVal, reason string) bool {
		b = appendString(b, tx)
		b = append(b, v.state)
		b = binary.AppendUvarint(b, uint64(v.a))
		b = binary.AppendUvarint(b, uint64(v.b))
		b = appendString(b, reason)
		return true
	})
	return b
}

// RestoreSnapshot loads a snapshot into a participant that has restored
// nothing yet; the Resource must already hold its own snapshot of the same
// turn. Records logged after the snapshot are then replayed with Restore.
func (p *Participant) RestoreSnapshot(b []byte) error {
	if p.started || p.restored || len(p.branches) > 0 || p.finished.Len() > 0 {
		return fmt.Errorf("twopc: %s: RestoreSnapshot on a participant that is not fresh", p.cfg.ID)
	}
	d := decoder{b: b}
	version := d.byte()
	if d.err == nil && version != snapshotVersion && version != snapshotVersionV1 {
		return fmt.Errorf("%w: snapshot version %d", ErrDecode, version)
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
	if version == snapshotVersionV1 {
		readFinished(&d, p.finished)
	} else {
		prev := newTxTable()
		readFinished(&d, prev)
		readFinished(&d, p.finished)
		if prev.Len() > 0 {
			p.prevFin = prev
		}
		switch f := d.byte(); {
		case d.err != nil:
		case f > 1:
			d.fail("forgot flag %d", f)
		default:
			p.forgot = f == 1
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("snapshot: %w", d.err)
	}
	p.restored = true
	return nil
}

func readFinished(d *decoder, t *txTable) {
	n := d.uvarint()
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
			t.Put(tx, txVal{state: st, a: uint32(a), b: uint32(g)}, reason)
		}
	}
}
