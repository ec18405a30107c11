package twopc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"
)

// Record encoding (the payload of one wal record; the wal record type is the
// RecType):
//
//	version  byte   (2; version 1 records end after op)
//	tx       uvarint length + bytes
//	node     uvarint length + bytes
//	epoch    uvarint
//	vote     byte
//	reason   uvarint length + bytes
//	nodes    uvarint count, then each: uvarint length + bytes
//	op       uvarint length + bytes
//	attempt  uvarint (version 2 only; version 1 decodes as attempt 0)
//
// Every field of a version is always present, so the decoder is one
// straight walk.

const recordVersion = 2

// ErrDecode is returned (wrapped) for a payload that is not a valid record.
var ErrDecode = errors.New("twopc: cannot decode record")

// AppendRecord appends the encoding of r (without its type) to b.
func AppendRecord(b []byte, r *Record) []byte {
	b = append(b, recordVersion)
	b = appendString(b, r.Tx)
	b = appendString(b, r.Node)
	b = binary.AppendUvarint(b, r.Epoch)
	b = append(b, byte(r.Vote))
	b = appendString(b, r.Reason)
	b = binary.AppendUvarint(b, uint64(len(r.Nodes)))
	for _, n := range r.Nodes {
		b = appendString(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Op)))
	b = append(b, r.Op...)
	b = binary.AppendUvarint(b, uint64(r.Attempt))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeRecord decodes a record of type t from data. The result does not
// alias data.
func DecodeRecord(t RecType, data []byte) (Record, error) {
	if !t.Valid() {
		return Record{}, fmt.Errorf("%w: unknown record type %d", ErrDecode, uint8(t))
	}
	d := decoder{b: data}
	version := d.byte()
	if d.err == nil && version != 1 && version != recordVersion {
		return Record{}, fmt.Errorf("%w: unknown version %d", ErrDecode, version)
	}
	r := Record{Type: t}
	r.Tx = d.string()
	r.Node = d.string()
	r.Epoch = d.uvarint()
	r.Vote = Vote(d.byte())
	r.Reason = d.string()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) { // each node takes at least one byte
		d.fail("node count %d exceeds payload", n)
	}
	if d.err == nil && n > 0 {
		r.Nodes = make([]string, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			r.Nodes = append(r.Nodes, d.string())
		}
	}
	if op := d.bytes(); len(op) > 0 {
		r.Op = append([]byte(nil), op...)
	}
	if version >= 2 {
		a := d.uvarint()
		if d.err == nil && a > 1<<32-1 {
			d.fail("attempt %d out of range", a)
		}
		r.Attempt = uint32(a)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err == nil && r.Vote >= voteEnd {
		d.fail("invalid vote %d", r.Vote)
	}
	if d.err != nil {
		return Record{}, d.err
	}
	return r, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrDecode}, args...)...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d exceeds payload", n)
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string() string { return string(d.bytes()) }

// transient is string without the copy: the result shares the payload's
// bytes, so it is valid only while they do not change, and only for a
// callee that copies what it keeps (txBulk.add stores the bytes in its
// chunks). A snapshot's finished branches load through it without an
// allocation per id and per reason.
func (d *decoder) transient() string {
	b := d.bytes()
	return unsafe.String(unsafe.SliceData(b), len(b))
}
