package twopc

import (
	"hash/maphash"
	"math"
	"slices"
)

// txTable remembers finished transactions: for each id, a small value and
// an optional text (an abort reason). A machine remembers every transaction
// it ever finished, so this table only grows; a Go map of strings would hold
// two pointers per entry for the garbage collector to trace on every cycle,
// a cost that grows with the history and is paid again and again. Here the
// ids and texts live in fixed-size byte chunks, the entries in fixed-size
// chunks of plain integers, and the index is an open-addressing table of
// (hash, entry number) pairs: nothing in it is a pointer the collector must
// follow, nothing already stored is ever copied when the table grows except
// the 12-byte index slots, and the index stays at most half full so that a
// lookup of an id that is not there (the common case: a new transaction)
// ends after a probe or two.
//
// It is not safe for concurrent use.
type txTable struct {
	seed    maphash.Seed
	slots   []txSlot // len is a power of two; hash 0 means empty
	entries [][]txEntry
	bytes   [][]byte
	n       int
}

// txSlot is 12 bytes: the hash in two halves and a 32-bit entry number
// keep its alignment at 4 (a uint64 field would pad it to 16).
type txSlot struct {
	lo, hi uint32 // the hash; never 0 for a used slot
	entry  uint32 // index into entries
}

func (s *txSlot) hash() uint64 { return uint64(s.hi)<<32 | uint64(s.lo) }

func (s *txSlot) set(h uint64, entry uint32) { s.lo, s.hi, s.entry = uint32(h), uint32(h>>32), entry }

// txEntry is 28 bytes (all fields 4-byte aligned).
type txEntry struct {
	chunk, off uint32 // where the key is, the text right after it
	klen, tlen uint32
	v          txVal
}

// txVal is what a txTable keeps per key besides its text.
type txVal struct {
	state uint8
	a, b  uint32 // the user's numbers (an attempt, a generation)
}

const (
	txEntryChunk = 4096    // entries per chunk
	txByteChunk  = 1 << 20 // bytes per chunk (a longer key+text gets its own)
)

func newTxTable() *txTable {
	return &txTable{seed: maphash.MakeSeed(), slots: make([]txSlot, 64)}
}

func (t *txTable) hash(key string) uint64 {
	h := maphash.String(t.seed, key)
	if h == 0 {
		h = 1
	}
	return h
}

func (t *txTable) entry(i uint32) *txEntry { return &t.entries[i/txEntryChunk][i%txEntryChunk] }

// data returns an entry's key and text bytes.
func (t *txTable) data(e *txEntry) (key, text []byte) {
	c, off := t.bytes[e.chunk], e.off
	return c[off : off+e.klen], c[off+e.klen : off+e.klen+e.tlen]
}

// find returns the slot of key, or the empty slot where it would go.
func (t *txTable) find(key string, h uint64) *txSlot {
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		sh := s.hash()
		if sh == 0 {
			return s
		}
		if sh == h {
			if k, _ := t.data(t.entry(s.entry)); string(k) == key {
				return s
			}
		}
	}
}

// store copies key and text into the byte chunks.
func (t *txTable) store(key, text string) (chunk, off uint32) {
	need := len(key) + len(text)
	last := len(t.bytes) - 1
	if last < 0 || len(t.bytes[last])+need > cap(t.bytes[last]) {
		t.bytes = append(t.bytes, make([]byte, 0, max(txByteChunk, need)))
		last++
	}
	c := t.bytes[last]
	chunk, off = uint32(last), uint32(len(c))
	c = append(c, key...)
	t.bytes[last] = append(c, text...)
	return chunk, off
}

// Put sets key's value and text, replacing any earlier ones.
func (t *txTable) Put(key string, v txVal, text string) {
	h := t.hash(key)
	s := t.find(key, h)
	if s.hash() != 0 {
		e := t.entry(s.entry)
		if _, old := t.data(e); string(old) == text {
			e.v = v // the common replacement: no new bytes
			return
		}
		e.chunk, e.off = t.store(key, text)
		e.klen, e.tlen, e.v = uint32(len(key)), uint32(len(text)), v
		return
	}
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
		s = t.find(key, h)
	}
	if t.n >= math.MaxUint32 {
		panic("twopc: txTable: more than 2^32-1 entries") // a generation that large would need 100+ GiB
	}
	i := uint32(t.n)
	if i%txEntryChunk == 0 {
		t.entries = append(t.entries, make([]txEntry, txEntryChunk))
	}
	chunk, off := t.store(key, text)
	*t.entry(i) = txEntry{chunk: chunk, off: off, klen: uint32(len(key)), tlen: uint32(len(text)), v: v}
	s.set(h, i)
	t.n++
}

// Get returns key's value and text.
func (t *txTable) Get(key string) (v txVal, text string, ok bool) {
	s := t.find(key, t.hash(key))
	if s.hash() == 0 {
		return txVal{}, "", false
	}
	e := t.entry(s.entry)
	if e.tlen > 0 {
		_, b := t.data(e)
		text = string(b)
	}
	return e.v, text, true
}

// Has reports whether key is in the table.
func (t *txTable) Has(key string) bool { return t.find(key, t.hash(key)).hash() != 0 }

// Len returns the number of keys.
func (t *txTable) Len() int { return t.n }

// All calls f for every key, in the order they were first put, until f
// returns false.
func (t *txTable) All(f func(key string, v txVal, text string) bool) {
	for i := range uint32(t.n) {
		e := t.entry(i)
		k, text := t.data(e)
		if !f(string(k), e.v, string(text)) {
			return
		}
	}
}

// txFrozen is a copy of a txTable's entries as they were, for reading by
// another goroutine while the table changes: the entries are copied (an
// entry is changed in place by Put), the byte chunks are shared (bytes
// already stored are never written again, and a chunk never moves).
type txFrozen struct {
	entries [][]txEntry
	bytes   [][]byte
	n       int
}

// freeze copies the entries: one memmove per chunk of 4096 entries, 24
// bytes each, no hashing and no allocation per entry.
func (t *txTable) freeze() txFrozen {
	f := txFrozen{entries: make([][]txEntry, len(t.entries)), bytes: slices.Clone(t.bytes), n: t.n}
	for i, c := range t.entries {
		f.entries[i] = slices.Clone(c)
	}
	return f
}

// All is txTable.All over the frozen copy.
func (f *txFrozen) All(fn func(key string, v txVal, text string) bool) {
	for i := range uint32(f.n) {
		e := &f.entries[i/txEntryChunk][i%txEntryChunk]
		c, off := f.bytes[e.chunk], e.off
		if !fn(string(c[off:off+e.klen]), e.v, string(c[off+e.klen:off+e.klen+e.tlen])) {
			return
		}
	}
}

func (t *txTable) grow() {
	old := t.slots
	t.slots = make([]txSlot, 2*len(old))
	mask := uint64(len(t.slots) - 1)
	for _, s := range old {
		h := s.hash()
		if h == 0 {
			continue
		}
		i := h & mask
		for t.slots[i].hash() != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}
