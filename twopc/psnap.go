package twopc

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// Participant snapshots. A snapshot of the machine holds what its log
// would rebuild: the highest coordinator epoch seen, every prepared branch
// (id, attempt, operation) and every finished branch (state, attempt,
// generation, reason). Waiting branches are not in it (nothing of them is
// logged). The Resource's own snapshot (taken in the same turn) already
// holds the prepared branches' tentative changes, so RestoreSnapshot takes
// their locks again but does not call Resource.Prepare.
//
//	version byte (4)
//	maxEpoch uvarint
//	prepared uvarint count, then each: tx, attempt uvarint, op
//	generations uvarint (1 or more), then each generation's finished
//	  branches, oldest first, the current one last: a kind byte, then
//	  inline (uvarint count, then each: tx, state byte, attempt uvarint,
//	  gen uvarint, reason) or where a file keeps them (spill.go)
//	forgot byte (1: a generation was dropped)
//	heuristic decisions, only if there are any (heuristic.go)
//
// (strings and byte slices: uvarint length + bytes). Version 3 has no
// generation count: exactly two, the previous and the current. Version 2
// is version 3 without kind bytes (both inline). Version 1 has one list
// of finished branches and no flag; it loads as the current generation.
// A restored current generation starts its span afresh (the safe side:
// remembered longer).

const (
	snapshotVersion   = 4
	snapshotVersionV3 = 3
	snapshotVersionV2 = 2
	snapshotVersionV1 = 1
	// maxSnapshotGenerations bounds the generation count a snapshot may
	// claim (a build keeps Generations).
	maxSnapshotGenerations = 64
)

// AppendSnapshot appends the machine's snapshot to b. Take it between two
// Readies (HasReady false): the state must be what the log holds.
func (p *Participant) AppendSnapshot(b []byte) ([]byte, error) {
	enc, err := p.SnapshotDeferred()
	if err != nil {
		return b, err
	}
	return enc(b), nil
}

// SnapshotDeferred is AppendSnapshot in two parts: it copies what the
// snapshot needs (between two Readies, on the machine's goroutine) and
// returns the function that encodes that copy, which may run on another
// goroutine while the machine goes on. The copy is the prepared branches
// (their operations are shared: never changed once received) and a view
// of the finished-branch tables that shares their byte chunks (a slice
// header per chunk; a value changed in place later copies its chunk
// first); nothing is encoded on the machine's goroutine.
func (p *Participant) SnapshotDeferred() (func(b []byte) []byte, error) {
	enc, err := p.SnapshotDeferredSpill()
	if err != nil {
		return nil, err
	}
	return func(b []byte) []byte {
		b, _ = enc(b, nil) // no spill: no error
		return b
	}, nil
}

// SnapshotDeferredSpill is SnapshotDeferred for a snapshot that keeps the
// finished-branch tables through sp (nil: inline), which only writes what
// changed since its last snapshot (spill.go).
func (p *Participant) SnapshotDeferredSpill() (func(b []byte, sp TableSpill) ([]byte, error), error) {
	if p.HasReady() {
		return nil, fmt.Errorf("twopc: %s: snapshot with a Ready not carried out", p.cfg.ID)
	}
	type prep struct {
		tx      string
		attempt uint32
		op      []byte
	}
	var prepared []prep
	for tx, br := range p.branches {
		if br.state == BranchPrepared {
			prepared = append(prepared, prep{tx, br.attempt, br.op})
		}
	}
	maxEpoch, forgot := p.maxEpoch, p.forgot
	gens := make([]txFrozen, 0, len(p.older)+1)
	for _, t := range p.older {
		gens = append(gens, t.freeze())
	}
	gens = append(gens, p.finished.freeze())
	heur := p.appendHeuristics(nil) // a few operator decisions at most
	return func(b []byte, sp TableSpill) ([]byte, error) {
		slices.SortFunc(prepared, func(x, y prep) int { return strings.Compare(x.tx, y.tx) })
		// One allocation of about the right size, not a doubling buffer
		// (which would hold up to twice the snapshot at its last growth).
		est := 64 + len(heur)
		if sp == nil {
			for i := range gens {
				est += gens[i].encodedMax()
			}
		}
		for _, pr := range prepared {
			est += len(pr.tx) + len(pr.op) + 3*binary.MaxVarintLen32
		}
		b = slices.Grow(b, est)
		b = append(b, snapshotVersion)
		b = binary.AppendUvarint(b, maxEpoch)
		b = binary.AppendUvarint(b, uint64(len(prepared)))
		for _, pr := range prepared {
			b = appendString(b, pr.tx)
			b = binary.AppendUvarint(b, uint64(pr.attempt))
			b = binary.AppendUvarint(b, uint64(len(pr.op)))
			b = append(b, pr.op...)
		}
		b = binary.AppendUvarint(b, uint64(len(gens)))
		for i := range gens {
			var err error
			if b, err = appendTable(b, &gens[i], sp); err != nil {
				return nil, err
			}
		}
		var f byte
		if forgot {
			f = 1
		}
		b = append(b, f)
		return append(b, heur...), nil
	}, nil
}

func appendFinished(b []byte, t *txFrozen) []byte {
	b = binary.AppendUvarint(b, uint64(t.n))
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
// A snapshot that keeps its tables in files needs RestoreSnapshotFrom.
func (p *Participant) RestoreSnapshot(b []byte) error { return p.RestoreSnapshotFrom(b, nil) }

// RestoreSnapshotFrom is RestoreSnapshot reading the tables the snapshot
// keeps in files through src.
func (p *Participant) RestoreSnapshotFrom(b []byte, src TableSource) error {
	if p.started || p.restored || len(p.branches) > 0 || p.finished.Len() > 0 {
		return fmt.Errorf("twopc: %s: RestoreSnapshot on a participant that is not fresh", p.cfg.ID)
	}
	d := decoder{b: b}
	version := d.byte()
	if d.err == nil && (version < snapshotVersionV1 || version > snapshotVersion) {
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
		// The generations, oldest first; the last is the current one.
		k := uint64(2)
		if version >= snapshotVersion {
			k = d.uvarint()
			if d.err == nil && (k == 0 || k > maxSnapshotGenerations) {
				d.fail("%d generations (want 1 to %d)", k, maxSnapshotGenerations)
			}
		}
		for i := uint64(0); i < k && d.err == nil; i++ {
			t := p.finished
			if i < k-1 {
				t = newTxTableSeed(p.finished.seed)
			}
			if version == snapshotVersionV2 {
				readFinished(&d, t)
			} else {
				readTable(&d, t, src, readFinished, checkFinished)
			}
			if i < k-1 && (version >= snapshotVersion || t.Len() > 0) {
				// Kept even when empty: it still counts toward the
				// drops to come (before version 4 an empty previous
				// generation meant none).
				t.pack()
				p.older = append(p.older, t)
			}
		}
		p.olderTags = newTagFilter(p.older)
		switch f := d.byte(); {
		case d.err != nil:
		case f > 1:
			d.fail("forgot flag %d", f)
		default:
			p.forgot = f == 1
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

// checkFinished vets a finished branch read from a table file.
func checkFinished(tx string, v txVal) error {
	if tx == "" || BranchState(v.state) != BranchCommitted && BranchState(v.state) != BranchAborted {
		return fmt.Errorf("finished branch %q in state %d", tx, v.state)
	}
	return nil
}

func readFinished(d *decoder, t *txTable) {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("finished count %d exceeds payload", n)
	}
	if d.err != nil {
		return
	}
	b := t.bulk(int(min(n, uint64(len(d.b))/5))) // an entry takes 5 bytes or more
	for i := uint64(0); i < n && d.err == nil; i++ {
		// Transient: the table copies the bytes (the payload stays as it
		// is for the whole load).
		tx := d.transient()
		st := d.byte()
		a := d.uvarint()
		g := d.uvarint()
		reason := d.transient()
		if d.err == nil && BranchState(st) != BranchCommitted && BranchState(st) != BranchAborted {
			d.fail("finished branch %s in state %d", tx, st)
		}
		if d.err == nil {
			b.add(tx, txVal{state: st, a: uint32(a), b: uint32(g)}, reason)
		}
	}
	if dup, ok := b.finish(); !ok && d.err == nil {
		d.fail("finished branch %s twice", dup)
	}
}
