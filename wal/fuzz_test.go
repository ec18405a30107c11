package wal

import (
	"bytes"
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
)

// bytesFile is a read-only File over a byte slice.
type bytesFile struct{ b []byte }

func (f bytesFile) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(f.b).ReadAt(p, off)
}
func (bytesFile) Write([]byte) (int, error)          { return 0, errors.ErrUnsupported }
func (bytesFile) WriteAt([]byte, int64) (int, error) { return 0, errors.ErrUnsupported }
func (bytesFile) Sync() error                        { return nil }
func (bytesFile) Truncate(int64) error               { return errors.ErrUnsupported }
func (bytesFile) Stat() (fs.FileInfo, error)         { return nil, errors.ErrUnsupported }
func (bytesFile) Close() error                       { return nil }

const fuzzMaxRecord = 4096

// FuzzDecodeRecord feeds arbitrary bytes to the record decoder, to the
// segment reader (as the body of a segment) and to a read-only Open. None
// may panic; the reader's buffer never grows past the cap; every record
// accepted re-encodes to the very bytes it was read from.
func FuzzDecodeRecord(f *testing.F) {
	var valid []byte
	for i := range 4 {
		valid = appendRecord(valid, uint64(i+1), uint8(i+1), []byte("payload")[:i*2])
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(append(bytes.Clone(valid), make([]byte, 40)...))
	f.Add(appendRecord(nil, 1, 1, make([]byte, fuzzMaxRecord+1)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// The frame decoder alone.
		fr, st, reason := decodeRecord(data, fuzzMaxRecord)
		if st == frameOK {
			if fr.size > len(data) || len(fr.data) > fuzzMaxRecord || fr.typ == 0 {
				t.Fatalf("bad frame %+v from %d bytes", fr, len(data))
			}
			if re := appendRecord(nil, fr.seq, fr.typ, fr.data); !bytes.Equal(re, data[:fr.size]) {
				t.Fatalf("frame does not re-encode")
			}
		} else if reason == "" {
			t.Fatalf("status %d without a reason", st)
		}

		// The segment reader, with data as the records of a segment.
		h := encodeSegmentHeader(1)
		seg := append(h[:], data...)
		r := newSegReader(bytesFile{seg}, "fuzz", int64(len(seg)), fuzzMaxRecord, nil)
		if first, reason, err := r.header(); err != nil || reason != "" || first != 1 {
			t.Fatalf("header: %d %q %v", first, reason, err)
		}
		var n int
		sc, err := r.scan(1, func(off int64, fr recordFrame) error {
			n++
			if !bytes.Equal(appendRecord(nil, fr.seq, fr.typ, fr.data), seg[off:off+int64(fr.size)]) {
				t.Fatalf("record at %d does not re-encode", off)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if sc.next != uint64(n+1) || sc.end > int64(len(seg)) {
			t.Fatalf("scan %+v after %d records", sc, n)
		}
		if sc.bad != nil {
			if _, _, _, err := r.scanAhead(sc.bad.off+1, sc.bad.seq); err != nil {
				t.Fatal(err)
			}
		}
		if limit := max(readChunk, RecordHeaderSize+fuzzMaxRecord); cap(r.buf) > limit {
			t.Fatalf("reader buffer grew to %d bytes, cap is %d", cap(r.buf), limit)
		}

		// Open read-only: a torn tail or corruption, never a panic.
		m := NewMemFS(0)
		m.MkdirAll("/f", 0o755)
		m.WriteFile(filepath.Join("/f", SegmentName(1)), seg)
		l, err := Open(Config{Dir: "/f", FS: m, ReadOnly: true, MaxRecordSize: fuzzMaxRecord})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v", err)
			}
			return
		}
		var got int
		if err := l.Replay(func(Record) error { got++; return nil }); err != nil {
			t.Fatal(err)
		}
		if got != n {
			t.Fatalf("Replay saw %d records, scan %d", got, n)
		}
		l.Close()
	})
}
