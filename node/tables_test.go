package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// tablesFS is a file system the table tests run on, with a way to change
// a file's bytes behind the back of the files open on it (damage).
type tablesFS struct {
	fsys  wal.FS
	dir   string
	read  func(t *testing.T, name string) []byte
	write func(t *testing.T, name string, b []byte)
}

// onBothFS runs fn on a MemFS and on the OS's file system.
func onBothFS(t *testing.T, fn func(t *testing.T, f tablesFS)) {
	t.Run("memfs", func(t *testing.T) {
		m := wal.NewMemFS(1)
		fn(t, tablesFS{fsys: m, dir: "/snap",
			read: func(t *testing.T, name string) []byte {
				b, err := m.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			write: func(t *testing.T, name string, b []byte) {
				if err := m.WriteFile(name, b); err != nil {
					t.Fatal(err)
				}
			}})
	})
	t.Run("osfs", func(t *testing.T) {
		fn(t, tablesFS{fsys: wal.OSFS(), dir: t.TempDir(),
			read: func(t *testing.T, name string) []byte {
				b, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			write: func(t *testing.T, name string, b []byte) {
				if err := os.WriteFile(name, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}})
	})
}

// flip changes one byte of file name in dir.
func (f tablesFS) flip(t *testing.T, name string, off int64) {
	t.Helper()
	p := path.Join(f.dir, name)
	b := f.read(t, p)
	if off >= int64(len(b)) {
		t.Fatalf("damage at %d of %s, which holds %d bytes", off, name, len(b))
	}
	b[off] ^= 0x5a
	f.write(t, p, b)
}

// size is the length of file name in dir.
func (f tablesFS) size(t *testing.T, name string) int64 {
	t.Helper()
	return int64(len(f.read(t, path.Join(f.dir, name))))
}

// testSeed returns a random seed, or TABLES_SEED's to replay a failure.
func testSeed(t *testing.T) uint64 {
	if s := os.Getenv("TABLES_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TABLES_SEED=%q: %v", s, err)
		}
		return seed
	}
	return rand.Uint64()
}

func uvarintSize(v int) int64 { return int64(len(binary.AppendUvarint(nil, uint64(v)))) }

// pieceSize is what a piece of chunk i at offset from with n bytes adds to
// a table file: the ledger's entry header, the chunk number and offset,
// the bytes.
func pieceSize(i, from, n int) int64 { return 8 + uvarintSize(i) + uvarintSize(from) + int64(n) }

// writeSize is what writing chunk i's bytes [from, to) adds: pieces of
// at most tablePiece bytes; a chunk written whole (from 0) is one piece
// at least, empty for an empty chunk.
func writeSize(i, from, to int) int64 {
	return pieces(i, from, to, from == 0)
}

// growSize is what a chunk grown from from to to adds: nothing if it did
// not grow.
func growSize(i, from, to int) int64 { return pieces(i, from, to, false) }

func pieces(i, from, to int, whole bool) int64 {
	var n int64
	for first := true; from < to || whole && first; first = false {
		end := min(to, from+tablePiece)
		n += pieceSize(i, from, end-from)
		from = end
	}
	return n
}

// wholeSize is what writing chunks whole adds.
func wholeSize(chunks [][]byte) int64 {
	var n int64
	for i, c := range chunks {
		n += writeSize(i, 0, len(c))
	}
	return n
}

// readBack reads ref's chunks as a restart would.
func readBack(t *testing.T, fsys wal.FS, dir string, ref twopc.TableRef) [][]byte {
	t.Helper()
	src, err := readTables(fsys, dir, []twopc.TableRef{ref})
	if err != nil {
		t.Fatalf("reading %+v: %v", ref, err)
	}
	var got [][]byte
	if err := src.Chunks(ref, func(c []byte) error { got = append(got, bytes.Clone(c)); return nil }); err != nil {
		t.Fatalf("the chunks of %+v: %v", ref, err)
	}
	return got
}

func sameChunks(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }

func chunksDiff(got, want [][]byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d chunks, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			return fmt.Sprintf("chunk %d: %d bytes, want %d (first difference at %d)", i, len(got[i]), len(want[i]), firstDiff(got[i], want[i]))
		}
	}
	return "the same"
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func copyChunks(cs [][]byte) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = bytes.Clone(c)
	}
	return out
}

// fill fills b with random bytes.
func fill(rng *rand.Rand, b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, rng.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// filled returns a chunk of n random bytes with room for capacity.
func filled(rng *rand.Rand, n, capacity int) []byte {
	c := make([]byte, n, max(n, capacity))
	fill(rng, c)
	return c
}

// grow grows c in place by n random bytes (its array must have room).
func grow(rng *rand.Rand, c []byte, n int) []byte {
	if len(c)+n > cap(c) {
		panic("grow past the chunk's capacity")
	}
	g := c[:len(c)+n]
	fill(rng, g[len(c):])
	return g
}

// replaced returns a copy of c in an array of its own with one byte
// changed (a copy on write with a value changed in place).
func replaced(c []byte, extra int) []byte {
	own := make([]byte, len(c), cap(c)+extra+1) // never the one address of empty arrays
	copy(own, c)
	if len(own) > 0 {
		own[len(own)/2] ^= 0xff
	}
	return own
}

// tableSnap is one Table call: the ref and the chunks it covered.
type tableSnap struct {
	ref    twopc.TableRef
	chunks [][]byte
}

// checkHistory reads back every ref of hist: an older snapshot's ref
// still reads the chunks as they were then (a file's prefix).
func checkHistory(t *testing.T, fsys wal.FS, dir string, hist []tableSnap) {
	t.Helper()
	for i, h := range hist {
		if got := readBack(t, fsys, dir, h.ref); !sameChunks(got, h.chunks) {
			t.Fatalf("snapshot %d's table (%+v) reads back %s", i, h.ref, chunksDiff(got, h.chunks))
		}
	}
}

// TestTablesWriteWhatChanged: the first Table call writes every chunk; a
// later one appends only what changed: the bytes a chunk grew by in place
// (same array, longer), a chunk replaced by another array whole (even of
// the same length), a new chunk whole, nothing for a chunk unchanged. The
// bytes appended (Tables.written, Tables.appends, the file's growth) are
// exactly the pieces' bytes and their headers, the ref names the same
// file, and the file read back gives the current chunks exactly; every
// older ref still gives the chunks of its time.
func TestTablesWriteWhatChanged(t *testing.T) {
	onBothFS(t, func(t *testing.T, f tablesFS) {
		seed := testSeed(t)
		rng := rand.New(rand.NewPCG(seed, 1))
		tb := NewTables(f.fsys, f.dir)
		defer tb.Close()
		var cs [][]byte
		var c3 []byte
		steps := []struct {
			name   string
			change func()
			want   func() int64 // the bytes appended
		}{
			{"the first call: every chunk",
				func() { cs = [][]byte{filled(rng, 100, 4096), filled(rng, 50, 4096)} },
				func() int64 { return wholeSize(cs) }},
			{"nothing changed", func() {}, func() int64 { return 0 }},
			{"the last chunk grown in place",
				func() { cs[1] = grow(rng, cs[1], 250) },
				func() int64 { return growSize(1, 50, 300) }},
			{"both grown",
				func() { cs[0], cs[1] = grow(rng, cs[0], 10), grow(rng, cs[1], 1) },
				func() int64 { return growSize(0, 100, 110) + growSize(1, 300, 301) }},
			{"a chunk replaced by an array of the same length",
				func() { cs[0] = replaced(cs[0], 0) },
				func() int64 { return writeSize(0, 0, 110) }},
			{"the replacement grown in place",
				func() { cs[0] = grow(rng, cs[0], 7) },
				func() int64 { return growSize(0, 110, 117) }},
			{"a new chunk",
				func() { cs = append(cs, filled(rng, 700, 2000)) },
				func() int64 { return writeSize(2, 0, 700) }},
			{"replaced and grown since the last call: whole",
				func() { cs[1] = grow(rng, replaced(cs[1], 100), 20) },
				func() int64 { return writeSize(1, 0, 321) }},
			{"an empty new chunk",
				func() { c3 = make([]byte, 0, 64); cs = append(cs, c3) },
				func() int64 { return writeSize(3, 0, 0) }},
			{"the empty chunk grown",
				func() { cs[3] = grow(rng, c3, 30) },
				func() int64 { return writeSize(3, 0, 30) }},
			{"a chunk shorter at the same address: whole",
				func() { cs[2] = cs[2][:500] },
				func() int64 { return writeSize(2, 0, 500) }},
			{"every chunk grown and one more",
				func() {
					for i := range cs {
						cs[i] = grow(rng, cs[i], 3)
					}
					cs = append(cs, filled(rng, 5, 5))
				},
				func() int64 {
					return growSize(0, 117, 120) + growSize(1, 321, 324) + growSize(2, 500, 503) + growSize(3, 30, 33) + writeSize(4, 0, 5)
				}},
		}
		var hist []tableSnap
		var file string
		for i, st := range steps {
			st.change()
			want := st.want()
			tb.Begin(uint64(10 + i))
			before := int64(0)
			if len(hist) > 0 {
				before = hist[len(hist)-1].ref.Len
			}
			ref, err := tb.Table(42, cs, 1000+i)
			if err != nil {
				t.Fatalf("seed %d, %s: %v", seed, st.name, err)
			}
			names := tb.End()
			what := fmt.Sprintf("seed %d, step %d (%s)", seed, i, st.name)
			if i == 0 {
				file = ref.File
				before = ledger.HeaderLen
				if !strings.HasPrefix(file, TablePrefix) {
					t.Fatalf("%s: file %q", what, file)
				}
			}
			if ref.File != file || ref.Chunks != len(cs) || ref.N != 1000+i || !slices.Equal(names, []string{file}) {
				t.Fatalf("%s: ref %+v, End named %v; want file %s, %d chunks, %d entries", what, ref, names, file, len(cs), 1000+i)
			}
			if tb.written != want || ref.Len-before != want {
				t.Fatalf("%s: %d bytes written, the file grew by %d (from %d to %d); want %d", what, tb.written, ref.Len-before, before, ref.Len, want)
			}
			wantAppends := []TableAppend{{File: file, From: before, To: ref.Len}}
			if want == 0 {
				wantAppends = nil
			}
			if !slices.Equal(tb.appends, wantAppends) {
				t.Fatalf("%s: appends %+v, want %+v", what, tb.appends, wantAppends)
			}
			if n := f.size(t, file); n != ref.Len {
				t.Fatalf("%s: the file holds %d bytes, the ref says %d", what, n, ref.Len)
			}
			hist = append(hist, tableSnap{ref, copyChunks(cs)})
			if got := readBack(t, f.fsys, f.dir, ref); !sameChunks(got, cs) {
				t.Fatalf("%s: reads back %s", what, chunksDiff(got, cs))
			}
		}
		checkHistory(t, f.fsys, f.dir, hist)
	})
}

// TestTablesRandomChanges: random changes to a few tables' chunks (grown
// in place, replaced, shortened, new, big, tables dropped and new ones),
// one Table call per table and snapshot: every snapshot's refs read back
// the chunks of its time, before and after the later snapshots'
// appends, and each call appends exactly the bytes that changed unless
// it starts a new file.
func TestTablesRandomChanges(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	m := wal.NewMemFS(seed)
	tb := NewTables(m, "/snap")
	defer tb.Close()
	type table struct {
		chunks [][]byte
		marks  []int // lengths when last written, per chunk (-1: to write whole)
		file   string
	}
	tables := map[uint64]*table{}
	nextID := uint64(1)
	ids := func() []uint64 { return slices.Sorted(maps.Keys(tables)) } // in order: the seed replays
	var hist []tableSnap
	for snap := range 40 {
		if len(tables) < 3 || rng.IntN(10) == 0 {
			tables[nextID] = &table{}
			nextID++
		}
		if len(tables) > 1 && rng.IntN(15) == 0 {
			ids := ids()
			delete(tables, ids[rng.IntN(len(ids))]) // a table is gone (a rotation dropped it)
		}
		tb.Begin(uint64(snap + 1))
		for _, id := range ids() {
			tab := tables[id]
			for range rng.IntN(4) {
				switch k := rng.IntN(10); {
				case k < 4 && len(tab.chunks) > 0:
					i := rng.IntN(len(tab.chunks))
					c := tab.chunks[i]
					if n := rng.IntN(300); len(c)+n <= cap(c) {
						tab.chunks[i] = grow(rng, c, n)
					}
				case k < 6 && len(tab.chunks) > 0:
					i := rng.IntN(len(tab.chunks))
					tab.chunks[i] = replaced(tab.chunks[i], rng.IntN(100))
					tab.marks[i] = -1
				case k < 7 && len(tab.chunks) > 0:
					// Shorter at the same address (no room: growing it
					// again would change bytes the spill saw, which a
					// table never does). Shorter than when last written,
					// it is written whole; still longer (it grew first),
					// it grew.
					i := rng.IntN(len(tab.chunks))
					n := len(tab.chunks[i]) / 2
					tab.chunks[i] = tab.chunks[i][:n:n]
					if tab.marks[i] > n {
						tab.marks[i] = -1
					}
				case k < 8 && rng.IntN(20) == 0:
					tab.chunks = append(tab.chunks, filled(rng, tablePiece+rng.IntN(1000), 300<<10))
					tab.marks = append(tab.marks, -1)
				default:
					tab.chunks = append(tab.chunks, filled(rng, rng.IntN(500), 1<<10+rng.IntN(4000)))
					tab.marks = append(tab.marks, -1)
				}
			}
			var want int64
			for i, c := range tab.chunks {
				if tab.marks[i] < 0 {
					want += writeSize(i, 0, len(c))
				} else {
					want += growSize(i, tab.marks[i], len(c))
				}
			}
			before := tb.written
			ref, err := tb.Table(id, tab.chunks, len(tab.chunks))
			if err != nil {
				t.Fatalf("seed %d, snapshot %d, table %d: %v", seed, snap, id, err)
			}
			got := tb.written - before
			if ref.File != tab.file {
				// A new file (the first, or one grown past twice the
				// table): everything written.
				want = wholeSize(tab.chunks)
				tab.file = ref.File
			}
			if got != want {
				t.Fatalf("seed %d, snapshot %d, table %d: appended %d bytes, want %d", seed, snap, id, got, want)
			}
			for i, c := range tab.chunks {
				tab.marks[i] = len(c)
			}
			hist = append(hist, tableSnap{ref, copyChunks(tab.chunks)})
			if rb := readBack(t, m, "/snap", ref); !sameChunks(rb, tab.chunks) {
				t.Fatalf("seed %d, snapshot %d, table %d: reads back %s", seed, snap, id, chunksDiff(rb, tab.chunks))
			}
		}
		tb.End()
		if snap == 20 {
			checkHistory(t, m, "/snap", hist)
		}
	}
	checkHistory(t, m, "/snap", hist)
}

// TestTablesBigChunk: a chunk larger than a ledger entry may hold is
// written in pieces of tablePiece bytes, whole and when it grows, and
// reads back exactly.
func TestTablesBigChunk(t *testing.T) {
	onBothFS(t, func(t *testing.T, f tablesFS) {
		seed := testSeed(t)
		rng := rand.New(rand.NewPCG(seed, 3))
		tb := NewTables(f.fsys, f.dir)
		defer tb.Close()
		small := filled(rng, 1000, 1000)
		big := filled(rng, 600<<10, 1<<20)
		var hist []tableSnap
		entries := func(ref twopc.TableRef) int {
			n := 0
			if err := ledger.Scan(f.fsys, path.Join(f.dir, ref.File), ref.Len, func([]byte) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			return n
		}
		for i, st := range []struct {
			name    string
			change  func()
			want    int64
			entries int // ledger entries in the file after it
		}{
			{"a chunk of 600 KiB", func() {}, writeSize(0, 0, 1000) + writeSize(1, 0, 600<<10), 1 + 3},
			{"grown by 300 KiB", func() { big = grow(rng, big, 300<<10) }, growSize(1, 600<<10, 900<<10), 4 + 2},
			{"replaced", func() { big = replaced(big, 0) }, writeSize(1, 0, 900<<10), 6 + 4},
		} {
			st.change()
			cs := [][]byte{small, big}
			tb.Begin(uint64(i + 1))
			ref, err := tb.Table(1, cs, 2)
			tb.End()
			if err != nil {
				t.Fatalf("seed %d, %s: %v", seed, st.name, err)
			}
			if tb.written != st.want || entries(ref) != st.entries {
				t.Fatalf("seed %d, %s: %d bytes appended, %d entries in the file; want %d bytes, %d entries", seed, st.name, tb.written, entries(ref), st.want, st.entries)
			}
			if got := readBack(t, f.fsys, f.dir, ref); !sameChunks(got, cs) {
				t.Fatalf("seed %d, %s: reads back %s", seed, st.name, chunksDiff(got, cs))
			}
			hist = append(hist, tableSnap{ref, copyChunks(cs)})
		}
		checkHistory(t, f.fsys, f.dir, hist)
	})
}

// TestTablesRewriteGrownFile: a table whose file has grown past twice the
// table's bytes plus 1 MiB (chunks replaced again and again) is written
// afresh, whole, to a file of a new name, at the first call that finds it
// so; the old file still reads the older snapshots' chunks. A table of
// fewer chunks than its file holds gets a new file too.
func TestTablesRewriteGrownFile(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	m := wal.NewMemFS(seed)
	tb := NewTables(m, "/snap")
	defer tb.Close()
	cs := [][]byte{filled(rng, 256<<10, 256<<10), filled(rng, 10, 100)}
	var size int64
	for _, c := range cs {
		size += int64(len(c))
	}
	var hist []tableSnap
	var file string
	var lastLen int64
	switched := 0
	for i := range 16 {
		if i > 0 {
			cs[0] = replaced(cs[0], 0)
		}
		tb.Begin(uint64(i + 1))
		ref, err := tb.Table(9, cs, 2)
		tb.End()
		if err != nil {
			t.Fatal(err)
		}
		want := i > 0 && lastLen > 2*size+1<<20
		switch {
		case i == 0:
		case want && ref.File == file:
			t.Fatalf("seed %d, call %d: the file holds %d bytes for a table of %d, past %d, and the call appended to it", seed, i, lastLen, size, 2*size+1<<20)
		case !want && ref.File != file:
			t.Fatalf("seed %d, call %d: a new file %s with the old one at %d bytes for a table of %d", seed, i, ref.File, lastLen, size)
		case want:
			switched++
			if ref.Len != ledger.HeaderLen+wholeSize(cs) || tb.written != wholeSize(cs) {
				t.Fatalf("seed %d, call %d: the new file holds %d bytes (%d appended); want the whole table, %d", seed, i, ref.Len, tb.written, ledger.HeaderLen+wholeSize(cs))
			}
		}
		file, lastLen = ref.File, ref.Len
		hist = append(hist, tableSnap{ref, copyChunks(cs)})
	}
	if switched < 1 {
		t.Fatalf("seed %d: the file was never written afresh", seed)
	}
	checkHistory(t, m, "/snap", hist)

	// Fewer chunks than the file holds: a new file.
	tb.Begin(100)
	ref, err := tb.Table(9, cs[:1], 1)
	tb.End()
	if err != nil {
		t.Fatal(err)
	}
	if ref.File == file || tb.written != wholeSize(cs[:1]) {
		t.Fatalf("seed %d: a table of fewer chunks: file %s (was %s), %d bytes appended; want a new file of %d", seed, ref.File, file, tb.written, wholeSize(cs[:1]))
	}
	if got := readBack(t, m, "/snap", ref); !sameChunks(got, cs[:1]) {
		t.Fatalf("seed %d: reads back %s", seed, chunksDiff(got, cs[:1]))
	}
}

// TestTablesCheckTail: before a Table call builds on a file, it reads back
// what the file gained for the last snapshot; damage there (a flipped
// byte in the last append, in the first write, in the magic; a cut
// tail) makes it write the table whole to a new file, which reads back
// right, and later calls extend the new file. Without damage the same
// file is extended.
func TestTablesCheckTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		// after: the call after which the damage is done (1 or 2);
		// damage returns where, given the refs so far (none: no damage).
		after  int
		damage func(t *testing.T, f tablesFS, refs []twopc.TableRef)
	}{
		{"no damage", 2, nil},
		{"a byte of the last append", 2, func(t *testing.T, f tablesFS, refs []twopc.TableRef) {
			f.flip(t, refs[1].File, (refs[0].Len+refs[1].Len)/2)
		}},
		{"the last append's first byte", 2, func(t *testing.T, f tablesFS, refs []twopc.TableRef) {
			f.flip(t, refs[1].File, refs[0].Len)
		}},
		{"the last append's last byte", 2, func(t *testing.T, f tablesFS, refs []twopc.TableRef) {
			f.flip(t, refs[1].File, refs[1].Len-1)
		}},
		{"a byte of the first write", 1, func(t *testing.T, f tablesFS, refs []twopc.TableRef) {
			f.flip(t, refs[0].File, refs[0].Len-3)
		}},
		{"the magic", 1, func(t *testing.T, f tablesFS, refs []twopc.TableRef) {
			f.flip(t, refs[0].File, 2)
		}},
		{"the last append cut", 2, func(t *testing.T, f tablesFS, refs []twopc.TableRef) {
			p := path.Join(f.dir, refs[1].File)
			f.write(t, p, f.read(t, p)[:refs[1].Len-5])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onBothFS(t, func(t *testing.T, f tablesFS) {
				seed := testSeed(t)
				rng := rand.New(rand.NewPCG(seed, 5))
				tb := NewTables(f.fsys, f.dir)
				defer tb.Close()
				cs := [][]byte{filled(rng, 3000, 3000), filled(rng, 200, 8192)}
				var refs []twopc.TableRef
				var hist []tableSnap
				call := func(n int) twopc.TableRef {
					t.Helper()
					tb.Begin(uint64(n))
					ref, err := tb.Table(3, cs, 2)
					tb.End()
					if err != nil {
						t.Fatalf("seed %d, call %d: %v", seed, n, err)
					}
					if got := readBack(t, f.fsys, f.dir, ref); !sameChunks(got, cs) {
						t.Fatalf("seed %d, call %d: reads back %s", seed, n, chunksDiff(got, cs))
					}
					refs = append(refs, ref)
					hist = append(hist, tableSnap{ref, copyChunks(cs)})
					return ref
				}
				for n := 1; n <= tc.after; n++ {
					if n > 1 {
						cs[1] = grow(rng, cs[1], 100)
					}
					if r := call(n); r.File != refs[0].File {
						t.Fatalf("seed %d, call %d: file %s, the first call's was %s", seed, n, r.File, refs[0].File)
					}
				}
				if tc.damage != nil {
					tc.damage(t, f, refs)
				}
				cs[1] = grow(rng, cs[1], 100)
				old := refs[len(refs)-1]
				r := call(tc.after + 1)
				if tc.damage == nil {
					if r.File != old.File || tb.written != growSize(1, len(cs[1])-100, len(cs[1])) {
						t.Fatalf("seed %d: undamaged: file %s (was %s), %d bytes appended; want the same file, the growth only", seed, r.File, old.File, tb.written)
					}
					checkHistory(t, f.fsys, f.dir, hist)
					return
				}
				if r.File == old.File {
					t.Fatalf("seed %d: the file %s was damaged and the next call appended to it", seed, old.File)
				}
				if r.Len != ledger.HeaderLen+wholeSize(cs) || tb.written != wholeSize(cs) {
					t.Fatalf("seed %d: the new file holds %d bytes (%d appended); want the whole table, %d", seed, r.Len, tb.written, ledger.HeaderLen+wholeSize(cs))
				}
				// The new file is extended from then on.
				cs[1] = grow(rng, cs[1], 50)
				r2 := call(tc.after + 2)
				if r2.File != r.File || tb.written != growSize(1, len(cs[1])-50, len(cs[1])) {
					t.Fatalf("seed %d: after the new file %s: file %s, %d bytes appended; want it extended by the growth", seed, r.File, r2.File, tb.written)
				}
				checkHistory(t, f.fsys, f.dir, hist[len(hist)-2:])
			})
		})
	}
}

// TestTablesHashes: an expired set is written once: later calls return
// the same ref and append nothing, it reads back equal (a set larger than
// one entry, in pieces; an empty one); damage to its file found by the
// next call's read-back makes that call write it to a new file.
func TestTablesHashes(t *testing.T) {
	onBothFS(t, func(t *testing.T, f tablesFS) {
		seed := testSeed(t)
		rng := rand.New(rand.NewPCG(seed, 6))
		hs := make([]uint64, 70_000) // three pieces of at most tablePiece/8
		for i := range hs {
			hs[i] = rng.Uint64()
		}
		tb := NewTables(f.fsys, f.dir)
		defer tb.Close()
		read := func(ref twopc.TableRef) []uint64 {
			t.Helper()
			src, err := readTables(f.fsys, f.dir, []twopc.TableRef{ref})
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			got, err := src.Hashes(ref)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			return got
		}
		call := func(seq uint64, hs []uint64) twopc.TableRef {
			t.Helper()
			tb.Begin(seq)
			ref, err := tb.Hashes(8, hs)
			names := tb.End()
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if !slices.Equal(names, []string{ref.File}) || ref.N != len(hs) || ref.Chunks != len(hs) {
				t.Fatalf("seed %d: ref %+v, End named %v; want %d hashes", seed, ref, names, len(hs))
			}
			if got := read(ref); !slices.Equal(got, hs) {
				t.Fatalf("seed %d: %d hashes read back, want %d (equal: %v)", seed, len(got), len(hs), slices.Equal(got, hs))
			}
			return ref
		}
		whole := int64(len(hs))*8 + 3*8
		ref := call(1, hs)
		if tb.written != whole || ref.Len != ledger.HeaderLen+whole {
			t.Fatalf("seed %d: %d bytes appended, file of %d; want %d", seed, tb.written, ref.Len, whole)
		}
		for seq := uint64(2); seq <= 3; seq++ {
			if again := call(seq, hs); again != ref || tb.written != 0 || tb.appends != nil {
				t.Fatalf("seed %d: call %d: %+v, %d bytes appended (%v); want %+v and nothing appended", seed, seq, again, tb.written, tb.appends, ref)
			}
		}
		// Damage after a first write: the next call reads the file back
		// and writes the set to a new file, once.
		other := make([]uint64, 1000)
		for i := range other {
			other[i] = rng.Uint64()
		}
		tb.Begin(4)
		o1, err := tb.Hashes(9, other)
		tb.End()
		if err != nil {
			t.Fatal(err)
		}
		f.flip(t, o1.File, o1.Len-1)
		tb.Begin(5)
		o2, err := tb.Hashes(9, other)
		tb.End()
		if err != nil || o2.File == o1.File || tb.written != int64(len(other))*8+8 {
			t.Fatalf("seed %d: after damage: %+v, %v, %d bytes appended; want a new file with the whole set", seed, o2, err, tb.written)
		}
		if got := read(o2); !slices.Equal(got, other) {
			t.Fatalf("seed %d: the set written afresh reads back %d hashes, want %d", seed, len(got), len(other))
		}
		tb.Begin(6)
		o3, err := tb.Hashes(9, other)
		tb.End()
		if err != nil || o3 != o2 || tb.written != 0 {
			t.Fatalf("seed %d: after the new file: %+v, %v, %d bytes appended; want %+v", seed, o3, err, tb.written, o2)
		}
		// An empty set, another id.
		tb.Begin(7)
		e, err := tb.Hashes(99, nil)
		tb.End()
		if err != nil || e.N != 0 || e.Len != ledger.HeaderLen {
			t.Fatalf("seed %d: an empty set: %+v, %v", seed, e, err)
		}
		if got := read(e); len(got) != 0 {
			t.Fatalf("seed %d: an empty set reads back %d hashes", seed, len(got))
		}
	})
}

// TestTablesEndClosesDropped: End forgets the tables a snapshot did not
// name (their files are closed): a table that comes back is written whole
// to a new file.
func TestTablesEndClosesDropped(t *testing.T) {
	m := wal.NewMemFS(1)
	tb := NewTables(m, "/snap")
	defer tb.Close()
	rng := rand.New(rand.NewPCG(1, 7))
	a := [][]byte{filled(rng, 100, 100)}
	b := [][]byte{filled(rng, 200, 200)}
	tb.Begin(1)
	ra, _ := tb.Table(1, a, 1)
	rb, _ := tb.Table(2, b, 1)
	if names := tb.End(); !slices.Equal(names, []string{ra.File, rb.File}) || ra.File == rb.File {
		t.Fatalf("End named %v; want %s and %s, two files", names, ra.File, rb.File)
	}
	tb.Begin(2)
	ra2, _ := tb.Table(1, a, 1)
	if names := tb.End(); !slices.Equal(names, []string{ra.File}) || ra2 != ra || tb.written != 0 {
		t.Fatalf("table 1 unchanged: %+v, %d bytes written, End named %v", ra2, tb.written, names)
	}
	if _, ok := tb.files[2]; ok || len(tb.files) != 1 {
		t.Fatalf("table 2 was not named by the snapshot and its file is still open (%d files)", len(tb.files))
	}
	tb.Begin(3)
	rb2, err := tb.Table(2, b, 1)
	tb.End()
	if err != nil || rb2.File == rb.File || tb.written != wholeSize(b) {
		t.Fatalf("table 2 back: %+v, %v, %d bytes written; want a new file with the whole table", rb2, err, tb.written)
	}
}

// TestTablesNewNames: a new file never takes the name of one in the
// directory (a kept snapshot of an earlier run may have used the seq).
func TestTablesNewNames(t *testing.T) {
	m := wal.NewMemFS(1)
	if err := m.MkdirAll("/snap", 0o755); err != nil {
		t.Fatal(err)
	}
	taken := fmt.Sprintf("%s%016x-%d", TablePrefix, 5, 0)
	if err := m.WriteFile("/snap/"+taken, []byte("an earlier run's")); err != nil {
		t.Fatal(err)
	}
	tb := NewTables(m, "/snap")
	defer tb.Close()
	tb.Begin(5)
	ref, err := tb.Table(1, [][]byte{[]byte("x")}, 1)
	tb.End()
	if err != nil || ref.File == taken {
		t.Fatalf("ref %+v, %v; the name %s was taken", ref, err, taken)
	}
	if b, _ := m.ReadFile("/snap/" + taken); string(b) != "an earlier run's" {
		t.Fatalf("the earlier file was changed: %q", b)
	}
}

// TestTablesHookFails: a failing append (the hook's error) fails the call
// and leaves the table as it was written: the next call appends what
// changed since the last call that succeeded.
func TestTablesHookFails(t *testing.T) {
	m := wal.NewMemFS(1)
	tb := NewTables(m, "/snap")
	defer tb.Close()
	rng := rand.New(rand.NewPCG(1, 8))
	cs := [][]byte{filled(rng, 100, 1000)}
	tb.Begin(1)
	ref, err := tb.Table(1, cs, 1)
	tb.End()
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("no space")
	tb.Hook = func(string) error { return boom }
	cs[0] = grow(rng, cs[0], 100)
	tb.Begin(2)
	if _, err := tb.Table(1, cs, 1); !errors.Is(err, boom) {
		t.Fatalf("the hook's error: %v", err)
	}
	tb.End()
	tb.Hook = nil
	cs[0] = grow(rng, cs[0], 50)
	tb.Begin(3)
	ref3, err := tb.Table(1, cs, 1)
	tb.End()
	if err != nil || ref3.File != ref.File || tb.written != growSize(0, 100, 250) {
		t.Fatalf("after a failed call: %+v, %v, %d bytes appended; want the same file grown by %d", ref3, err, tb.written, growSize(0, 100, 250))
	}
	if got := readBack(t, m, "/snap", ref3); !sameChunks(got, cs) {
		t.Fatalf("reads back %s", chunksDiff(got, cs))
	}
}

// fakeTables reads a fake snapshot's table names: one per line.
func fakeTables(data []byte) ([]twopc.TableRef, error) {
	if bytes.HasPrefix(data, []byte("unreadable")) {
		return nil, errors.New("not a snapshot")
	}
	var refs []twopc.TableRef
	for _, n := range strings.Fields(string(data)) {
		refs = append(refs, twopc.TableRef{File: n, Len: ledger.HeaderLen})
	}
	return refs, nil
}

// TestPruneTables: PruneTables removes the table files no snapshot in the
// directory names (read out of each snapshot, or given in known) and
// keeps every other file; a snapshot it cannot read, or whose names it
// cannot read, makes it remove nothing.
func TestPruneTables(t *testing.T) {
	all := []string{"tab-a", "tab-b", "tab-c", "tab-d", "tab-e", "other", "tab"}
	for _, tc := range []struct {
		name  string
		snaps map[uint64]string // seq -> data
		known map[uint64][]string
		bad   uint64 // a snapshot file damaged
		kept  []string
	}{
		{name: "two snapshots", snaps: map[uint64]string{5: "tab-a tab-b", 9: "tab-b tab-c"},
			kept: []string{"other", "tab-a", "tab-b", "tab-c"}},
		{name: "one snapshot", snaps: map[uint64]string{9: "tab-e"},
			kept: []string{"other", "tab-e"}},
		{name: "a snapshot naming none", snaps: map[uint64]string{5: "", 9: "tab-d"},
			kept: []string{"other", "tab-d"}},
		{name: "no snapshot", kept: []string{"other"}},
		{name: "known names instead of the file's", snaps: map[uint64]string{5: "tab-a", 9: "tab-b"}, known: map[uint64][]string{9: {"tab-e"}},
			kept: []string{"other", "tab-a", "tab-e"}},
		{name: "a known snapshot is not read", snaps: map[uint64]string{5: "tab-a", 9: "tab-b"}, known: map[uint64][]string{9: {"tab-c"}}, bad: 9,
			kept: []string{"other", "tab-a", "tab-c"}},
		{name: "a damaged snapshot", snaps: map[uint64]string{5: "tab-a", 9: "tab-b"}, bad: 5, kept: all},
		{name: "the newer snapshot damaged", snaps: map[uint64]string{5: "tab-a", 9: "tab-b"}, bad: 9, kept: all},
		{name: "names that cannot be read", snaps: map[uint64]string{5: "unreadable", 9: "tab-b"}, kept: all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wal.NewMemFS(1)
			const dir = "/snap"
			if err := m.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, n := range all {
				if err := m.WriteFile(path.Join(dir, n), []byte(ledger.Magic)); err != nil {
					t.Fatal(err)
				}
			}
			var snapNames []string
			for seq, data := range tc.snaps {
				if err := wal.WriteSnapshot(m, dir, seq, []byte(data), nil); err != nil {
					t.Fatal(err)
				}
				snapNames = append(snapNames, wal.SnapshotName(seq))
			}
			if tc.bad != 0 {
				p := path.Join(dir, wal.SnapshotName(tc.bad))
				b, _ := m.ReadFile(p)
				b[len(b)-1] ^= 1
				if err := m.WriteFile(p, b); err != nil {
					t.Fatal(err)
				}
			}
			if err := PruneTables(m, dir, tc.known, fakeTables); err != nil {
				t.Fatal(err)
			}
			want := append(slices.Clone(tc.kept), snapNames...)
			if !slices.Contains(want, "tab") {
				want = append(want, "tab") // not a table file
			}
			slices.Sort(want)
			if got := m.List(dir); !slices.Equal(got, want) {
				t.Fatalf("left %v, want %v", got, want)
			}
		})
	}
}

// writeLedger writes a table file of the given payloads and returns its
// length.
func writeLedger(t *testing.T, fsys wal.FS, name string, payloads ...[]byte) int64 {
	t.Helper()
	f, err := ledger.Open(fsys, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Append(payloads)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// piece is a table file's entry: chunk i's bytes b at offset off.
func piece(i, off uint64, b string) []byte {
	p := binary.AppendUvarint(nil, i)
	p = binary.AppendUvarint(p, off)
	return append(p, b...)
}

// TestReadTablesRefuses: what readTables and tableSource.Chunks and Hashes
// refuse: a file name that is not a table file's of the directory, a
// recorded length shorter than the header or longer than the file, a
// missing file, a damaged entry, and, in an undamaged file, pieces that do
// not rebuild chunks (a chunk number past the next, a new chunk not at 0,
// an offset that is not the chunk's length, a number that does not
// parse, a chunk count other than the snapshot's, hashes not of 8
// bytes). Damage wraps ledger.ErrCorrupt; a missing file fs.ErrNotExist.
func TestReadTablesRefuses(t *testing.T) {
	m := wal.NewMemFS(1)
	const dir = "/snap"
	if err := m.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	good := writeLedger(t, m, dir+"/tab-good", piece(0, 0, "abc"), piece(0, 3, "de"), piece(1, 0, "x"), piece(0, 0, "Z"), piece(1, 1, "yz"))
	// The same file, read to an older length, is the chunks of then.
	older := good - int64(8+len(piece(1, 1, "yz"))) - int64(8+len(piece(0, 0, "Z")))
	for _, c := range []struct {
		ref  twopc.TableRef
		want []string
	}{
		{twopc.TableRef{File: "tab-good", Len: good, Chunks: 2}, []string{"Z", "xyz"}},
		{twopc.TableRef{File: "tab-good", Len: older, Chunks: 2}, []string{"abcde", "x"}},
		{twopc.TableRef{File: "tab-good", Len: ledger.HeaderLen, Chunks: 0}, nil},
	} {
		var got []string
		src, err := readTables(m, dir, []twopc.TableRef{c.ref})
		if err == nil {
			err = src.Chunks(c.ref, func(b []byte) error { got = append(got, string(b)); return nil })
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Fatalf("%+v: %q, %v; want %q", c.ref, got, err, c.want)
		}
	}
	file := func(name string, payloads ...[]byte) twopc.TableRef {
		return twopc.TableRef{File: name, Len: writeLedger(t, m, path.Join(dir, name), payloads...)}
	}
	with := func(r twopc.TableRef, chunks int) twopc.TableRef { r.Chunks = chunks; return r }
	damaged := file("tab-damaged", piece(0, 0, "abcdef"))
	b, _ := m.ReadFile(dir + "/tab-damaged")
	b[len(b)-2] ^= 1
	if err := m.WriteFile(dir+"/tab-damaged", b); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		ref      twopc.TableRef
		chunks   bool // the read succeeds, Chunks fails
		hashes   bool // the read succeeds, Hashes fails
		notExist bool // the error is fs.ErrNotExist, not ErrCorrupt
	}{
		{name: "a slash in the name", ref: twopc.TableRef{File: "tab-x/../tab-good", Len: good}},
		{name: "a backslash in the name", ref: twopc.TableRef{File: `tab-x\y`, Len: good}},
		{name: "not a table file", ref: twopc.TableRef{File: "snap-0000000000000001.snap", Len: good}},
		{name: "the prefix alone, not first", ref: twopc.TableRef{File: "x-tab-good", Len: good}},
		{name: "a length shorter than the header", ref: twopc.TableRef{File: "tab-good", Len: ledger.HeaderLen - 1}},
		{name: "length 0", ref: twopc.TableRef{File: "tab-good", Len: 0}},
		{name: "a length past the file", ref: twopc.TableRef{File: "tab-good", Len: good + 1, Chunks: 2}},
		{name: "a length inside an entry", ref: twopc.TableRef{File: "tab-good", Len: good - 1, Chunks: 2}},
		{name: "a damaged entry", ref: with(damaged, 1)},
		{name: "a missing file", ref: twopc.TableRef{File: "tab-missing", Len: 100}, notExist: true},
		{name: "a chunk number past the next", ref: with(file("tab-skip", piece(0, 0, "a"), piece(2, 0, "b")), 3), chunks: true},
		{name: "a first chunk numbered 1", ref: with(file("tab-skip1", piece(1, 0, "b")), 2), chunks: true},
		{name: "a huge chunk number", ref: with(file("tab-huge", piece(0, 0, "a"), piece(1<<62, 0, "b")), 2), chunks: true},
		{name: "a new chunk not at offset 0", ref: with(file("tab-new-off", piece(0, 1, "a")), 1), chunks: true},
		{name: "an offset short of the chunk's length", ref: with(file("tab-short", piece(0, 0, "abc"), piece(0, 2, "d")), 1), chunks: true},
		{name: "an offset past the chunk's length", ref: with(file("tab-past", piece(0, 0, "abc"), piece(0, 4, "d")), 1), chunks: true},
		{name: "an offset of a replaced chunk's old length", ref: with(file("tab-old-len", piece(0, 0, "abcdef"), piece(0, 0, "xy"), piece(0, 6, "z")), 1), chunks: true},
		{name: "an empty entry", ref: with(file("tab-empty", []byte{}), 1), chunks: true},
		{name: "a chunk number that never ends", ref: with(file("tab-cont", []byte{0x80}), 1), chunks: true},
		{name: "no offset", ref: with(file("tab-nooff", []byte{0}), 1), chunks: true},
		{name: "fewer chunks than the snapshot says", ref: with(file("tab-fewer", piece(0, 0, "a")), 2), chunks: true},
		{name: "more chunks than the snapshot says", ref: with(file("tab-more", piece(0, 0, "a"), piece(1, 0, "b")), 1), chunks: true},
		{name: "no chunk, the snapshot says one", ref: with(file("tab-none"), 1), chunks: true},
		{name: "hashes of 7 bytes", ref: file("tab-h7", []byte("1234567")), hashes: true},
	} {
		src, err := readTables(m, dir, []twopc.TableRef{tc.ref})
		if tc.chunks || tc.hashes {
			if err != nil {
				t.Errorf("%s: readTables: %v; the file is whole", tc.name, err)
				continue
			}
			if tc.chunks {
				err = src.Chunks(tc.ref, func([]byte) error { return nil })
			} else {
				_, err = src.Hashes(tc.ref)
			}
		}
		switch {
		case err == nil:
			t.Errorf("%s: %+v read with no error", tc.name, tc.ref)
		case tc.notExist && !errors.Is(err, fs.ErrNotExist):
			t.Errorf("%s: %v; want fs.ErrNotExist", tc.name, err)
		case !tc.notExist && !errors.Is(err, ledger.ErrCorrupt):
			t.Errorf("%s: %v; want an error wrapping ledger.ErrCorrupt", tc.name, err)
		}
	}

	// A ref that was not read, and an error of the caller's function.
	src, err := readTables(m, dir, []twopc.TableRef{{File: "tab-good", Len: good, Chunks: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Chunks(twopc.TableRef{File: "tab-good", Len: older, Chunks: 2}, func([]byte) error { return nil }); err == nil {
		t.Error("Chunks of a length that was not read: no error")
	}
	if _, err := src.Hashes(twopc.TableRef{File: "tab-other", Len: good}); err == nil {
		t.Error("Hashes of a file that was not read: no error")
	}
	stop := errors.New("stop")
	if err := src.Chunks(twopc.TableRef{File: "tab-good", Len: good, Chunks: 2}, func([]byte) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Chunks with a failing function: %v, want its error", err)
	}
	// Reading one chunk list twice gives the same chunks twice.
	for range 2 {
		var got []string
		if err := src.Chunks(twopc.TableRef{File: "tab-good", Len: good, Chunks: 2}, func(b []byte) error { got = append(got, string(b)); return nil }); err != nil || !slices.Equal(got, []string{"Z", "xyz"}) {
			t.Fatalf("Chunks again: %q, %v", got, err)
		}
	}
}

// TestTablesCoordinatorSnapshots: a coordinator's snapshots written
// through Tables (captured on the loop, encoded after more work: the
// chunks are shared copy on write) restore, read back through
// readTables, to what the coordinator knew at each capture: every id's
// state, the expired ids, the retention stats; an older snapshot still
// restores after the later ones appended to the same files; and most
// snapshots append less than half of what their table files hold.
func TestTablesCoordinatorSnapshots(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 9))
	m := wal.NewMemFS(seed)
	const dir = "/snap"
	cfg := twopc.CoordinatorConfig{ID: twopc.CoordinatorID, PrepareTimeout: 1 << 30, RetryBase: 5, RetryMax: 50, Retention: 60}
	c, err := twopc.NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	drain := func() {
		if c.HasReady() {
			c.Ready()
			c.Advance()
		}
	}
	c.Start()
	drain()
	type answer struct {
		st      twopc.CoordState
		known   bool
		expired bool
		reason  string
	}
	type snap struct {
		seq    uint64
		want   map[string]answer
		stats  twopc.RetentionStats
		enc    func(twopc.TableSpill) ([]byte, error)
		data   []byte
		refs   []twopc.TableRef
		append int64
		bytes  int64
	}
	var ids []string
	answers := func() map[string]answer {
		a := map[string]answer{}
		for _, id := range ids {
			st, ok := c.State(id)
			a[id] = answer{st, ok, c.Expired(id), c.AbortReason(id)}
		}
		return a
	}
	tb := NewTables(m, dir)
	defer tb.Close()
	var snaps []*snap
	var pending *snap
	encode := func(s *snap) {
		tb.Begin(s.seq)
		data, err := s.enc(tb)
		tb.End()
		if err != nil {
			t.Fatalf("seed %d: snapshot %d: %v", seed, s.seq, err)
		}
		s.data, s.append = data, tb.written
		if s.refs, err = twopc.CoordinatorSnapshotTables(data); err != nil {
			t.Fatalf("seed %d: snapshot %d: %v", seed, s.seq, err)
		}
	}
	restore := func(s *snap) {
		t.Helper()
		src, err := readTables(m, dir, s.refs)
		if err != nil {
			t.Fatalf("seed %d: snapshot %d: reading its tables: %v", seed, s.seq, err)
		}
		s.bytes = 0
		for _, r := range s.refs {
			s.bytes += r.Len - ledger.HeaderLen
		}
		r, err := twopc.NewCoordinator(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.RestoreSnapshotFrom(s.data, src); err != nil {
			t.Fatalf("seed %d: snapshot %d: %v", seed, s.seq, err)
		}
		if st := r.RetentionStats(); st.Current != s.stats.Current || st.Previous != s.stats.Previous || st.Expired != s.stats.Expired {
			t.Fatalf("seed %d: snapshot %d restores %+v, want %+v", seed, s.seq, st, s.stats)
		}
		for id, w := range s.want {
			st, ok := r.State(id)
			if got := (answer{st, ok, r.Expired(id), r.AbortReason(id)}); got != w {
				t.Fatalf("seed %d: snapshot %d: %s restores as %+v, want %+v", seed, s.seq, id, got, w)
			}
		}
	}
	for i := range 1500 {
		tx := fmt.Sprintf("tx-%d-%05d", seed, i)
		ids = append(ids, tx)
		if err := c.Propose(tx, []twopc.Branch{{Node: "a", Op: []byte("k")}}); err != nil {
			t.Fatal(err)
		}
		drain()
		v, reason := twopc.VoteYes, ""
		if rng.IntN(4) == 0 {
			v, reason = twopc.VoteNo, fmt.Sprintf("no %d", rng.IntN(100))
		}
		c.Step(twopc.Message{Type: twopc.MsgVote, From: "a", To: twopc.CoordinatorID, Tx: tx, Vote: v, Reason: reason, Attempt: 1})
		drain()
		c.Step(twopc.Message{Type: twopc.MsgAck, From: "a", To: twopc.CoordinatorID, Tx: tx, Attempt: 1})
		drain()
		if rng.IntN(8) == 0 {
			c.Tick()
			drain()
		}
		if pending != nil && rng.IntN(5) == 0 {
			encode(pending)
			pending = nil
		}
		if pending == nil && rng.IntN(40) == 0 {
			enc, err := c.SnapshotDeferredSpill()
			if err != nil {
				t.Fatal(err)
			}
			pending = &snap{seq: uint64(i + 1), want: answers(), stats: c.RetentionStats(), enc: enc}
			snaps = append(snaps, pending)
		}
	}
	if pending != nil {
		encode(pending)
	}
	if st := c.RetentionStats(); st.Checkpoints < 2 || len(snaps) < 10 {
		t.Fatalf("seed %d: %d rotations, %d snapshots: the test wants more", seed, st.Checkpoints, len(snaps))
	}
	less := 0
	for _, s := range snaps {
		restore(s)
		if s.append < s.bytes/2 {
			less++
		}
	}
	if less < len(snaps)/2 {
		t.Fatalf("seed %d: only %d of %d snapshots appended less than half of their table files' bytes", seed, less, len(snaps))
	}
}
