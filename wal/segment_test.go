package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestRollover(t *testing.T) {
	fsys := NewMemFS(20)
	cfg := memConfig(fsys)
	cfg.SegmentSize = 300
	l := mustOpen(t, cfg)
	var want []Entry
	for i := range 60 {
		e := testEntry(i)
		if i == 30 {
			e = Entry{Type: 7, Data: bytes.Repeat([]byte("big"), 200)} // larger than a segment
		}
		want = append(want, e)
		if i%3 == 0 {
			_, err := l.Append(e)
			if err != nil {
				t.Fatal(err)
			}
		} else if _, err := l.AppendNoSync(e); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	names := fsys.List(memDir)
	if len(names) < 10 {
		t.Fatalf("only %d segments: %v", len(names), names)
	}
	// Each segment is named after its first record, is within the size
	// (but for the lone big record), and the seqs run on across segments.
	next := uint64(1)
	for _, name := range names {
		first, ok := parseSegmentName(name)
		if !ok {
			t.Fatalf("unexpected file %q", name)
		}
		if first != next {
			t.Fatalf("segment %s: first seq %d, want %d", name, first, next)
		}
		data, _ := fsys.ReadFile(filepath.Join(memDir, name))
		if h, reason := decodeSegmentHeader(data); reason != "" || h != first {
			t.Fatalf("segment %s: header %d %q", name, h, reason)
		}
		off := int64(SegmentHeaderSize)
		for off < int64(len(data)) {
			fr, st, reason := decodeRecord(data[off:], DefaultMaxRecordSize)
			if st != frameOK || fr.seq != next {
				t.Fatalf("segment %s offset %d: %s, seq %d want %d", name, off, reason, fr.seq, next)
			}
			off += int64(fr.size)
			next++
		}
		if int64(len(data)) > cfg.SegmentSize && next-first != 1 {
			t.Fatalf("segment %s is %d bytes with %d records", name, len(data), next-first)
		}
	}
	if next != 61 {
		t.Fatalf("segments hold seqs up to %d, want 60", next-1)
	}
	l = mustOpen(t, cfg)
	checkRecords(t, replayAll(t, l), want, 1)
	if seq, err := l.Append(testEntry(60)); err != nil || seq != 61 {
		t.Fatalf("Append after reopen = %d, %v", seq, err)
	}
	mustClose(t, l)
}

// TestRolloverSplitsBatch: one Append whose records do not fit in the
// active segment is split across a rollover at a record boundary.
func TestRolloverSplitsBatch(t *testing.T) {
	fsys := NewMemFS(21)
	cfg := memConfig(fsys)
	cfg.SegmentSize = 500
	l := mustOpen(t, cfg)
	var batch []Entry
	for i := range 30 {
		batch = append(batch, Entry{Type: 1, Data: bytes.Repeat([]byte{byte(i)}, 40)})
	}
	if _, err := l.Append(batch...); err != nil {
		t.Fatal(err)
	}
	if got := l.Stats().Rollovers; got < 2 {
		t.Fatalf("Rollovers = %d", got)
	}
	mustClose(t, l)
	for _, name := range fsys.List(memDir) {
		data, _ := fsys.ReadFile(filepath.Join(memDir, name))
		if int64(len(data)) > cfg.SegmentSize {
			t.Fatalf("segment %s has %d bytes", name, len(data))
		}
	}
	checkRecords(t, replayAll(t, mustOpen(t, cfg)), batch, 1)
}

func TestCompact(t *testing.T) {
	fsys := NewMemFS(22)
	cfg := memConfig(fsys)
	cfg.SegmentSize = 300
	l := mustOpen(t, cfg)
	var want []Entry
	for i := range 50 {
		want = append(want, testEntry(i))
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	segs := fsys.List(memDir)
	firsts := make([]uint64, len(segs))
	for i, s := range segs {
		firsts[i], _ = parseSegmentName(s)
	}
	// Compact below the second segment's first seq removes nothing.
	if err := l.Compact(firsts[1] - 1); err != nil {
		t.Fatal(err)
	}
	if got := fsys.List(memDir); len(got) != len(segs) {
		t.Fatalf("Compact(%d) removed segments: %v", firsts[1]-1, got)
	}
	// Compact up to the first seq of segment 3 removes segments 0..2.
	if err := l.Compact(firsts[3]); err != nil {
		t.Fatal(err)
	}
	if got := fsys.List(memDir); len(got) != len(segs)-3 || got[0] != segs[3] {
		t.Fatalf("after Compact(%d): %v", firsts[3], got)
	}
	if l.FirstSeq() != firsts[3] {
		t.Fatalf("FirstSeq = %d, want %d", l.FirstSeq(), firsts[3])
	}
	recs := replayAll(t, l)
	if recs[0].Seq != firsts[3] || len(recs) != 50-int(firsts[3])+1 {
		t.Fatalf("replay after Compact: %d records from %d", len(recs), recs[0].Seq)
	}
	checkRecords(t, recs, want, firsts[3])
	// The removals are durable.
	c := fsys.Clone()
	c.Crash(CrashSyncedOnly)
	if got := c.List(memDir); len(got) != len(segs)-3 {
		t.Fatalf("after a crash: %v", got)
	}
	// Compacting everything keeps the active segment.
	if err := l.Compact(1 << 62); err != nil {
		t.Fatal(err)
	}
	if got := fsys.List(memDir); len(got) != 1 || got[0] != segs[len(segs)-1] {
		t.Fatalf("after Compact(all): %v", got)
	}
	mustClose(t, l)
	l = mustOpen(t, cfg)
	recs = replayAll(t, l)
	checkRecords(t, recs, want, firsts[len(firsts)-1])
	if seq, err := l.Append(testEntry(50)); err != nil || seq != 51 {
		t.Fatalf("Append after compaction and reopen = %d, %v", seq, err)
	}
	mustClose(t, l)
}

// TestCompactConcurrent compacts while appenders roll segments over and a
// Replay runs.
func TestCompactConcurrent(t *testing.T) {
	fsys := NewMemFS(23)
	cfg := memConfig(fsys)
	cfg.SegmentSize = 400
	l := mustOpen(t, cfg)
	done := make(chan struct{})
	errc := make(chan error, 3)
	go func() {
		defer close(done)
		for i := range 400 {
			if _, err := l.Append(testEntry(i)); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case <-done:
				errc <- nil
				return
			default:
			}
			if err := l.Compact(l.DurableSeq()); err != nil {
				errc <- err
				return
			}
			prev := uint64(0)
			if err := l.Replay(func(r Record) error {
				if prev != 0 && r.Seq != prev+1 {
					t.Errorf("replay: seq %d after %d", r.Seq, prev)
				}
				prev = r.Seq
				return nil
			}); err != nil {
				errc <- err
				return
			}
		}
	}()
	<-done
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	l = mustOpen(t, cfg)
	recs := replayAll(t, l)
	if len(recs) == 0 || recs[len(recs)-1].Seq != 400 {
		t.Fatalf("replay after concurrent compaction: %d records", len(recs))
	}
	mustClose(t, l)
}

// buildSegments writes a log of n records over several segments and
// returns its fs, config and entries.
func buildSegments(t *testing.T, n int) (*MemFS, Config, []Entry) {
	fsys := NewMemFS(24)
	cfg := memConfig(fsys)
	cfg.SegmentSize = 300
	l := mustOpen(t, cfg)
	var want []Entry
	for i := range n {
		want = append(want, testEntry(i))
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	return fsys, cfg, want
}

func TestCorruptSegments(t *testing.T) {
	base, cfg, _ := buildSegments(t, 40)
	names := base.List(memDir)
	if len(names) < 4 {
		t.Fatalf("segments: %v", names)
	}
	mid := filepath.Join(memDir, names[1])
	last := filepath.Join(memDir, names[len(names)-1])
	midData, _ := base.ReadFile(mid)
	lastData, _ := base.ReadFile(last)

	cases := []struct {
		name    string
		damage  func(fsys *MemFS)
		segment string
		offset  int64
		reason  string
	}{
		{"torn end of a segment that is not the last", func(fsys *MemFS) {
			fsys.WriteFile(mid, midData[:len(midData)-3])
		}, mid, -1, "not the last"},
		{"bit flip in the last record of a segment that is not the last", func(fsys *MemFS) {
			b := bytes.Clone(midData)
			b[len(b)-1] ^= 0x10
			fsys.WriteFile(mid, b)
		}, mid, -1, "checksum"},
		{"garbage after the end of a segment that is not the last", func(fsys *MemFS) {
			fsys.WriteFile(mid, append(bytes.Clone(midData), 1, 2, 3, 0, 0))
		}, mid, int64(len(midData)), "not the last"},
		{"zeros then a byte after the end of a segment that is not the last", func(fsys *MemFS) {
			fsys.WriteFile(mid, append(append(bytes.Clone(midData), make([]byte, 5000)...), 1))
		}, mid, int64(len(midData)), "not the last"},
		{"a missing middle segment", func(fsys *MemFS) {
			fsys.Remove(mid)
		}, filepath.Join(memDir, names[2]), 0, "gap"},
		{"a segment header naming another seq", func(fsys *MemFS) {
			h := encodeSegmentHeader(999)
			b := bytes.Clone(midData)
			copy(b, h[:])
			fsys.WriteFile(mid, b)
		}, mid, 0, "names first seq"},
		{"a truncated header of the last segment", func(fsys *MemFS) {
			fsys.WriteFile(last, lastData[:10])
		}, last, 0, "header truncated"},
		{"an empty last segment file", func(fsys *MemFS) {
			fsys.WriteFile(last, nil)
		}, last, 0, "header truncated"},
		{"a record with a valid checksum but the wrong seq", func(fsys *MemFS) {
			b := appendRecord(bytes.Clone(lastData), 12345, 1, []byte("stray"))
			fsys.WriteFile(last, b)
		}, last, int64(len(lastData)), "seq 12345"},
		{"a duplicated record", func(fsys *MemFS) {
			b := bytes.Clone(lastData)
			n, _ := frameLength(b[SegmentHeaderSize:])
			b = append(b, b[SegmentHeaderSize:SegmentHeaderSize+RecordHeaderSize+n]...)
			fsys.WriteFile(last, b)
		}, last, int64(len(lastData)), "want"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := base.Clone()
			tc.damage(fsys)
			cfg := cfg
			cfg.FS = fsys
			_, err := Open(cfg)
			ce := asCorruption(t, err)
			if ce.Segment != tc.segment || tc.offset >= 0 && ce.Offset != tc.offset || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("got %v; want segment %s offset %d reason ~%q", ce, tc.segment, tc.offset, tc.reason)
			}
			// Read-only Open and Dump report it too.
			cfg.ReadOnly = true
			if _, err := Open(cfg); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadOnly Open = %v", err)
			}
			var out bytes.Buffer
			if err := Dump(cfg, &out, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(out.String(), "# corrupt") {
				t.Fatalf("Dump = %v\n%s", err, out.String())
			}
		})
	}
}

func TestLeftoverTempFileRemoved(t *testing.T) {
	fsys, cfg, want := buildSegments(t, 10)
	tmp := filepath.Join(memDir, SegmentName(11)+tmpSuffix)
	h := encodeSegmentHeader(11)
	fsys.WriteFile(tmp, h[:5])
	l := mustOpen(t, cfg)
	checkRecords(t, replayAll(t, l), want, 1)
	for _, name := range fsys.List(memDir) {
		if strings.HasSuffix(name, tmpSuffix) {
			t.Fatalf("leftover %s not removed", name)
		}
	}
	mustClose(t, l)
}

// TestEmptyLastSegment: a crash right after a rollover leaves an empty
// (header only) last segment; Open takes it as the active one.
func TestEmptyLastSegment(t *testing.T) {
	fsys, cfg, want := buildSegments(t, 10)
	h := encodeSegmentHeader(11)
	fsys.WriteFile(filepath.Join(memDir, SegmentName(11)), h[:])
	l := mustOpen(t, cfg)
	checkRecords(t, replayAll(t, l), want, 1)
	if seq, err := l.Append(testEntry(10)); err != nil || seq != 11 {
		t.Fatalf("Append = %d, %v", seq, err)
	}
	mustClose(t, l)
	data, _ := fsys.ReadFile(filepath.Join(memDir, SegmentName(11)))
	if len(data) != SegmentHeaderSize+RecordHeaderSize+len(testEntry(10).Data) {
		t.Fatalf("new record not in the empty segment: %d bytes", len(data))
	}
}

// TestHugeLengthDoesNotAllocate: a header claiming a huge record is damage,
// rejected before anything is allocated for it.
func TestHugeLengthDoesNotAllocate(t *testing.T) {
	fsys, cfg, want := buildSegments(t, 5)
	last := filepath.Join(memDir, fsys.List(memDir)[len(fsys.List(memDir))-1])
	data, _ := fsys.ReadFile(last)
	// A torn tail whose header claims MaxRecordSizeLimit bytes, and a file
	// long enough that only the cap stops the read.
	hdr := make([]byte, RecordHeaderSize)
	hdr[4], hdr[5], hdr[6], hdr[7] = 0, 0, 0, 0x40 // 1 GiB
	hdr[16] = 1
	fsys.WriteFile(last, append(append(bytes.Clone(data), hdr...), make([]byte, 2<<20)...))
	cfg.MaxRecordSize = 1 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("Open allocated %d bytes", grew)
	}
	tt, torn := l.TornTail()
	if !torn || !strings.Contains(tt.Reason, "exceeds MaxRecordSize") {
		t.Fatalf("torn tail %+v %v", tt, torn)
	}
	checkRecords(t, replayAll(t, l), want, 1)
	mustClose(t, l)
}

func TestReadOnlyAndDump(t *testing.T) {
	fsys, cfg, want := buildSegments(t, 12)
	names := fsys.List(memDir)
	last := filepath.Join(memDir, names[len(names)-1])
	data, _ := fsys.ReadFile(last)
	torn := append(bytes.Clone(data), appendRecord(nil, 13, 1, []byte("half written"))[:17]...)
	fsys.WriteFile(last, torn)

	ro := cfg
	ro.ReadOnly = true
	l := mustOpen(t, ro)
	tt, ok := l.TornTail()
	if !ok || tt.Offset != int64(len(data)) || tt.Size != int64(len(torn)) || tt.Seq != 13 {
		t.Fatalf("TornTail = %+v, %v", tt, ok)
	}
	checkRecords(t, replayAll(t, l), want, 1)
	if _, err := l.Append(testEntry(0)); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Append on a read-only log = %v", err)
	}
	if err := l.Sync(); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Sync = %v", err)
	}
	if err := l.Compact(5); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Compact = %v", err)
	}
	mustClose(t, l)
	if got, _ := fsys.ReadFile(last); !bytes.Equal(got, torn) {
		t.Fatal("read-only Open changed the file")
	}

	var out bytes.Buffer
	if err := Dump(cfg, &out, nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 13 || !strings.HasPrefix(lines[12], "# torn tail") {
		t.Fatalf("Dump:\n%s", out.String())
	}
	if !strings.HasPrefix(lines[0], "1 type=1 len=") || !strings.Contains(lines[0], `"e0:`) {
		t.Fatalf("first line %q", lines[0])
	}
	if got, _ := fsys.ReadFile(last); !bytes.Equal(got, torn) {
		t.Fatal("Dump changed the file")
	}
	out.Reset()
	if err := Dump(cfg, &out, func(r Record) string { return string(r.Data[:2]) }); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "e0\ne1\n") {
		t.Fatalf("Dump with a format:\n%s", out.String())
	}
	// A missing directory is an error for a read-only open, not created.
	ro.Dir = "/nowhere"
	if _, err := Open(ro); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only Open of a missing dir = %v", err)
	}
}

// TestTornTailZerosAndGarbage: garbage after the last whole record of the
// last segment is a torn tail, cut; zeros alone are a clean end (a
// preallocated tail), not reported; appends continue after either.
func TestTornTailZerosAndGarbage(t *testing.T) {
	garbage := make([]byte, 3000)
	for i := range garbage {
		garbage[i] = byte(i*7 + i/13)
	}
	partial := appendRecord(nil, 6, 1, []byte("partial record"))[:25]
	for name, tail := range map[string][]byte{
		"zeros":           make([]byte, 4096),
		"garbage":         garbage,
		"partial+zeros":   append(bytes.Clone(partial), make([]byte, 100)...),
		"partial+garbage": append(bytes.Clone(partial), garbage...),
	} {
		fsys, cfg, want := buildSegments(t, 5)
		names := fsys.List(memDir)
		last := filepath.Join(memDir, names[len(names)-1])
		data, _ := fsys.ReadFile(last)
		fsys.WriteFile(last, append(bytes.Clone(data), tail...))
		l := mustOpen(t, cfg)
		if tt, ok := l.TornTail(); ok != (name != "zeros") || ok && tt.Offset != int64(len(data)) {
			t.Fatalf("%s: TornTail %+v %v", name, tt, ok)
		}
		checkRecords(t, replayAll(t, l), want, 1)
		if seq, err := l.Append(testEntry(5)); err != nil || seq != 6 {
			t.Fatalf("%s: Append = %d, %v", name, seq, err)
		}
		mustClose(t, l)
		if got, _ := fsys.ReadFile(last); len(got) != len(data)+RecordHeaderSize+len(testEntry(5).Data) {
			t.Fatalf("%s: segment is %d bytes after repair and append", name, len(got))
		}
		checkRecords(t, replayAll(t, mustOpen(t, cfg)), append(want, testEntry(5)), 1)
	}
}

// TestReplayFrom: ReplayFrom and ReplayFromNoCopy hand over exactly the
// records from their seq on, in order, across segment boundaries, whatever
// segment they start in; ReplayFrom's data stays valid after the call.
func TestReplayFrom(t *testing.T) {
	fsys := NewMemFS(21)
	cfg := memConfig(fsys)
	cfg.SegmentSize = 300
	l := mustOpen(t, cfg)
	const n = 60
	for i := range n {
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(fsys.List(memDir)) < 5 {
		t.Fatalf("want several segments, got %v", fsys.List(memDir))
	}
	for _, noCopy := range []bool{false, true} {
		replay := l.ReplayFrom
		if noCopy {
			replay = l.ReplayFromNoCopy
		}
		for _, from := range []uint64{0, 1, 2, 17, 30, 59, 60, 61, 100} {
			var got []uint64
			var kept []Record
			if err := replay(from, func(r Record) error {
				got = append(got, r.Seq)
				if want := testEntry(int(r.Seq - 1)); r.Type != want.Type || !bytes.Equal(r.Data, want.Data) {
					t.Fatalf("from %d: record %d is %d %q, want %d %q", from, r.Seq, r.Type, r.Data, want.Type, want.Data)
				}
				kept = append(kept, r)
				return nil
			}); err != nil {
				t.Fatalf("from %d: %v", from, err)
			}
			first := max(from, 1)
			var want []uint64
			for s := first; s <= n; s++ {
				want = append(want, s)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("no copy %v: ReplayFrom(%d) visited %v, want %v", noCopy, from, got, want)
			}
			for _, r := range kept {
				if want := testEntry(int(r.Seq - 1)); !noCopy && !bytes.Equal(r.Data, want.Data) {
					t.Fatalf("from %d: record %d's data changed after the call: %q, want %q", from, r.Seq, r.Data, want.Data)
				}
			}
		}
	}
	mustClose(t, l)
}
