package twopc

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// Coordinator snapshots.
//
// A snapshot is what a replay of the log up to it would rebuild: the epoch,
// every unfinished transaction (id, state, attempt, participants, ACKs,
// votes), the outcome tables (every generation) and the expired sets. A restart loads the newest valid one into a fresh machine
// (RestoreSnapshot) and replays only the records after it, so the log
// needs only the records after the older kept snapshot, and a restart
// replays at most one snapshot interval instead of two to three retention
// windows (package coordinator says when they are taken and keeps them).
//
// The capture on the loop (SnapshotDeferred) copies the unfinished
// transactions and takes views of the outcome tables that share their
// chunks, copy on write (txTable.freeze), as a participant's does; the
// earlier generations and the expired sets do not change: a rotation
// adds and drops them whole.
//
//	version byte (4)
//	epoch uvarint
//	unfinished uvarint count, then each: id, state byte, attempt uvarint,
//	  participant count uvarint, then each: name, ACK flag byte, vote byte
//	generations uvarint (1 or more), then each generation's outcomes,
//	  oldest first, the current one last: a kind byte, then inline
//	  (uvarint count, then each: id, state byte, attempt uvarint, 0
//	  uvarint, reason) or where a file keeps them (spill.go)
//	expired sets uvarint, then each, oldest first: its key (two
//	  little-endian uint64), a kind byte, then inline (uvarint count, then
//	  the hashes, little-endian uint64 each) or where a file keeps them
//
// Version 3 has, after the unfinished transactions, the current
// generation, a flag byte and (flag 1) the previous generation, then one
// expired set, its inline hashes running to the end. Version 2 is version
// 3 without kind bytes (all inline).

const (
	coordSnapVersion   = 4
	coordSnapVersionV3 = 3
	// coordSnapVersionV2 has its tables inline with no kind byte.
	coordSnapVersionV2 = 2
)

type snapTx struct {
	id      string
	state   CoordState
	attempt uint32
	nodes   []string
	acked   []bool
	votes   []Vote
}

// SnapshotDeferred captures the machine, which must be between two Readies
// (no Ready pending), and returns the function that serializes the
// capture, to be called off the loop: the machine may go on meanwhile.
// The snapshot holds its tables inline.
func (c *Coordinator) SnapshotDeferred() (func() []byte, error) {
	enc, err := c.SnapshotDeferredSpill()
	if err != nil {
		return nil, err
	}
	return func() []byte {
		b, _ := enc(nil) // no spill: no error
		return b
	}, nil
}

// SnapshotDeferredSpill is SnapshotDeferred for a snapshot that keeps its
// outcome tables and expired set through sp (nil: inline), which only
// writes what changed since its last snapshot (spill.go).
func (c *Coordinator) SnapshotDeferredSpill() (func(sp TableSpill) ([]byte, error), error) {
	if c.HasReady() {
		return nil, fmt.Errorf("twopc: coordinator snapshot with a Ready not carried out")
	}
	txs := make([]snapTx, 0, len(c.active))
	for _, t := range c.active {
		txs = append(txs, snapTx{id: t.id, state: t.state, attempt: t.attempt,
			nodes: slices.Clone(t.nodes), acked: slices.Clone(t.acked), votes: slices.Clone(t.votes)})
	}
	epoch := c.epoch
	gens := make([]txFrozen, 0, len(c.older)+1)
	for _, t := range c.older {
		gens = append(gens, t.freeze())
	}
	gens = append(gens, c.done.freeze())
	exps := slices.Clone(c.exps) // the sets never change: sharing their hashes is safe
	return func(sp TableSpill) ([]byte, error) {
		slices.SortFunc(txs, func(x, y snapTx) int { return strings.Compare(x.id, y.id) })
		est := 64 + 32*len(exps)
		if sp == nil {
			for i := range gens {
				est += gens[i].encodedMax()
			}
			for i := range exps {
				est += 8 * len(exps[i].hashes)
			}
		}
		for _, t := range txs {
			est += len(t.id) + 4*binary.MaxVarintLen32
			for _, n := range t.nodes {
				est += len(n) + binary.MaxVarintLen32 + 2
			}
		}
		b := make([]byte, 0, est)
		b = append(b, coordSnapVersion)
		b = binary.AppendUvarint(b, epoch)
		b = binary.AppendUvarint(b, uint64(len(txs)))
		for _, t := range txs {
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
				b = append(b, f, byte(t.votes[i]))
			}
		}
		b = binary.AppendUvarint(b, uint64(len(gens)))
		for i := range gens {
			var err error
			if b, err = appendTable(b, &gens[i], sp); err != nil {
				return nil, err
			}
		}
		b = binary.AppendUvarint(b, uint64(len(exps)))
		for i := range exps {
			exp := &exps[i]
			b = binary.LittleEndian.AppendUint64(b, exp.k0)
			b = binary.LittleEndian.AppendUint64(b, exp.k1)
			if sp == nil || len(exp.hashes) == 0 {
				b = append(b, tableInline)
				b = binary.AppendUvarint(b, uint64(len(exp.hashes)))
				for _, h := range exp.hashes {
					b = binary.LittleEndian.AppendUint64(b, h)
				}
				continue
			}
			ref, err := sp.Hashes(exp.id, exp.hashes)
			if err != nil {
				return nil, err
			}
			b = appendRef(append(b, tableRef), ref)
		}
		return b, nil
	}, nil
}

// RestoreSnapshot loads a snapshot into a coordinator that has restored
// nothing yet. Replay the records logged after it with Restore, then Start.
// A snapshot that keeps its tables in files needs RestoreSnapshotFrom.
func (c *Coordinator) RestoreSnapshot(b []byte) error { return c.RestoreSnapshotFrom(b, nil) }

// RestoreSnapshotFrom is RestoreSnapshot reading the tables the snapshot
// keeps in files through src.
func (c *Coordinator) RestoreSnapshotFrom(b []byte, src TableSource) error {
	if c.started || c.restored || c.epoch != 0 || len(c.active) > 0 || c.done.Len() > 0 || len(c.older) > 0 {
		return fmt.Errorf("twopc: RestoreSnapshot on a coordinator that is not fresh")
	}
	d := decoder{b: b}
	version := d.byte()
	if d.err == nil && (version < coordSnapVersionV2 || version > coordSnapVersion) {
		return fmt.Errorf("%w: coordinator snapshot version %d", ErrDecode, version)
	}
	epoch := d.uvarint()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b))/4 {
		d.fail("unfinished count %d exceeds payload", n)
	}
	active := make(map[string]*coordTx, min(n, 1<<20))
	for i := uint64(0); i < n && d.err == nil; i++ {
		id := d.string()
		st := CoordState(d.byte())
		attempt := d.uvarint()
		k := d.uvarint()
		if d.err == nil && k > uint64(len(d.b))/3 {
			d.fail("%s: participant count %d exceeds payload", id, k)
		}
		if d.err != nil {
			break
		}
		t := &coordTx{id: id, state: st, attempt: uint32(max(attempt, 1))}
		for j := uint64(0); j < k && d.err == nil; j++ {
			node := d.string()
			ack, vote := d.byte(), Vote(d.byte())
			switch {
			case d.err != nil:
			case node == "" || slices.Contains(t.nodes, node):
				d.fail("%s: participant %q empty or twice", id, node)
			case ack > 1 || vote >= voteEnd:
				d.fail("%s: participant %s: ACK flag %d, vote %d", id, node, ack, vote)
			}
			t.nodes = append(t.nodes, node)
			t.acked = append(t.acked, ack == 1)
			t.votes = append(t.votes, vote)
		}
		switch {
		case d.err != nil:
		case id == "" || k == 0:
			d.fail("unfinished transaction %q with %d participants", id, k)
		case st != CoordCollecting && st != CoordCommitting:
			d.fail("%s unfinished in state %v", id, st)
		case attempt > 1<<32-1:
			d.fail("%s: attempt %d", id, attempt)
		case active[id] != nil:
			d.fail("%s unfinished twice", id)
		default:
			active[id] = t
		}
	}
	table := func(t *txTable) {
		if version == coordSnapVersionV2 {
			readOutcomes(&d, t)
		} else {
			readTable(&d, t, src, readOutcomes, checkOutcome)
		}
	}
	// gens: the generations, oldest first, the current one last.
	var gens []*txTable
	var exps []expiredSet
	if version >= coordSnapVersion {
		k := d.uvarint()
		if d.err == nil && (k == 0 || k > maxSnapshotGenerations) {
			d.fail("%d generations (want 1 to %d)", k, maxSnapshotGenerations)
		}
		for i := uint64(0); i < k && d.err == nil; i++ {
			t := newTxTableSeed(c.seed)
			table(t)
			gens = append(gens, t)
		}
		m := d.uvarint()
		if d.err == nil && m > maxSnapshotGenerations {
			d.fail("%d expired sets (want at most %d)", m, maxSnapshotGenerations)
		}
		for i := uint64(0); i < m && d.err == nil; i++ {
			if e, ok := readExpiredSet(&d, src, false); ok {
				exps = append(exps, e)
			}
		}
	} else {
		done := newTxTableSeed(c.seed)
		table(done)
		switch f := d.byte(); {
		case d.err != nil:
		case f > 1:
			d.fail("previous generation flag %d", f)
		case f == 1:
			prev := newTxTableSeed(c.seed)
			table(prev)
			gens = append(gens, prev)
		}
		gens = append(gens, done)
		if e, ok := readExpiredSet(&d, src, version == coordSnapVersionV2); ok && e.Len() > 0 {
			exps = append(exps, e)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("coordinator snapshot: %w", d.err)
	}
	for id := range active {
		for _, t := range gens {
			if t.Has(id) {
				return fmt.Errorf("%w: coordinator snapshot: %s unfinished but its outcome is known", ErrBadRecord, id)
			}
		}
	}
	older := gens[:len(gens)-1]
	for _, t := range older {
		t.pack()
	}
	c.epoch = epoch
	c.active = active
	c.done = gens[len(gens)-1]
	c.older = older
	c.exps = exps
	c.expiredN = 0
	for i := range exps {
		c.expiredN += exps[i].Len()
	}
	c.restored = true
	return nil
}

// readExpiredSet reads an expired set: its key, then its hashes inline or
// where a file keeps them (a version 2 snapshot has no kind byte: inline).
func readExpiredSet(d *decoder, src TableSource, v2 bool) (expiredSet, bool) {
	var k0, k1 uint64
	if d.err == nil && len(d.b) < 16 {
		d.fail("expired set key: %d bytes left", len(d.b))
	}
	if d.err != nil {
		return expiredSet{}, false
	}
	k0, k1 = binary.LittleEndian.Uint64(d.b), binary.LittleEndian.Uint64(d.b[8:])
	d.b = d.b[16:]
	var hs []uint64
	kind := byte(tableInline)
	if !v2 {
		kind = d.byte()
	}
	switch {
	case d.err != nil:
	case kind == tableInline:
		m := d.uvarint()
		switch {
		case d.err != nil:
		case m > uint64(len(d.b))/8:
			d.fail("expired set of %d ids in %d bytes", m, len(d.b))
		default:
			hs = make([]uint64, m)
			for i := range hs {
				hs[i] = binary.LittleEndian.Uint64(d.b[8*i:])
			}
			d.b = d.b[8*m:]
		}
	case kind != tableRef:
		d.fail("expired set kind %d", kind)
	default:
		ref := readRef(d)
		switch {
		case d.err != nil:
		case src == nil:
			d.fail("%s: %v", ref.File, errNoSource)
		default:
			var err error
			if hs, err = src.Hashes(ref); err != nil {
				d.fail("%v", err)
			} else if len(hs) != ref.N {
				d.fail("expired set %s: %d hashes, the snapshot says %d", ref.File, len(hs), ref.N)
			}
		}
	}
	if d.err != nil {
		return expiredSet{}, false
	}
	return newExpiredSet(k0, k1, hs), true
}

// checkOutcome vets an outcome read from a table file.
func checkOutcome(tx string, v txVal) error {
	if v.state > 1 || v.b != 0 || tx == "" {
		return fmt.Errorf("outcome %q in state %d, generation %d", tx, v.state, v.b)
	}
	return nil
}

// readOutcomes reads what appendFinished wrote of a coordinator's outcome
// table into t.
func readOutcomes(d *decoder, t *txTable) {
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b))/5 { // an entry takes 5 bytes or more
		d.fail("outcome count %d exceeds payload", count)
	}
	if d.err != nil {
		return
	}
	b := t.bulk(int(count))
	for i := uint64(0); i < count && d.err == nil; i++ {
		tx := d.string()
		st := d.byte()
		a := d.uvarint()
		_ = d.uvarint() // a participant's generation; 0 here
		reason := d.string()
		switch {
		case d.err != nil:
		case st > 1:
			d.fail("outcome %q in state %d", tx, st)
		case a > 1<<32-1:
			d.fail("outcome %q: attempt %d", tx, a)
		default:
			b.add(tx, txVal{state: st, a: uint32(a)}, reason)
		}
	}
	if dup, ok := b.finish(); !ok && d.err == nil {
		d.fail("outcome %q twice", dup)
	}
}
