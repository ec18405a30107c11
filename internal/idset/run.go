package idset

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"
	"slices"
	"sync/atomic"

	"github.com/dtx-dev/dtx/wal"
)

// A run file holds the sorted, distinct hashes of the ids of ledger entries
// [Start, End) and is never changed once renamed into place:
//
//	magic "DTXIDS01"
//	blocks of up to BlockLen hashes, 8 bytes little-endian each, ascending
//	index: per block, its first hash (8 bytes) and its CRC-32C (4 bytes)
//	footer (footerLen bytes): Start, End, StartOff, EndOff (ledger entry
//	  counts and the ledger offsets where they start), the number of
//	  hashes, the key's check value (8 bytes each), the index's CRC-32C
//	  and the footer's own (4 bytes each)
//
// Memory keeps only the index (12 bytes per block); a lookup reads one
// block and checks its CRC.

const runMagic = "DTXIDS01"

// BlockLen is the number of hashes in a block: one lookup reads 2 KiB.
const BlockLen = 256

const (
	blockBytes = BlockLen * 8
	indexEntry = 12
	footerLen  = 6*8 + 2*4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error about a run file's content.
var ErrCorrupt = errors.New("idset: corrupt run")

type meta struct {
	start, end       int64 // ledger entries [start, end)
	startOff, endOff int64 // ledger offsets of entries start and end
	n                int64 // hashes
	check            uint64
}

type readerAt interface {
	io.ReaderAt
	io.Closer
}

// run is an open run file.
type run struct {
	meta
	name    string
	f       readerAt
	firsts  []uint64 // first hash of each block
	crcs    []uint32
	damaged atomic.Bool // a block failed its checksum: rebuild from the ledger
}

func runName(start, end int64) string { return fmt.Sprintf("run-%016x-%016x", start, end) }

func parseRunName(name string) (start, end int64, ok bool) {
	var a, b uint64
	if _, err := fmt.Sscanf(name, "run-%016x-%016x", &a, &b); err != nil || name != runName(int64(a), int64(b)) {
		return 0, 0, false
	}
	return int64(a), int64(b), true
}

func blocks(n int64) int64 { return (n + BlockLen - 1) / BlockLen }

func encodeFooter(m meta, indexCRC uint32) []byte {
	b := make([]byte, 0, footerLen)
	for _, v := range []uint64{uint64(m.start), uint64(m.end), uint64(m.startOff), uint64(m.endOff), uint64(m.n), m.check} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	b = binary.LittleEndian.AppendUint32(b, indexCRC)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeRun checks and decodes a run file's footer and index, given the
// file's size and a reader of it; it reads nothing of the blocks.
func decodeRun(r io.ReaderAt, size int64) (meta, []uint64, []uint32, error) {
	var m meta
	if size < int64(len(runMagic))+footerLen {
		return m, nil, nil, fmt.Errorf("%w: %d bytes, shorter than a header and footer", ErrCorrupt, size)
	}
	var magic [len(runMagic)]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || string(magic[:]) != runMagic {
		return m, nil, nil, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	f := make([]byte, footerLen)
	if _, err := r.ReadAt(f, size-footerLen); err != nil {
		return m, nil, nil, fmt.Errorf("%w: footer: %v", ErrCorrupt, err)
	}
	if crc32.Checksum(f[:footerLen-4], castagnoli) != binary.LittleEndian.Uint32(f[footerLen-4:]) {
		return m, nil, nil, fmt.Errorf("%w: footer checksum mismatch", ErrCorrupt)
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(f[8*i:]) }
	m = meta{start: int64(u(0)), end: int64(u(1)), startOff: int64(u(2)), endOff: int64(u(3)), n: int64(u(4)), check: u(5)}
	if m.start < 0 || m.end < m.start || m.startOff < 0 || m.endOff < m.startOff || m.n < 0 || m.n > m.end-m.start {
		return m, nil, nil, fmt.Errorf("%w: footer says entries [%d, %d) at offsets [%d, %d) with %d hashes", ErrCorrupt, m.start, m.end, m.startOff, m.endOff, m.n)
	}
	nb := blocks(m.n)
	if want := int64(len(runMagic)) + 8*m.n + indexEntry*nb + footerLen; want != size {
		return m, nil, nil, fmt.Errorf("%w: %d bytes, %d hashes need %d", ErrCorrupt, size, m.n, want)
	}
	idx := make([]byte, indexEntry*nb)
	if _, err := r.ReadAt(idx, size-footerLen-int64(len(idx))); err != nil {
		return m, nil, nil, fmt.Errorf("%w: index: %v", ErrCorrupt, err)
	}
	if crc32.Checksum(idx, castagnoli) != binary.LittleEndian.Uint32(f[footerLen-8:]) {
		return m, nil, nil, fmt.Errorf("%w: index checksum mismatch", ErrCorrupt)
	}
	firsts := make([]uint64, nb)
	crcs := make([]uint32, nb)
	for i := range nb {
		firsts[i] = binary.LittleEndian.Uint64(idx[indexEntry*i:])
		crcs[i] = binary.LittleEndian.Uint32(idx[indexEntry*i+8:])
		if i > 0 && firsts[i] <= firsts[i-1] {
			return m, nil, nil, fmt.Errorf("%w: index not ascending at block %d", ErrCorrupt, i)
		}
	}
	return m, firsts, crcs, nil
}

// openRun opens and checks the run file name (its footer and index).
func openRun(fsys wal.FS, name string) (*run, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("idset: open %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("idset: %s: %w", name, err)
	}
	m, firsts, crcs, err := decodeRun(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &run{meta: m, name: name, f: f, firsts: firsts, crcs: crcs}, nil
}

// block reads block i into buf (blockBytes long) and checks it, returning
// its hashes' bytes.
func (r *run) block(i int, buf []byte) ([]byte, error) {
	n := int64(BlockLen)
	if rest := r.n - int64(i)*BlockLen; rest < n {
		n = rest
	}
	b := buf[:8*n]
	if _, err := r.f.ReadAt(b, int64(len(runMagic))+int64(i)*blockBytes); err != nil {
		return nil, fmt.Errorf("idset: %s: block %d: %w", r.name, i, err)
	}
	if crc32.Checksum(b, castagnoli) != r.crcs[i] || binary.LittleEndian.Uint64(b) != r.firsts[i] {
		r.damaged.Store(true)
		return nil, fmt.Errorf("%w: %s: block %d: checksum mismatch", ErrCorrupt, r.name, i)
	}
	return b, nil
}

// has reports whether the run holds h: one read of the one block that may.
func (r *run) has(h uint64, buf []byte) (bool, error) {
	i, found := slices.BinarySearch(r.firsts, h)
	if found {
		return true, nil
	}
	if i == 0 {
		return false, nil // below the first hash
	}
	b, err := r.block(i-1, buf)
	if err != nil {
		return false, err
	}
	lo, hi := 0, len(b)/8
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		v := binary.LittleEndian.Uint64(b[8*mid:])
		switch {
		case v == h:
			return true, nil
		case v < h:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return false, nil
}

// each calls fn with every hash of the run, in order, checking each block.
func (r *run) each(fn func(uint64) error) error {
	buf := make([]byte, blockBytes)
	for i := range r.firsts {
		b, err := r.block(i, buf)
		if err != nil {
			return err
		}
		for k := 0; k < len(b); k += 8 {
			if err := fn(binary.LittleEndian.Uint64(b[k:])); err != nil {
				return err
			}
		}
	}
	return nil
}

// writer writes a run file: hashes in ascending order, then finish.
type writer struct {
	fsys   wal.FS
	tmp    string
	f      wal.File
	w      *bufio.Writer
	block  []byte
	index  []byte
	n      int64
	last   uint64
	failed error
}

func newWriter(fsys wal.FS, name string) (*writer, error) {
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("idset: create %s: %w", tmp, err)
	}
	w := &writer{fsys: fsys, tmp: tmp, f: f, w: bufio.NewWriterSize(f, 1<<16), block: make([]byte, 0, blockBytes)}
	w.w.WriteString(runMagic)
	return w, nil
}

// add adds h, which must be above every hash added before (an equal one
// is dropped).
func (w *writer) add(h uint64) {
	if w.n > 0 && h <= w.last {
		if h < w.last && w.failed == nil {
			w.failed = fmt.Errorf("idset: %s: hashes out of order", w.tmp)
		}
		return
	}
	w.block = binary.LittleEndian.AppendUint64(w.block, h)
	w.n++
	w.last = h
	if len(w.block) == blockBytes {
		w.endBlock()
	}
}

func (w *writer) endBlock() {
	if len(w.block) == 0 {
		return
	}
	w.index = binary.LittleEndian.AppendUint64(w.index, binary.LittleEndian.Uint64(w.block))
	w.index = binary.LittleEndian.AppendUint32(w.index, crc32.Checksum(w.block, castagnoli))
	w.w.Write(w.block)
	w.block = w.block[:0]
}

// finish writes the index and footer, fsyncs the file, renames it into
// place and fsyncs the directory: the run is durable and whole, or absent
// (a temporary file at most, which the next attach removes).
func (w *writer) finish(m meta) (string, error) {
	w.endBlock()
	m.n = w.n
	w.w.Write(w.index)
	w.w.Write(encodeFooter(m, crc32.Checksum(w.index, castagnoli)))
	err := w.failed
	if err == nil {
		err = w.w.Flush()
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	name := w.tmp[:len(w.tmp)-len(".tmp")]
	if err == nil {
		err = w.fsys.Rename(w.tmp, name)
	}
	if err == nil {
		err = w.fsys.SyncDir(path.Dir(name))
	}
	if err != nil {
		w.fsys.Remove(w.tmp)
		return "", fmt.Errorf("idset: write %s: %w", name, err)
	}
	return name, nil
}

func (w *writer) abort() {
	w.f.Close()
	w.fsys.Remove(w.tmp)
}
