package twopc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"
)

// Outcome tables in files of their own.
//
// The outcome tables (a coordinator's two generations of outcomes and its
// expired set, a participant's two generations of finished branches) are
// most of a snapshot: every outcome of the retention window. Written
// inline, each snapshot writes them whole again, so a short snapshot
// interval (a short log to replay at restart) would cost a snapshot's
// size per interval. With a TableSpill, a snapshot names where each table
// is kept instead (a TableRef) and the spill writes only what changed
// since its last snapshot: a table's entries live in byte chunks that are
// only appended to or, for a value changed in place, replaced by a copy
// (txTable.writable), so the chunks new, grown or replaced since the last
// freeze are the change. An expired set never changes; it is written
// once. node.Tables is the spill of a component's snapshot directory.
//
// In a snapshot each table is a kind byte and then either the table
// inline (tableInline: appendFinished's format; an expired set's hashes)
// or a reference (tableRef: file name, the file's length that covers the
// table, its number of chunks and of live entries). A restore reads a
// reference through a TableSource and checks every entry it parses: the
// files are checksummed, but a damaged or foreign file must fail the
// restore, never crash it or load a wrong table.

const (
	tableInline = 0
	tableRef    = 1
)

// TableRef says where a snapshot's table is kept.
type TableRef struct {
	File   string // base name of the file, in the snapshot's directory
	Len    int64  // the file's length that covers the table
	Chunks int    // chunks of the table (an expired set: hashes)
	N      int    // live entries (an expired set: hashes)
}

// TableSpill keeps the tables of snapshots being encoded; its methods are
// called off the machine's loop, by one snapshot at a time.
type TableSpill interface {
	// Table makes table id's chunks, as they are, durable and returns
	// where they are. It need write only what changed since its last
	// call for id, whose earlier chunks it may assume unchanged when
	// they are the same bytes (same address and length). id identifies
	// a table for the life of the process.
	Table(id uint64, chunks [][]byte, n int) (TableRef, error)
	// Hashes makes the expired set id durable (a set never changes).
	Hashes(id uint64, hashes []uint64) (TableRef, error)
}

// TableSource reads tables a TableSpill kept.
type TableSource interface {
	// Chunks calls fn with each of the table's chunks, in order, and
	// fails unless the file holds exactly ref.Chunks of them within
	// ref.Len bytes.
	Chunks(ref TableRef, fn func(chunk []byte) error) error
	// Hashes returns the expired set's ref.N hashes.
	Hashes(ref TableRef) ([]uint64, error)
}

// errNoSource: a snapshot names a table file and the restore was given
// nothing to read it with.
var errNoSource = errors.New("snapshot keeps a table in a file and no table source was given")

// appendTable appends t to b, inline or, with sp, as a reference.
func appendTable(b []byte, t *txFrozen, sp TableSpill) ([]byte, error) {
	if sp == nil || t.n == 0 { // an empty table (or none: id 0) is two bytes inline
		return appendFinished(append(b, tableInline), t), nil
	}
	ref, err := sp.Table(t.id, t.chunks, t.n)
	if err != nil {
		return b, err
	}
	return appendRef(append(b, tableRef), ref), nil
}

func appendRef(b []byte, r TableRef) []byte {
	b = appendString(b, r.File)
	b = binary.AppendUvarint(b, uint64(r.Len))
	b = binary.AppendUvarint(b, uint64(r.Chunks))
	return binary.AppendUvarint(b, uint64(r.N))
}

func readRef(d *decoder) TableRef {
	r := TableRef{File: d.string()}
	l, c, n := d.uvarint(), d.uvarint(), d.uvarint()
	switch {
	case d.err != nil:
	case r.File == "" || len(r.File) > 255:
		d.fail("table file name of %d bytes", len(r.File))
	case l > 1<<62 || c > 1<<40 || n > 1<<40:
		d.fail("table %s: length %d, %d chunks, %d entries", r.File, l, c, n)
	}
	r.Len, r.Chunks, r.N = int64(l), int(c), int(n)
	return r
}

// readTable reads a table appendTable wrote into t (empty): inline through
// read, or from src. check vets each entry's value.
func readTable(d *decoder, t *txTable, src TableSource, read func(*decoder, *txTable), check func(key string, v txVal) error) {
	switch k := d.byte(); {
	case d.err != nil:
	case k == tableInline:
		read(d, t)
	case k != tableRef:
		d.fail("table kind %d", k)
	default:
		ref := readRef(d)
		if d.err != nil {
			return
		}
		if src == nil {
			d.fail("%s: %v", ref.File, errNoSource)
			return
		}
		if err := loadTable(t, src, ref, check); err != nil {
			d.fail("%v", err)
		}
	}
}

// loadTable fills t (empty) with the live entries of ref's chunks.
func loadTable(t *txTable, src TableSource, ref TableRef, check func(key string, v txVal) error) error {
	var chunks [][]byte
	if err := src.Chunks(ref, func(c []byte) error { chunks = append(chunks, c); return nil }); err != nil {
		return err
	}
	n, err := t.adopt(chunks, ref.N, check)
	if err != nil {
		return fmt.Errorf("table %s: %v", ref.File, err)
	}
	if n != ref.N {
		return fmt.Errorf("table %s: %d entries, the snapshot says %d", ref.File, n, ref.N)
	}
	return nil
}

// adopt makes chunks, read from a table file, the chunks of t (empty):
// their entries stay where they are and only the index is built (one
// sort of the slots, as a bulk load), so a restart neither copies nor
// re-encodes the retained outcomes. Every entry is parsed with checks and
// vetted by check. A table of more chunks than a part can number is
// loaded entry by entry instead. It returns the number of live entries.
func (t *txTable) adopt(chunks [][]byte, hint int, check func(key string, v txVal) error) (int, error) {
	if t.n != 0 || t.used != 0 || len(t.chunks) != 0 {
		panic("twopc: adopt into a table that is not empty")
	}
	direct := len(chunks) < t.maxChunks
	var b *txBulk
	var slots []uint64
	if direct {
		size := 0
		for _, c := range chunks {
			size += len(c)
		}
		// The count the snapshot says, if the chunks can hold it (an
		// entry takes 2 bytes at least).
		slots = make([]uint64, 0, min(hint, size/2))
	} else {
		b = t.bulk(0)
	}
	n := 0
	for ci, c := range chunks {
		for off := 0; off < len(c); {
			e, err := parseEntryChecked(c, off)
			if err != nil {
				return 0, fmt.Errorf("chunk %d, offset %d: %v", ci, off, err)
			}
			if direct && off >= txChunkMax {
				return 0, fmt.Errorf("chunk %d: an entry at offset %d, past %d", ci, off, txChunkMax)
			}
			if c[off]&txDead == 0 {
				// Transient: the key is hashed (or copied by the bulk
				// load), not kept.
				key := unsafe.String(unsafe.SliceData(c[e.key:e.text]), e.klen)
				v := txVal{state: e.state, a: e.a, b: e.b}
				if err := check(key, v); err != nil {
					return 0, err
				}
				if direct {
					slots = append(slots, uint64(tagOf(t.hash(key)))<<32|uint64(ci)<<txOffBits|uint64(off))
				} else {
					b.add(key, v, unsafe.String(unsafe.SliceData(c[e.text:e.end]), e.tlen))
				}
				n++
			}
			off = e.end
		}
	}
	if !direct {
		if dup, ok := b.finish(); !ok {
			return 0, fmt.Errorf("%q twice", dup)
		}
		return n, nil
	}
	t.chunks, t.cur, t.n = chunks, -1, n
	bl := &txBulk{t: t, slots: slots}
	if dup, ok := bl.index(); !ok {
		return 0, fmt.Errorf("%q twice", dup)
	}
	return n, nil
}

// parseEntryChecked is parseEntry for bytes read from a file: every length
// and number is checked against the chunk.
func parseEntryChecked(c []byte, off int) (txEntry, error) {
	i := off + 1
	if off < 0 || i > len(c) {
		return txEntry{}, errors.New("entry past the chunk")
	}
	flags := c[off]
	if flags&txStateX == txStateX {
		if i >= len(c) {
			return txEntry{}, errors.New("state byte past the chunk")
		}
		i++
	}
	next := func() (uint64, error) {
		v, k := binary.Uvarint(c[i:])
		if k <= 0 || v > 1<<32-1 {
			return 0, errors.New("bad number")
		}
		i += k
		return v, nil
	}
	if flags&txHasA != 0 {
		if _, err := next(); err != nil {
			return txEntry{}, err
		}
	}
	if flags&txHasB != 0 {
		if _, err := next(); err != nil {
			return txEntry{}, err
		}
	}
	kl, err := next()
	if err != nil {
		return txEntry{}, err
	}
	var tl uint64
	if flags&txHasText != 0 {
		if tl, err = next(); err != nil {
			return txEntry{}, err
		}
	}
	if kl+tl > uint64(len(c)-i) {
		return txEntry{}, fmt.Errorf("key and text of %d and %d bytes past the chunk", kl, tl)
	}
	e := parseEntry(c, off)
	if e.end != i+int(kl+tl) {
		return txEntry{}, errors.New("entry does not parse the same twice") // cannot happen: the checks above are parseEntry's steps
	}
	return e, nil
}

// skipTable reads past a table appendTable wrote and returns where it is
// kept, if in a file.
func skipTable(d *decoder) (ref TableRef, ok bool) {
	switch k := d.byte(); {
	case d.err != nil:
	case k == tableInline:
		n := d.uvarint()
		for i := uint64(0); i < n && d.err == nil; i++ {
			d.transient()
			d.byte()
			d.uvarint()
			d.uvarint()
			d.transient()
		}
	case k == tableRef:
		return readRef(d), true
	default:
		d.fail("table kind %d", k)
	}
	return TableRef{}, false
}

// CoordinatorSnapshotTables returns the tables a coordinator's snapshot
// keeps in files (none for one that keeps them inline): a restart reads
// them before it restores (a damaged one makes it fall back to an older
// snapshot), and the files no kept snapshot names can be removed.
func CoordinatorSnapshotTables(b []byte) ([]TableRef, error) {
	d := decoder{b: b}
	v := d.byte()
	if d.err == nil && v != coordSnapVersion && v != coordSnapVersionV3 {
		return nil, nil // older versions keep every table inline
	}
	d.uvarint() // epoch
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		d.transient()
		d.byte()
		d.uvarint()
		k := d.uvarint()
		for j := uint64(0); j < k && d.err == nil; j++ {
			d.transient()
			d.byte()
			d.byte()
		}
	}
	var refs []TableRef
	add := func(r TableRef, ok bool) {
		if ok {
			refs = append(refs, r)
		}
	}
	// expiredSet skips an expired set's key and names its file, if any.
	expiredSet := func() {
		if d.err == nil && len(d.b) < 16 {
			d.fail("expired set key: %d bytes left", len(d.b))
		}
		if d.err != nil {
			return
		}
		d.b = d.b[16:]
		switch k := d.byte(); {
		case d.err != nil:
		case k == tableRef:
			add(readRef(&d), d.err == nil)
		case k != tableInline:
			d.fail("expired set kind %d", k)
		default:
			m := d.uvarint()
			if d.err == nil && m > uint64(len(d.b))/8 {
				d.fail("expired set of %d ids in %d bytes", m, len(d.b))
			}
			if d.err == nil {
				d.b = d.b[8*m:]
			}
		}
	}
	if v == coordSnapVersionV3 {
		add(skipTable(&d))
		if f := d.byte(); d.err == nil && f == 1 {
			add(skipTable(&d))
		}
		expiredSet()
	} else {
		k := d.uvarint()
		if d.err == nil && (k == 0 || k > maxSnapshotGenerations) {
			d.fail("%d generations (want 1 to %d)", k, maxSnapshotGenerations)
		}
		for i := uint64(0); i < k && d.err == nil; i++ {
			add(skipTable(&d))
		}
		m := d.uvarint()
		if d.err == nil && m > maxSnapshotGenerations {
			d.fail("%d expired sets (want at most %d)", m, maxSnapshotGenerations)
		}
		for i := uint64(0); i < m && d.err == nil; i++ {
			expiredSet()
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("coordinator snapshot: %w", d.err)
	}
	return refs, nil
}

// ParticipantSnapshotTables is CoordinatorSnapshotTables for a
// participant's machine snapshot (AppendSnapshot's bytes).
func ParticipantSnapshotTables(b []byte) ([]TableRef, error) {
	d := decoder{b: b}
	v := d.byte()
	if d.err == nil && v != snapshotVersion && v != snapshotVersionV3 {
		return nil, nil // earlier versions keep every table inline
	}
	d.uvarint() // maxEpoch
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		d.transient()
		d.uvarint()
		d.bytes()
	}
	k := uint64(2)
	if v == snapshotVersion {
		k = d.uvarint()
		if d.err == nil && (k == 0 || k > maxSnapshotGenerations) {
			d.fail("%d generations (want 1 to %d)", k, maxSnapshotGenerations)
		}
	}
	var refs []TableRef
	for i := uint64(0); i < k && d.err == nil; i++ {
		if r, ok := skipTable(&d); ok {
			refs = append(refs, r)
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("participant snapshot: %w", d.err)
	}
	return refs, nil
}
