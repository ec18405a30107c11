package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// readChunk is how much a segReader reads at a time.
const readChunk = 256 << 10

// segReader reads the record frames of one segment file through a window
// buffer that it reuses. The buffer never grows past
// max(readChunk, RecordHeaderSize+maxRec): a length field is checked
// against the cap before the data is read.
type segReader struct {
	f      File
	path   string
	size   int64 // bytes of the file to read
	maxRec int
	buf    []byte // window: file bytes [winOff, winOff+len(buf))
	winOff int64
}

func newSegReader(f File, path string, size int64, maxRec int, buf []byte) *segReader {
	return &segReader{f: f, path: path, size: size, maxRec: maxRec, buf: buf[:0]}
}

// window returns file bytes [off, off+n); off+n must not pass r.size.
func (r *segReader) window(off int64, n int) ([]byte, error) {
	if off >= r.winOff && off+int64(n) <= r.winOff+int64(len(r.buf)) {
		s := off - r.winOff
		return r.buf[s : s+int64(n)], nil
	}
	want := int64(max(n, readChunk))
	if rem := r.size - off; want > rem {
		want = rem
	}
	if int64(n) > want {
		panic(fmt.Sprintf("wal: window [%d,+%d) past size %d", off, n, r.size))
	}
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	r.winOff = off
	got, err := r.f.ReadAt(r.buf, off)
	if int64(got) < want {
		r.buf = r.buf[:0]
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("wal: read %s at offset %d: %w", r.path, off, err)
	}
	return r.buf[:n], nil
}

// header checks the segment header and returns the first seq it names, or
// the reason it is bad.
func (r *segReader) header() (uint64, string, error) {
	n := min(r.size, SegmentHeaderSize)
	b, err := r.window(0, int(n))
	if err != nil {
		return 0, "", err
	}
	first, reason := decodeSegmentHeader(b)
	return first, reason, nil
}

// decodeAt decodes the frame at off. It reads at most a header before
// knowing the frame is within the cap and the file.
func (r *segReader) decodeAt(off int64) (recordFrame, frameStatus, string, error) {
	rem := r.size - off
	b, err := r.window(off, int(min(rem, RecordHeaderSize)))
	if err != nil {
		return recordFrame{}, 0, "", err
	}
	length, ok := frameLength(b)
	if !ok || length > int64(r.maxRec) {
		fr, st, reason := decodeRecord(b, r.maxRec)
		return fr, st, reason, nil
	}
	total := RecordHeaderSize + length
	if total > rem {
		return recordFrame{}, frameShortData, fmt.Sprintf("truncated record: %d of %d bytes", rem, total), nil
	}
	if b, err = r.window(off, int(total)); err != nil {
		return recordFrame{}, 0, "", err
	}
	fr, st, reason := decodeRecord(b, r.maxRec)
	return fr, st, reason, nil
}

// frameInWindow is decodeAt's common case, without its reads and its
// verdicts: the frame at off if it lies whole in the window already read
// and is valid (decodeRecord says frameOK), else ok false, and decodeAt
// decides. A scan spends most of its time per record outside the checksum
// itself; this spares it a second look at the window, the length checks
// done twice and a large result copied out.
func (r *segReader) frameInWindow(off int64) (fr recordFrame, ok bool) {
	s := off - r.winOff
	if off < r.winOff || s+RecordHeaderSize > int64(len(r.buf)) {
		return recordFrame{}, false
	}
	b := r.buf[s:]
	length := int64(binary.LittleEndian.Uint32(b[4:8]))
	size := RecordHeaderSize + length
	if length > int64(r.maxRec) || size > int64(len(b)) {
		return recordFrame{}, false
	}
	frame := b[:size]
	typ := frame[16]
	if binary.LittleEndian.Uint32(frame[0:4]) != crc32.Checksum(frame[4:], castagnoli) ||
		typ == 0 || frame[17] != 0 || frame[18] != 0 || frame[19] != 0 {
		return recordFrame{}, false
	}
	return recordFrame{seq: binary.LittleEndian.Uint64(frame[8:16]), typ: typ, data: frame[RecordHeaderSize:], size: int(size)}, true
}

// badRecord is where a segment scan stopped before the end of the file.
type badRecord struct {
	off    int64
	seq    uint64 // the seq expected at off
	reason string
	// definite is set when no torn write can explain the bytes: a record
	// with a valid checksum but the wrong seq or an invalid header.
	definite bool
}

// segScan is the result of scanning one segment.
type segScan struct {
	end  int64      // offset after the last whole valid record
	next uint64     // seq expected after it
	bad  *badRecord // nil if the scan reached the end of the file
}

// scan reads the records of the segment from its header on, checking each
// frame and that seqs run from first without a gap, and calls visit (if not
// nil) for each valid record. fr.data is valid only during visit.
func (r *segReader) scan(first uint64, visit func(off int64, fr recordFrame) error) (segScan, error) {
	off, next := int64(SegmentHeaderSize), first
	for off < r.size {
		fr, ok := r.frameInWindow(off)
		st, reason := frameOK, ""
		if !ok {
			var err error
			if fr, st, reason, err = r.decodeAt(off); err != nil {
				return segScan{}, err
			}
		}
		if st == frameOK && fr.seq != next {
			st, reason = frameBadHeader, fmt.Sprintf("record has seq %d, want %d", fr.seq, next)
		}
		if st != frameOK {
			return segScan{end: off, next: next, bad: &badRecord{
				off: off, seq: next, reason: reason, definite: st == frameBadHeader,
			}}, nil
		}
		if visit != nil {
			if err := visit(off, fr); err != nil {
				return segScan{}, err
			}
		}
		off += int64(fr.size)
		next++
	}
	return segScan{end: off, next: next}, nil
}

// scanAhead looks for a valid record at any byte offset from from on whose
// seq is at least expected (and no more than the bytes left could hold). It
// is how a torn tail is told from corruption: a torn write leaves a prefix
// of what was written, so nothing valid can follow the first bad byte of a
// torn tail.
func (r *segReader) scanAhead(from int64, expected uint64) (off int64, seq uint64, found bool, err error) {
	if r.size-from < RecordHeaderSize {
		return 0, 0, false, nil
	}
	maxSeq := expected + uint64((r.size-from)/RecordHeaderSize) + 1
	for o := from; o+RecordHeaderSize <= r.size; o++ {
		h, err := r.window(o, RecordHeaderSize)
		if err != nil {
			return 0, 0, false, err
		}
		// Cheap filters first; the checksum decides.
		if h[16] == 0 {
			// A record needs a nonzero type byte at o+16: jump over a run
			// of zeros (a preallocated region) rather than step through it.
			p, err := r.nextNonZero(o + 17)
			if err != nil {
				return 0, 0, false, err
			}
			o = p - 16 - 1 // the loop adds 1
			continue
		}
		if h[17]|h[18]|h[19] != 0 {
			continue
		}
		length := int64(binary.LittleEndian.Uint32(h[4:8]))
		if length > int64(r.maxRec) || o+RecordHeaderSize+length > r.size {
			continue
		}
		if s := frameSeq(h); s < expected || s > maxSeq {
			continue
		}
		fr, st, _, err := r.decodeAt(o)
		if err != nil {
			return 0, 0, false, err
		}
		if st == frameOK {
			return o, fr.seq, true, nil
		}
	}
	return 0, 0, false, nil
}

// zeroBlock is compared against to find runs of zeros quickly.
var zeroBlock [4096]byte

// nextNonZero returns the offset of the first nonzero byte at or after
// from, or r.size if there is none (an all-zero tail: preallocated room).
func (r *segReader) nextNonZero(from int64) (int64, error) {
	for off := from; off < r.size; {
		n := int(min(r.size-off, readChunk))
		w, err := r.window(off, n)
		if err != nil {
			return 0, err
		}
		for i := 0; i < len(w); i += len(zeroBlock) {
			b := w[i:min(i+len(zeroBlock), len(w))]
			if bytes.Equal(b, zeroBlock[:len(b)]) {
				continue
			}
			for j, c := range b {
				if c != 0 {
					return off + int64(i+j), nil
				}
			}
		}
		off += int64(n)
	}
	return r.size, nil
}
