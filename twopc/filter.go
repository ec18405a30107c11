package twopc

import "math/bits"

// tagFilter answers "may one of these tables hold an id with this tag?"
// for the packed (read-only) generations of a machine's finished
// transactions, so that an id none of them holds — every new transaction
// — costs one probe of it instead of one of each generation. It is a
// blocked Bloom filter: a tag picks a block of 512 bits (one cache line)
// and four bits in it; about 10 bits per tag, so about one tag in a
// hundred that no table holds passes, and is then looked up in each.
// Never a false "no": it is built from every slot tag of the tables
// (including replaced entries, which only add passes), and the tables do
// not change after they are packed. Rebuilt whole when the set of tables
// changes (a rotation, a restore): about 600,000 tags take a few ms.
type tagFilter struct {
	words  []uint64 // 8 words a block
	blocks uint64
}

const (
	filterBlockWords = 8  // 512 bits: one cache line
	filterBitsPerTag = 10 // about 1% of absent tags pass with 4 bits set
)

// newTagFilter builds the filter of every slot tag of tables.
func newTagFilter(tables []*txTable) tagFilter {
	n := 0
	for _, t := range tables {
		for _, p := range t.parts() {
			n += p.used
		}
	}
	if n == 0 {
		return tagFilter{}
	}
	blocks := uint64(max(1, (n*filterBitsPerTag+511)/512))
	f := tagFilter{words: make([]uint64, filterBlockWords*blocks), blocks: blocks}
	for _, t := range tables {
		for _, p := range t.parts() {
			for _, s := range p.slots {
				if s != 0 {
					f.add(uint32(s >> 32))
				}
			}
		}
	}
	return f
}

// mixTag spreads a tag's bits over 64 (a splitmix64 finalizer).
func mixTag(tag uint32) uint64 {
	h := uint64(tag) * 0x9e3779b97f4a7c15
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// block returns the words of h's block: its high 32 bits scaled to the
// block count (the low 36 pick the bits).
func (f *tagFilter) block(h uint64) []uint64 {
	b, _ := bits.Mul64(h>>32, f.blocks<<32)
	return f.words[b*filterBlockWords : (b+1)*filterBlockWords : (b+1)*filterBlockWords]
}

func (f *tagFilter) add(tag uint32) {
	h := mixTag(tag)
	w := f.block(h)
	for i := range 4 {
		bit := h >> (9 * i) & 511
		w[bit>>6] |= 1 << (bit & 63)
	}
}

// mayHave reports whether a table the filter was built from may hold an
// id with tag (false: none does).
func (f *tagFilter) mayHave(tag uint32) bool {
	if len(f.words) == 0 {
		return false
	}
	h := mixTag(tag)
	w := f.block(h)
	for i := range 4 {
		bit := h >> (9 * i) & 511
		if w[bit>>6]&(1<<(bit&63)) == 0 {
			return false
		}
	}
	return true
}
