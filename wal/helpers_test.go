package wal

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

const memDir = "/wal"

// memConfig returns a config for a log in memDir on fsys.
func memConfig(fsys FS) Config {
	return Config{Dir: memDir, FS: fsys}
}

func mustOpen(t testing.TB, cfg Config) *Log {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func mustClose(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func replayAll(t testing.TB, l *Log) []Record {
	t.Helper()
	var recs []Record
	if err := l.Replay(func(r Record) error {
		recs = append(recs, r)
		return nil
	}); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return recs
}

// testEntry returns the i-th entry of a test workload: types and sizes vary,
// data names i so a misplaced record shows.
func testEntry(i int) Entry {
	n := (i * 37) % 97
	data := make([]byte, 0, n+16)
	data = fmt.Appendf(data, "e%d:", i)
	for len(data) < n {
		data = append(data, byte('a'+(i+len(data))%26))
	}
	return Entry{Type: uint8(1 + i%250), Data: data}
}

// checkRecords checks that recs are the entries want[from-1:], with seqs
// from on.
func checkRecords(t testing.TB, recs []Record, want []Entry, from uint64) {
	t.Helper()
	for i, r := range recs {
		seq := from + uint64(i)
		if r.Seq != seq {
			t.Fatalf("record %d: seq %d, want %d", i, r.Seq, seq)
		}
		if seq-1 >= uint64(len(want)) {
			t.Fatalf("record seq %d beyond the %d appended", seq, len(want))
		}
		w := want[seq-1]
		if r.Type != w.Type || !bytes.Equal(r.Data, w.Data) {
			t.Fatalf("record seq %d: got type %d data %q, want type %d data %q", seq, r.Type, r.Data, w.Type, w.Data)
		}
	}
}

func segPath(first uint64) string { return filepath.Join(memDir, SegmentName(first)) }

// frameOffsets returns the offset of each record frame in a segment file
// holding entries, and the end of the last one.
func frameOffsets(entries []Entry) (offs []int64, end int64) {
	off := int64(SegmentHeaderSize)
	for _, e := range entries {
		offs = append(offs, off)
		off += RecordHeaderSize + int64(len(e.Data))
	}
	return offs, off
}

func asCorruption(t testing.TB, err error) *CorruptionError {
	t.Helper()
	var ce *CorruptionError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got error %v, want a *CorruptionError wrapping ErrCorrupt", err)
	}
	return ce
}
