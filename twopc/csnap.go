package twopc

import (
	"encoding/binary"
	"fmt"
)

// Checkpoint snapshots (the coordinator's).
//
// A rotation packs the previous generation of outcomes and builds the
// expired set; neither changes again until the next rotation. A checkpoint
// snapshot is those two (and the epoch), taken at the rotation whose
// CHECKPOINT head the log holds at seq S and written off the loop
// (package coordinator). A restart loads the newest valid one into a fresh
// machine (RestoreCheckpointSnapshot) and replays the log from S on: the
// head itself then adds the unfinished transactions it carries but does not
// rotate again, since the snapshot is the state just after that rotation.
// So the log needs the records from the older kept snapshot's head on (one
// to two windows instead of the two to three that replay from scratch
// needs) and a restart replays only the current generation's, less than
// one window.
//
// The snapshot's file is named by S-1 (wal.SnapshotName): like a
// participant's, it stands for what came before the records a restart
// replays, and the same code writes, prunes and compacts it.

const ckptSnapVersion = 1

// rotationView is what a rotation left that no longer changes.
type rotationView struct {
	prev  *txTable
	exp   expiredSet
	epoch uint64
	n     uint64 // rotations of this machine so far (checkpoints)
}

// CheckpointSnapshot returns the serializer of a snapshot of the latest
// rotation, to be called off the loop (the machine may go on, even rotate
// again, meanwhile: the view does not change), and false if this machine
// has not rotated. Call it on the loop right after carrying the Ready that
// holds the rotation's CHECKPOINT head (node.Carrier.OnCheckpoint): that
// head is the latest one.
func (c *Coordinator) CheckpointSnapshot() (encode func() []byte, ok bool) {
	v := c.lastRot
	if v == nil {
		return nil, false
	}
	return func() []byte { return v.encode() }, true
}

func (v *rotationView) encode() []byte {
	n := 0
	if v.prev != nil {
		n = v.prev.Len()
		for _, p := range v.prev.parts() {
			for _, ch := range p.chunks {
				n += len(ch) + 3
			}
		}
	}
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+n+16+8*len(v.exp.hashes))
	b = append(b, ckptSnapVersion)
	b = binary.AppendUvarint(b, v.epoch)
	if v.prev == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(v.prev.Len()))
		v.prev.All(func(tx string, val txVal, reason string) bool {
			b = appendString(b, tx)
			b = append(b, val.state)
			b = binary.AppendUvarint(b, uint64(val.a))
			b = appendString(b, reason)
			return true
		})
	}
	b = binary.LittleEndian.AppendUint64(b, v.exp.k0)
	b = binary.LittleEndian.AppendUint64(b, v.exp.k1)
	b = binary.AppendUvarint(b, uint64(len(v.exp.hashes)))
	for _, h := range v.exp.hashes {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	return b
}

// RestoreCheckpointSnapshot loads a checkpoint snapshot into a coordinator
// that has restored nothing yet. Replay the log from the snapshot's
// CHECKPOINT head on (the record after the seq its file is named by): the
// first record replayed must be that head.
func (c *Coordinator) RestoreCheckpointSnapshot(b []byte) error {
	if c.started || c.restored || len(c.active) > 0 || c.done.Len() > 0 || c.prev != nil {
		return fmt.Errorf("twopc: RestoreCheckpointSnapshot on a coordinator that is not fresh")
	}
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != ckptSnapVersion {
		return fmt.Errorf("%w: checkpoint snapshot version %d", ErrDecode, v)
	}
	epoch := d.uvarint()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b))/4 { // an outcome takes 4 bytes or more
		d.fail("outcome count %d exceeds payload", n)
	}
	prev := newTxTableSeed(c.seed)
	if d.err == nil {
		prev.reserve(int(n))
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		tx := d.string()
		st := d.byte()
		a := d.uvarint()
		reason := d.string()
		switch {
		case d.err != nil:
		case st > 1:
			d.fail("outcome %q in state %d", tx, st)
		case a > 1<<32-1:
			d.fail("outcome %q: attempt %d", tx, a)
		case prev.Has(tx):
			d.fail("outcome %q twice", tx)
		default:
			prev.Put(tx, txVal{state: st, a: uint32(a)}, reason)
		}
	}
	var k0, k1 uint64
	if d.err == nil && len(d.b) < 16 {
		d.fail("expired set key: %d bytes left", len(d.b))
	}
	if d.err == nil {
		k0, k1 = binary.LittleEndian.Uint64(d.b), binary.LittleEndian.Uint64(d.b[8:])
		d.b = d.b[16:]
	}
	m := d.uvarint()
	if d.err == nil && (m != uint64(len(d.b))/8 || len(d.b)%8 != 0) {
		d.fail("expired set of %d ids in %d bytes", m, len(d.b))
	}
	var hs []uint64
	if d.err == nil {
		hs = make([]uint64, m)
		for i := range hs {
			hs[i] = binary.LittleEndian.Uint64(d.b[8*i:])
		}
		d.b = nil
	}
	if d.err != nil {
		return fmt.Errorf("checkpoint snapshot: %w", d.err)
	}
	prev.pack()
	c.prev = prev
	c.exp = newExpiredSet(k0, k1, hs)
	c.expiredN = len(hs)
	c.epoch = max(c.epoch, epoch)
	c.restored = true
	c.snapHead = true
	return nil
}
