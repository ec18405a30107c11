package twopc

import (
	"crypto/rand"
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/dchest/siphash"
)

// txTable remembers finished transactions: for each id, a small value and
// an optional text (an abort reason). A machine remembers every transaction
// it finished within its retention window, possibly millions; a Go map of
// strings would hold two pointers per entry for the garbage collector to
// trace on every cycle and some 80 bytes besides the id. Here nothing is a
// pointer per entry and a retained id costs at most about 16 bytes besides
// its own:
//
//   - Entries are stored inline in byte chunks (1 KiB growing to 64 KiB; an
//     entry larger than that gets a chunk of its own), one after the other:
//     a flags byte (state, which fields follow, a dead mark), the value's
//     two numbers as uvarints (absent when 0), the key length, the text
//     length (absent when there is no text), the key, the text. A
//     committed outcome of attempt 1 has a 3-byte header. A value is
//     changed in place when its numbers fit the widths already there
//     (uvarints may be padded) and the text is unchanged; otherwise the
//     old entry is marked dead and a new one appended.
//   - The index is a slice of 8-byte slots: a 32-bit tag (the hash's high
//     half) and the 32-bit position of the entry (chunk<<16 | offset).
//     While the table takes new keys it is an ordered linear-probing
//     table without wraparound: a tag's home slot is tag×homes>>32, so
//     homes follow tags, and the slots are kept sorted by tag (an insert
//     shifts the rest of its run one slot right). A lookup scans from the
//     home while the tags are smaller and stops at the first larger tag or
//     empty slot: an absent id costs about as few probes as a present one
//     (about 3 at the 0.8 load the index grows at, by a fifth each time;
//     the load is between 0.67 and 0.8).
//   - pack turns the index of a table that takes no more new keys (a
//     generation that was rotated out) into the sorted tags alone, without
//     empty slots (8 bytes per id), plus a directory of where each bucket
//     of tags starts (about 8 ids a bucket: 0.5 to 1 byte per id).
//
// Growing copies index slots only, never stored bytes. A position has 16
// bits of chunk number: once a table has used 65,536 chunks (4 GiB of
// entries) it seals them as an older part, packed, and starts afresh;
// lookups try the parts newest first. Keys with equal tags are told apart
// by comparing the key bytes.
//
// It is not safe for concurrent use.
type txTable struct {
	seed maphash.Seed
	// slots: tag<<32 | position; 0 is an empty slot (a tag is never 0).
	// Open (homes > 0): len(slots) = homes + pad, and the last slot is
	// always empty, so that a scan needs no bound check. Packed (homes ==
	// 0): sorted, no empty slot; dir[b] is where the tags of bucket
	// b = tag>>shift begin, dir[len(dir)-1] = len(slots).
	slots []uint64
	homes uint64
	used  int // slots in use (live keys and replaced ones)
	dir   []uint32
	shift uint8

	chunks [][]byte
	cur    int // the chunk small entries are appended to; -1: none yet
	// shared[i]: chunk i is also read by a frozen copy (freeze), so it
	// must be copied before a value in it changes in place.
	shared    []bool
	n         int // live keys in this part
	maxChunks int
	older     []*txTable // sealed parts, oldest first (nil but in a huge table)
	// id tells tables apart for the snapshot writer that keeps them in
	// files of their own (TableSpill): unique in the process.
	id uint64
}

// txVal is what a txTable keeps per key besides its text.
type txVal struct {
	state uint8
	a, b  uint32 // the user's numbers (an attempt, a generation)
}

const (
	txOffBits  = 16
	txChunkMax = 1 << txOffBits // bytes of a shared chunk
	txChunkMin = 1 << 10
	txMinHomes = 32
	txBucket   = 8 // ids per bucket of a packed index, on average
	// bucketTopBits: bucketSort sorts by this many high bits first when
	// it has more buckets than that.
	bucketTopBits = 8

	txDead    = 0x80 // flags: the entry was replaced
	txHasText = 0x40
	txHasB    = 0x20
	txHasA    = 0x10
	txStateX  = 0x0f // flags&0x0f: the state, or txStateX: a state byte follows
)

// tableIDs numbers the tables of the process (txTable.id).
var tableIDs atomic.Uint64

func newTxTable() *txTable { return newTxTableSeed(maphash.MakeSeed()) }

// newTxTableSeed returns an empty table hashing with seed: tables sharing
// a seed can be asked about one hash (txHash).
func newTxTableSeed(seed maphash.Seed) *txTable {
	t := &txTable{seed: seed, cur: -1, maxChunks: 1 << (32 - txOffBits), id: tableIDs.Add(1)}
	t.reindex(nil, txMinHomes, 8)
	return t
}

// txHash is a key's hash with a table's seed: the tag is its high half.
func txHash(seed maphash.Seed, key string) uint64 { return maphash.String(seed, key) }

func tagOf(h uint64) uint32 {
	if tag := uint32(h >> 32); tag != 0 {
		return tag
	}
	return 1
}

func (t *txTable) hash(key string) uint64 { return txHash(t.seed, key) }

// uvarint reads a uvarint of b at i (the table wrote it: no checks).
func uvarint(b []byte, i int) (uint64, int) {
	var v uint64
	for s := 0; ; s += 7 {
		c := b[i]
		i++
		v |= uint64(c&0x7f) << s
		if c < 0x80 {
			return v, i
		}
	}
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// putUvarint writes v as a uvarint of exactly w bytes (padded with
// continuation bytes); v must fit in 7w bits.
func putUvarint(b []byte, v uint64, w int) {
	for j := 0; j < w-1; j++ {
		b[j] = byte(v) | 0x80
		v >>= 7
	}
	b[w-1] = byte(v)
}

// txEntry is a parsed entry header: where its fields are.
type txEntry struct {
	flags      byte
	state      uint8
	a, b       uint32
	aAt, aW    int // offset and width of a (width 0: absent)
	bAt, bW    int
	key, text  int // offsets
	klen, tlen int
	end        int
}

func parseEntry(c []byte, off int) (e txEntry) {
	e.flags = c[off]
	i := off + 1
	e.state = e.flags & txStateX
	if e.state == txStateX {
		e.state = c[i]
		i++
	}
	var v uint64
	if e.flags&txHasA != 0 {
		e.aAt = i
		v, i = uvarint(c, i)
		e.a, e.aW = uint32(v), i-e.aAt
	}
	if e.flags&txHasB != 0 {
		e.bAt = i
		v, i = uvarint(c, i)
		e.b, e.bW = uint32(v), i-e.bAt
	}
	v, i = uvarint(c, i)
	e.klen = int(v)
	if e.flags&txHasText != 0 {
		v, i = uvarint(c, i)
		e.tlen = int(v)
	}
	e.key = i
	e.text = i + e.klen
	e.end = e.text + e.tlen
	return e
}

// entrySize is the bytes of an entry of key, v and text.
func entrySize(key string, v txVal, text string) int {
	n := 1 + len(key) + len(text) + uvarintLen(uint64(len(key)))
	if v.state >= txStateX {
		n++
	}
	if v.a != 0 {
		n += uvarintLen(uint64(v.a))
	}
	if v.b != 0 {
		n += uvarintLen(uint64(v.b))
	}
	if len(text) > 0 {
		n += uvarintLen(uint64(len(text)))
	}
	return n
}

func appendEntry(c []byte, key string, v txVal, text string) []byte {
	var f byte
	if v.state >= txStateX {
		f = txStateX
	} else {
		f = v.state
	}
	if v.a != 0 {
		f |= txHasA
	}
	if v.b != 0 {
		f |= txHasB
	}
	if len(text) > 0 {
		f |= txHasText
	}
	c = append(c, f)
	if v.state >= txStateX {
		c = append(c, v.state)
	}
	if v.a != 0 {
		c = appendUvarint(c, uint64(v.a))
	}
	if v.b != 0 {
		c = appendUvarint(c, uint64(v.b))
	}
	c = appendUvarint(c, uint64(len(key)))
	if len(text) > 0 {
		c = appendUvarint(c, uint64(len(text)))
	}
	c = append(c, key...)
	return append(c, text...)
}

func appendUvarint(c []byte, v uint64) []byte {
	for v >= 0x80 {
		c = append(c, byte(v)|0x80)
		v >>= 7
	}
	return append(c, byte(v))
}

// setInPlace writes v over e's value if it fits the widths there.
func setInPlace(c []byte, off int, e *txEntry, v txVal) bool {
	if (v.state >= txStateX) != (e.flags&txStateX == txStateX) ||
		uvarintLen(uint64(v.a))*min(1, int(v.a)) > e.aW ||
		uvarintLen(uint64(v.b))*min(1, int(v.b)) > e.bW {
		return false
	}
	if v.state >= txStateX {
		c[off+1] = v.state
	} else {
		c[off] = e.flags&^txStateX | v.state
	}
	if e.aW > 0 {
		putUvarint(c[e.aAt:], uint64(v.a), e.aW)
	}
	if e.bW > 0 {
		putUvarint(c[e.bAt:], uint64(v.b), e.bW)
	}
	return true
}

// at returns the chunk and offset of position pos.
func (t *txTable) at(pos uint32) ([]byte, int) {
	return t.chunks[pos>>txOffBits], int(pos & (txChunkMax - 1))
}

// writable is at for a change in place: a chunk a frozen copy still reads
// is replaced by a copy of its own first (copy on write: 64 KiB at most,
// once per chunk and freeze).
func (t *txTable) writable(pos uint32) ([]byte, int) {
	if ci := int(pos >> txOffBits); ci < len(t.shared) && t.shared[ci] {
		c := t.chunks[ci]
		own := make([]byte, len(c), cap(c))
		copy(own, c)
		t.chunks[ci] = own
		t.shared[ci] = false
	}
	return t.at(pos)
}

// keyAt reports whether the live entry at pos has key.
func (t *txTable) keyAt(pos uint32, key string) bool {
	c, off := t.at(pos)
	if c[off]&txDead != 0 {
		return false
	}
	e := parseEntry(c, off)
	return e.klen == len(key) && string(c[e.key:e.text]) == key
}

// findIn returns the position of key's live entry in this part.
func (t *txTable) findIn(key string, tag uint32) (uint32, bool) {
	if t.homes > 0 {
		for i := uint64(tag) * t.homes >> 32; ; i++ {
			s := t.slots[i]
			st := uint32(s >> 32)
			if s == 0 || st > tag {
				return 0, false
			}
			if st == tag && t.keyAt(uint32(s), key) {
				return uint32(s), true
			}
		}
	}
	b := tag >> t.shift
	for i, end := t.dir[b], t.dir[b+1]; i < end; i++ {
		s := t.slots[i]
		st := uint32(s >> 32)
		if st > tag {
			return 0, false
		}
		if st == tag && t.keyAt(uint32(s), key) {
			return uint32(s), true
		}
	}
	return 0, false
}

// find returns the part holding key's live entry and its position.
func (t *txTable) find(key string, h uint64) (*txTable, uint32) {
	tag := tagOf(h)
	if pos, ok := t.findIn(key, tag); ok {
		return t, pos
	}
	for i := len(t.older) - 1; i >= 0; i-- {
		if pos, ok := t.older[i].findIn(key, tag); ok {
			return t.older[i], pos
		}
	}
	return nil, 0
}

// Put sets key's value and text, replacing any earlier ones.
func (t *txTable) Put(key string, v txVal, text string) { t.putH(key, t.hash(key), v, text) }

func (t *txTable) putH(key string, h uint64, v txVal, text string) {
	if p, pos := t.find(key, h); p != nil {
		c, off := p.writable(pos)
		e := parseEntry(c, off)
		if e.tlen == len(text) && string(c[e.text:e.end]) == text && setInPlace(c, off, &e, v) {
			return // the common replacement: no new bytes
		}
		c[off] |= txDead
		p.n--
	}
	t.add(key, tagOf(h), v, text)
}

// add stores a new entry and indexes it.
func (t *txTable) add(key string, tag uint32, v txVal, text string) {
	if t.homes == 0 { // a packed table takes a key again
		t.reindex(t.slots, max(txMinHomes, uint64(t.used)*5/4+1), 0)
	}
	t.insert(uint64(tag)<<32 | uint64(t.store(key, v, text)))
}

// store appends a new entry to the chunks and returns its position; the
// caller indexes it.
func (t *txTable) store(key string, v txVal, text string) uint32 {
	need := entrySize(key, v, text)
	var ci int
	switch {
	case need > txChunkMax:
		t.room()
		t.chunks = append(t.chunks, make([]byte, 0, need))
		ci = len(t.chunks) - 1
	case t.cur >= 0 && cap(t.chunks[t.cur])-len(t.chunks[t.cur]) >= need:
		ci = t.cur
	default:
		t.room()
		size := txChunkMin
		if t.cur >= 0 {
			size = min(txChunkMax, 2*cap(t.chunks[t.cur]))
		}
		for size < need {
			size *= 2
		}
		t.chunks = append(t.chunks, make([]byte, 0, size))
		t.cur = len(t.chunks) - 1
		ci = t.cur
	}
	c := t.chunks[ci]
	pos := uint32(ci)<<txOffBits | uint32(len(c))
	t.chunks[ci] = appendEntry(c, key, v, text)
	t.n++
	return pos
}

// txBulk fills a fresh table from a snapshot: entries are appended without
// a lookup and indexed at the end by one sort of their slots, instead of a
// probe and a shifting insert each (random accesses into an index of
// millions of slots: most of a large snapshot's load time). A key given
// twice is reported by finish.
type txBulk struct {
	t      *txTable
	slots  []uint64
	direct bool   // past what one part's chunks can number: Put each
	dup    string // a key given twice (direct mode)
	dupped bool
}

// bulk starts a bulk load of about n keys into t, which must be empty.
func (t *txTable) bulk(n int) *txBulk {
	if t.n != 0 || t.used != 0 || len(t.older) > 0 {
		panic("twopc: bulk load of a table that is not empty")
	}
	return &txBulk{t: t, slots: make([]uint64, 0, n)}
}

// add stores key's entry. It keeps neither key nor text, only copies of
// their bytes: they may be transient views of a snapshot's payload.
func (b *txBulk) add(key string, v txVal, text string) {
	t := b.t
	if !b.direct && len(t.chunks) >= t.maxChunks-1 {
		// The next chunk could seal the part, whose index must then be
		// whole: index what was loaded and Put the rest.
		if d, ok := b.index(); !ok {
			b.dup, b.dupped = d, true
		}
		b.direct = true
	}
	if b.direct {
		n := t.Len()
		t.Put(key, v, text)
		if t.Len() == n && !b.dupped {
			b.dup, b.dupped = strings.Clone(key), true
		}
		return
	}
	tag := tagOf(t.hash(key))
	b.slots = append(b.slots, uint64(tag)<<32|uint64(t.store(key, v, text)))
}

// finish indexes what add stored and returns a key that was given twice,
// if any (ok false).
func (b *txBulk) finish() (dup string, ok bool) {
	if !b.direct {
		if d, ok := b.index(); !ok {
			return d, false
		}
	}
	return b.dup, !b.dupped
}

// sortSlots sorts slots (tag<<32 | position; tags uniformly spread) by
// bucketSort: several times faster than a comparison sort of millions.
func sortSlots(slots []uint64) []uint64 {
	sorted, _, _ := bucketSort(slots)
	return sorted
}

// index sorts the slots by tag, checks that equal tags hold different
// keys, and builds the open index from them.
func (b *txBulk) index() (dup string, ok bool) {
	t := b.t
	slots := sortSlots(b.slots)
	b.slots = nil
	for i := 1; i < len(slots); i++ {
		if slots[i]>>32 != slots[i-1]>>32 {
			continue
		}
		for j := i - 1; j >= 0 && slots[j]>>32 == slots[i]>>32; j-- {
			c, off := t.at(uint32(slots[i]))
			e := parseEntry(c, off)
			if key := string(c[e.key:e.text]); t.keyAt(uint32(slots[j]), key) {
				return key, false
			}
		}
	}
	t.used = len(slots)
	// A load of 0.73, below the 0.8 an insert grows at: the current
	// generation of a restored coordinator takes new keys at once, and
	// at 0.8 exactly its first would copy the index.
	t.reindex(slots, max(txMinHomes, uint64(len(slots))*11/8+1), 0)
	return "", true
}

// room makes sure a new chunk can be numbered: when every chunk number is
// used the table's contents become a sealed older part.
func (t *txTable) room() {
	if len(t.chunks) < t.maxChunks {
		return
	}
	old := *t
	old.older = nil
	old.pack()
	t.older = append(t.older, &old)
	t.chunks, t.cur, t.n, t.used, t.shared = nil, -1, 0, 0, nil
	t.reindex(nil, txMinHomes, 8)
}

// reserve makes room in the index for n more keys, so that adding them
// grows it once rather than by a fifth again and again (a restore that
// knows its count: each growth copies the whole index).
func (t *txTable) reserve(n int) {
	if n <= 0 || t.homes == 0 { // a packed table reopens with room of its own
		return
	}
	if homes := uint64(t.used+n)*5/4 + 1; homes > t.homes {
		t.reindex(t.slots, homes, 0)
	}
}

// insert puts slot s in the open index, after any equal tags.
func (t *txTable) insert(s uint64) {
	if 5*uint64(t.used+1) > 4*t.homes {
		t.reindex(t.slots, t.homes+t.homes/5, 0)
	}
	tag := uint32(s >> 32)
	for {
		i := uint64(tag) * t.homes >> 32
		for t.slots[i] != 0 && uint32(t.slots[i]>>32) <= tag {
			i++
		}
		j := i
		for t.slots[j] != 0 {
			j++
		}
		if j+1 < uint64(len(t.slots)) {
			copy(t.slots[i+1:j+1], t.slots[i:j])
			t.slots[i] = s
			t.used++
			return
		}
		// The run would reach the last slot: more room at the end.
		t.reindex(t.slots, t.homes, 2*(uint64(len(t.slots))-t.homes))
	}
}

// reindex rebuilds the open index with homes home slots from old, which
// is sorted by tag (an open or packed index): each slot goes to its home
// or right after the one before. pad 0 picks the usual padding.
func (t *txTable) reindex(old []uint64, homes, pad uint64) {
	if pad == 0 {
		pad = min(max(homes/8, 8), 1024)
	}
	for {
		slots := make([]uint64, homes+pad)
		next, ok := uint64(0), true
		for _, s := range old {
			if s == 0 {
				continue
			}
			i := max(uint64(s>>32)*homes>>32, next)
			if i+1 >= uint64(len(slots)) {
				ok = false
				break
			}
			slots[i] = s
			next = i + 1
		}
		if ok {
			t.slots, t.homes, t.dir, t.shift = slots, homes, nil, 0
			return
		}
		pad *= 2
	}
}

// pack makes the index compact for a table that takes no new keys (it
// still may: add reopens it). Sealed parts are packed already.
func (t *txTable) pack() {
	if t.homes == 0 {
		return
	}
	slots := make([]uint64, 0, t.used)
	for _, s := range t.slots {
		if s != 0 {
			slots = append(slots, s)
		}
	}
	k := bits.Len(uint(len(slots) / txBucket))
	dir := make([]uint32, 1<<k+1)
	shift := uint8(32 - k)
	for _, s := range slots {
		dir[uint32(s>>32)>>shift+1]++
	}
	for b := 1; b < len(dir); b++ {
		dir[b] += dir[b-1]
	}
	t.slots, t.homes, t.dir, t.shift = slots, 0, dir, shift
}

// Get returns key's value and text.
func (t *txTable) Get(key string) (v txVal, text string, ok bool) {
	return t.getH(key, t.hash(key))
}

func (t *txTable) getH(key string, h uint64) (v txVal, text string, ok bool) {
	p, pos := t.find(key, h)
	if p == nil {
		return txVal{}, "", false
	}
	c, off := p.at(pos)
	e := parseEntry(c, off)
	if e.tlen > 0 {
		text = string(c[e.text:e.end])
	}
	return txVal{state: e.state, a: e.a, b: e.b}, text, true
}

// Has reports whether key is in the table.
func (t *txTable) Has(key string) bool { return t.hasH(key, t.hash(key)) }

func (t *txTable) hasH(key string, h uint64) bool {
	p, _ := t.find(key, h)
	return p != nil
}

// Len returns the number of keys.
func (t *txTable) Len() int {
	n := t.n
	for _, p := range t.older {
		n += p.n
	}
	return n
}

// parts returns the sealed parts then this one.
func (t *txTable) parts() []*txTable { return append(slices.Clip(t.older), t) }

// All calls f for every key, in storage order (a replaced entry at the
// place of its replacement), until f returns false.
func (t *txTable) All(f func(key string, v txVal, text string) bool) {
	for _, p := range t.parts() {
		if !allChunks(p.chunks, f) {
			return
		}
	}
}

func allChunks(chunks [][]byte, f func(key string, v txVal, text string) bool) bool {
	for _, c := range chunks {
		for off := 0; off < len(c); {
			e := parseEntry(c, off)
			if c[off]&txDead == 0 && !f(string(c[e.key:e.text]), txVal{state: e.state, a: e.a, b: e.b}, string(c[e.text:e.end])) {
				return false
			}
			off = e.end
		}
	}
	return true
}

// txFrozen is a view of a txTable's entries as they were, for reading by
// another goroutine while the table changes.
type txFrozen struct {
	chunks [][]byte
	n      int
	id     uint64 // the table's
}

// freeze returns a view of the entries as they are now, in O(chunks): the
// view shares the chunks, each cut at its present length (later entries
// are appended past it, or to new chunks), and marks them shared, so that
// a value changed in place later (Put) changes a copy of its chunk
// instead (writable). A snapshot's pause on the loop is this, not a copy
// of every retained entry.
func (t *txTable) freeze() txFrozen {
	f := txFrozen{n: t.Len(), id: t.id}
	for _, p := range t.parts() {
		if cap(p.shared) >= len(p.chunks) {
			p.shared = p.shared[:len(p.chunks)]
		} else {
			p.shared = make([]bool, len(p.chunks), cap(p.chunks))
		}
		for i, c := range p.chunks {
			f.chunks = append(f.chunks, c[:len(c):len(c)])
			p.shared[i] = true
		}
	}
	return f
}

// encodedMax bounds the bytes appendFinished takes for f: an entry is
// encoded as its stored bytes, three more at most (a zero number or an
// empty text's length stored as absent, written as one byte), and a
// uvarint count.
func (f *txFrozen) encodedMax() int {
	n := binary.MaxVarintLen64 + 3*f.n
	for _, c := range f.chunks {
		n += len(c)
	}
	return n
}

// All is txTable.All over the frozen copy.
func (f *txFrozen) All(fn func(key string, v txVal, text string) bool) { allChunks(f.chunks, fn) }

// expiredSet holds the id hashes of a dropped generation, full 64-bit, in
// a packed layout: sorted, with a directory of where each bucket of hashes
// begins (about 8 per bucket), 8.5 to 9 bytes per id. A hash match means
// "seen" (a false match, 1 in 2^64 per pair, refuses a new id as expired:
// the safe direction).
//
// The hash is SipHash-2-4 under a random 128-bit key of the set's own, not
// the tables' maphash seed: a key can be written down, so the set goes into
// a coordinator's snapshot as it is (its ids are gone, it could
// not be hashed again), and under a secret key a client cannot craft ids
// that collide with expired ones to get new transactions refused.
type expiredSet struct {
	k0, k1 uint64
	hashes []uint64 // ascending
	dir    []uint32
	shift  uint8
	id     uint64 // for the snapshot writer, as txTable.id
}

// expiredSet hashes every live key of t (read in storage order) under a new
// random key.
func (t *txTable) expiredSet() expiredSet {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return t.expiredSetKey(binary.LittleEndian.Uint64(key[:8]), binary.LittleEndian.Uint64(key[8:]))
}

// expiredSetKey is expiredSet under the key k0, k1 (another set's: one
// hash then serves both).
func (t *txTable) expiredSetKey(k0, k1 uint64) expiredSet {
	hs := make([]uint64, 0, t.Len())
	for _, p := range t.parts() {
		for _, c := range p.chunks {
			for off := 0; off < len(c); {
				e := parseEntry(c, off)
				if c[off]&txDead == 0 {
					hs = append(hs, siphash.Hash(k0, k1, c[e.key:e.text]))
				}
				off = e.end
			}
		}
	}
	return newExpiredSet(k0, k1, hs)
}

// newExpiredSet sorts hs (bucketSort) and keeps its directory.
func newExpiredSet(k0, k1 uint64, hs []uint64) expiredSet {
	sorted, dir, shift := bucketSort(hs)
	return expiredSet{k0: k0, k1: k1, hashes: sorted, dir: dir, shift: shift, id: tableIDs.Add(1)}
}

// bucketSort sorts values whose high bits are uniformly spread (hashes,
// or index slots led by a hash's tag): a counting sort by the high bits
// into buckets of about txBucket values, then each small bucket. dir[b]
// is where bucket b = v>>shift begins in sorted, dir[len(dir)-1] =
// len(sorted). The input is not changed; one already ascending is
// returned as it is, with its directory.
func bucketSort(hs []uint64) (sorted []uint64, dir []uint32, shift uint8) {
	n := len(hs)
	k := bits.Len(uint(n / txBucket))
	shift = uint8(64 - k)
	dir = make([]uint32, 1<<k+1)
	ascending := true
	for i, h := range hs {
		dir[h>>shift+1]++
		ascending = ascending && (i == 0 || hs[i-1] <= h)
	}
	for b := 1; b < len(dir); b++ {
		dir[b] += dir[b-1]
	}
	if ascending { // an expired set read back from its file: sorted already
		return hs, dir, shift
	}
	next := slices.Clone(dir[:len(dir)-1])
	sorted = make([]uint64, n)
	if k <= bucketTopBits {
		for _, h := range hs {
			b := h >> shift
			sorted[next[b]] = h
			next[b]++
		}
	} else {
		// Two passes instead of one to every bucket at once (2^k places
		// written in turn, all over an array of millions: a cache miss
		// each): by the top bucketTopBits bits, then each of those ranges
		// (tens of KB) to its buckets, through a scratch copy.
		sub := k - bucketTopBits
		top := make([]uint32, 1<<bucketTopBits)
		for j := range top {
			top[j] = dir[j<<sub]
		}
		for _, h := range hs {
			j := h >> (64 - bucketTopBits)
			sorted[top[j]] = h
			top[j]++
		}
		var scratch []uint64
		for j := range 1 << bucketTopBits {
			lo, hi := dir[j<<sub], dir[(j+1)<<sub]
			scratch = append(scratch[:0], sorted[lo:hi]...)
			for _, h := range scratch {
				b := h >> shift
				sorted[next[b]] = h
				next[b]++
			}
		}
	}
	for b := range len(dir) - 1 {
		// Buckets hold about txBucket values: an insertion sort in place,
		// without slices.Sort's call and dispatch for each.
		lo, hi := int(dir[b]), int(dir[b+1])
		if hi-lo > 4*txBucket {
			slices.Sort(sorted[lo:hi])
			continue
		}
		for i := lo + 1; i < hi; i++ {
			v := sorted[i]
			j := i
			for ; j > lo && sorted[j-1] > v; j-- {
				sorted[j] = sorted[j-1]
			}
			sorted[j] = v
		}
	}
	return sorted, dir, shift
}

// Len returns the number of ids in the set.
func (e *expiredSet) Len() int { return len(e.hashes) }

func (e *expiredSet) has(key string) bool {
	if len(e.dir) == 0 {
		return false
	}
	return e.hasH(e.hash(key))
}

// hash is key's hash under the set's key.
func (e *expiredSet) hash(key string) uint64 {
	return siphash.Hash(e.k0, e.k1, unsafe.Slice(unsafe.StringData(key), len(key)))
}

func (e *expiredSet) hasH(h uint64) bool {
	if len(e.dir) == 0 {
		return false
	}
	b := h >> e.shift
	for i, end := e.dir[b], e.dir[b+1]; i < end; i++ {
		switch s := e.hashes[i]; {
		case s == h:
			return true
		case s > h:
			return false
		}
	}
	return false
}
