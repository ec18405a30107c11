package twopc

import "hash/maphash"

// txTable remembers finished transactions: for each id, a small state and
// an optional text (an abort reason). A machine remembers every transaction
// it ever finished, so this table only grows; a Go map of strings would hold
// two pointers per entry for the garbage collector to trace on every cycle,
// a cost that grows with the history and is paid again and again. Here the
// ids and texts live in one byte arena and the index is an open-addressing
// table of plain integers: nothing in it is a pointer, so the collector
// never looks inside.
//
// It is not safe for concurrent use.
type txTable struct {
	seed  maphash.Seed
	slots []txSlot // len is a power of two; zero hash means empty
	arena []byte
	n     int
}

type txSlot struct {
	hash uint64 // never 0 for a used slot
	off  uint64 // key at arena[off:off+klen], text right after it
	klen uint32
	tlen uint32
	v    txVal
}

// txVal is what a txTable keeps per key besides its text.
type txVal struct {
	state uint8
	a, b  uint32 // the user's numbers (an attempt, a generation)
}

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

func (t *txTable) key(s *txSlot) []byte { return t.arena[s.off : s.off+uint64(s.klen)] }

// find returns the slot of key, or the empty slot where it would go.
func (t *txTable) find(key string, h uint64) *txSlot {
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.hash == 0 || (s.hash == h && string(t.key(s)) == key) {
			return s
		}
	}
}

// Put sets key's value and text, replacing any earlier ones.
func (t *txTable) Put(key string, v txVal, text string) {
	h := t.hash(key)
	s := t.find(key, h)
	if s.hash != 0 && s.tlen == 0 && text == "" {
		s.v = v // the common replacement: no new bytes
		return
	}
	if s.hash == 0 {
		if 4*(t.n+1) > 3*len(t.slots) {
			t.grow()
			s = t.find(key, h)
		}
		t.n++
	}
	off := uint64(len(t.arena))
	t.arena = append(t.arena, key...)
	t.arena = append(t.arena, text...)
	*s = txSlot{hash: h, off: off, klen: uint32(len(key)), tlen: uint32(len(text)), v: v}
}

// Get returns key's value and text.
func (t *txTable) Get(key string) (v txVal, text string, ok bool) {
	s := t.find(key, t.hash(key))
	if s.hash == 0 {
		return txVal{}, "", false
	}
	if s.tlen > 0 {
		at := s.off + uint64(s.klen)
		text = string(t.arena[at : at+uint64(s.tlen)])
	}
	return s.v, text, true
}

// Has reports whether key is in the table.
func (t *txTable) Has(key string) bool { return t.find(key, t.hash(key)).hash != 0 }

// Len returns the number of keys.
func (t *txTable) Len() int { return t.n }

// All calls f for every key, in no particular order, until f returns false.
func (t *txTable) All(f func(key string, v txVal, text string) bool) {
	for i := range t.slots {
		s := &t.slots[i]
		if s.hash == 0 {
			continue
		}
		at := s.off + uint64(s.klen)
		if !f(string(t.key(s)), s.v, string(t.arena[at:at+uint64(s.tlen)])) {
			return
		}
	}
}

func (t *txTable) grow() {
	old := t.slots
	t.slots = make([]txSlot, 2*len(old))
	mask := uint64(len(t.slots) - 1)
	for _, s := range old {
		if s.hash == 0 {
			continue
		}
		i := s.hash & mask
		for t.slots[i].hash != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}
