package wal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// TornTail describes an incomplete tail that Open found at the end of the
// last segment: bytes after the last whole record that no valid record
// follows. Open cuts it (ReadOnly: skips it).
type TornTail struct {
	Segment string // path of the last segment file
	Offset  int64  // end of the last whole record: where the file is cut
	Size    int64  // size of the file as found
	Seq     uint64 // seq the first lost record would have had
	Reason  string // what was found at Offset
}

// dirListing is what a directory holds for the log.
type dirListing struct {
	firsts []uint64 // first seqs of the segment files, ascending
	tmps   []string // names of leftover temporary files
}

func listDir(fsys FS, dir string) (dirListing, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return dirListing{}, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	var d dirListing
	for _, name := range names {
		if base, ok := strings.CutSuffix(name, tmpSuffix); ok {
			if _, ok := parseSegmentName(base); ok {
				d.tmps = append(d.tmps, name)
			}
			continue
		}
		if first, ok := parseSegmentName(name); ok {
			d.firsts = append(d.firsts, first)
		}
	}
	slices.Sort(d.firsts)
	return d, nil
}

// walkResult is the state of the log found by walk.
type walkResult struct {
	segs []*segment // valid ends in size (unless unchecked); the last one is the active segment
	next uint64     // seq of the next record
	torn *TornTail  // set if the last segment has a torn tail
	skip int        // segments whose records walk did not read (the first skip of segs)
}

// walk reads the segments in order, checks every record, and tells a torn
// tail of the last segment from corruption. It changes nothing on disk.
// visit, if not nil, sees every valid record it reads in order (fr.data
// only during the call); it may have seen records before walk reports
// corruption.
//
// The segments that hold only records below from (by their names: every
// segment but the last whose successor starts at or before from) are not
// read: only their headers are checked, and they are returned unchecked
// (Replay checks their records). The seq gap check starts at the first
// segment read. from 0 or 1 reads every segment.
func walk(fsys FS, dir string, firsts []uint64, from uint64, maxRec int,
	visit func(path string, off int64, fr recordFrame) error) (walkResult, error) {
	res := walkResult{next: 1}
	if len(firsts) == 0 {
		return res, nil
	}
	for res.skip+1 < len(firsts) && firsts[res.skip+1] <= from {
		res.skip++
	}
	for _, first := range firsts[:res.skip] {
		seg, err := checkSegmentHeader(fsys, filepath.Join(dir, SegmentName(first)), first)
		if err != nil {
			return walkResult{}, err
		}
		res.segs = append(res.segs, seg)
	}
	res.next = firsts[res.skip]
	var buf []byte
	for i := res.skip; i < len(firsts); i++ {
		first := firsts[i]
		path := filepath.Join(dir, SegmentName(first))
		last := i == len(firsts)-1
		seg, torn, next, b, err := walkSegment(fsys, path, first, res.next, last, maxRec, buf, visit)
		if err != nil {
			return walkResult{}, err
		}
		buf = b
		res.segs = append(res.segs, seg)
		res.torn = torn
		res.next = next
	}
	return res, nil
}

// checkSegmentHeader reads the header of a segment walk does not read and
// checks that it names the seq of the file name. It returns the segment,
// unchecked.
func checkSegmentHeader(fsys FS, path string, first uint64) (*segment, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("wal: open segment: %w", err)
	}
	defer f.Close()
	var h [SegmentHeaderSize]byte
	n, err := f.ReadAt(h[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("wal: read %s at offset 0: %w", path, err)
	}
	hdrFirst, reason := decodeSegmentHeader(h[:n])
	if reason == "" && hdrFirst != first {
		reason = fmt.Sprintf("segment header names first seq %d, file name %d", hdrFirst, first)
	}
	if reason != "" {
		return nil, &CorruptionError{Segment: path, Offset: 0, Seq: first, Reason: reason}
	}
	return &segment{first: first, path: path, unchecked: true}, nil
}

func walkSegment(fsys FS, path string, first, expected uint64, last bool, maxRec int, buf []byte,
	visit func(path string, off int64, fr recordFrame) error) (*segment, *TornTail, uint64, []byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, nil, 0, buf, fmt.Errorf("wal: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, 0, buf, fmt.Errorf("wal: stat segment: %w", err)
	}
	size := fi.Size()
	r := newSegReader(f, path, size, maxRec, buf)
	corrupt := func(off int64, seq uint64, format string, args ...any) error {
		return &CorruptionError{Segment: path, Offset: off, Seq: seq, Reason: fmt.Sprintf(format, args...)}
	}
	hdrFirst, reason, err := r.header()
	switch {
	case err != nil:
		return nil, nil, 0, r.buf, err
	case reason != "":
		return nil, nil, 0, r.buf, corrupt(0, expected, "%s", reason)
	case hdrFirst != first:
		return nil, nil, 0, r.buf, corrupt(0, expected, "segment header names first seq %d, file name %d", hdrFirst, first)
	case first != expected:
		return nil, nil, 0, r.buf, corrupt(0, expected, "sequence gap: segment starts at seq %d, want %d", first, expected)
	}
	var v func(off int64, fr recordFrame) error
	if visit != nil {
		v = func(off int64, fr recordFrame) error { return visit(path, off, fr) }
	}
	sc, err := r.scan(first, v)
	if err != nil {
		return nil, nil, 0, r.buf, err
	}
	var torn *TornTail
	bad := sc.bad
	if bad != nil {
		// Zeros from the first bad byte to the end of the file are the
		// preallocated room of an active segment: a clean end, not damage.
		// A sealed segment has them only if a rollover crashed before its
		// truncation; a record lost there would show as a seq gap at the
		// next segment.
		nz, err := r.nextNonZero(bad.off)
		if err != nil {
			return nil, nil, 0, r.buf, err
		}
		if nz == size {
			bad = nil
		}
	}
	if bad != nil {
		if !last {
			return nil, nil, 0, r.buf, corrupt(bad.off, bad.seq, "%s (in a segment that is not the last)", bad.reason)
		}
		if bad.definite {
			return nil, nil, 0, r.buf, corrupt(bad.off, bad.seq, "%s", bad.reason)
		}
		off, seq, found, err := r.scanAhead(bad.off+1, bad.seq)
		if err != nil {
			return nil, nil, 0, r.buf, err
		}
		if found {
			return nil, nil, 0, r.buf, corrupt(bad.off, bad.seq,
				"%s, and a valid record (seq %d) follows at offset %d", bad.reason, seq, off)
		}
		torn = &TornTail{Segment: path, Offset: sc.end, Size: size, Seq: sc.next, Reason: bad.reason}
	}
	seg := &segment{first: first, path: path, phys: size}
	seg.size.Store(sc.end)
	seg.synced = sc.end
	return seg, torn, sc.next, r.buf, nil
}

// isNotExist reports whether err says a file or directory does not exist.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
