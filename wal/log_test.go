package wal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAppendReplayReopen(t *testing.T) {
	fsys := NewMemFS(1)
	l := mustOpen(t, memConfig(fsys))
	if got := l.LastSeq(); got != 0 {
		t.Fatalf("LastSeq of a new log = %d", got)
	}
	var want []Entry
	for i := range 10 {
		e := testEntry(i)
		want = append(want, e)
		seq, err := l.Append(e)
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("Append %d = %d, %v", i, seq, err)
		}
	}
	// Several entries in one call get consecutive seqs.
	batch := []Entry{testEntry(10), testEntry(11), testEntry(12)}
	want = append(want, batch...)
	if seq, err := l.Append(batch...); err != nil || seq != 13 {
		t.Fatalf("Append batch = %d, %v", seq, err)
	}
	checkRecords(t, replayAll(t, l), want, 1)
	if got := l.DurableSeq(); got != 13 {
		t.Fatalf("DurableSeq = %d", got)
	}
	mustClose(t, l)

	l = mustOpen(t, memConfig(fsys))
	recs := replayAll(t, l)
	if len(recs) != 13 {
		t.Fatalf("replayed %d records, want 13", len(recs))
	}
	checkRecords(t, recs, want, 1)
	if _, torn := l.TornTail(); torn {
		t.Fatal("clean log reports a torn tail")
	}
	if seq, err := l.Append(testEntry(13)); err != nil || seq != 14 {
		t.Fatalf("Append after reopen = %d, %v", seq, err)
	}
	mustClose(t, l)
	// Replay's Data is the caller's: it survives the next record.
	l = mustOpen(t, memConfig(fsys))
	recs = replayAll(t, l)
	checkRecords(t, recs, append(want, testEntry(13)), 1)
	mustClose(t, l)
}

func TestAppendNoSyncAndSync(t *testing.T) {
	fsys := NewMemFS(2)
	l := mustOpen(t, memConfig(fsys))
	var want []Entry
	for i := range 5 {
		want = append(want, testEntry(i))
		if seq, err := l.AppendNoSync(testEntry(i)); err != nil || seq != uint64(i+1) {
			t.Fatalf("AppendNoSync = %d, %v", seq, err)
		}
	}
	if got := l.DurableSeq(); got != 0 {
		t.Fatalf("DurableSeq before Sync = %d", got)
	}
	// Not written yet: a crash loses them.
	c := fsys.Clone()
	c.Crash(CrashSyncedOnly)
	if recs := replayAll(t, mustOpen(t, memConfig(c))); len(recs) != 0 {
		t.Fatalf("unsynced records survived a crash: %d", len(recs))
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := l.DurableSeq(); got != 5 {
		t.Fatalf("DurableSeq after Sync = %d", got)
	}
	// A forced Append makes earlier AppendNoSync records durable too.
	want = append(want, testEntry(5), testEntry(6))
	if _, err := l.AppendNoSync(testEntry(5)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(testEntry(6)); err != nil {
		t.Fatal(err)
	}
	// Append with no entries is Sync; AppendNoSync with none is a no-op.
	if seq, err := l.Append(); err != nil || seq != 7 {
		t.Fatalf("Append() = %d, %v", seq, err)
	}
	if seq, err := l.AppendNoSync(); err != nil || seq != 7 {
		t.Fatalf("AppendNoSync() = %d, %v", seq, err)
	}
	c = fsys.Clone()
	c.Crash(CrashSyncedOnly)
	checkRecords(t, replayAll(t, mustOpen(t, memConfig(c))), want, 1)
	// Close syncs what AppendNoSync left.
	want = append(want, testEntry(7))
	if _, err := l.AppendNoSync(testEntry(7)); err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	fsys.Crash(CrashSyncedOnly)
	recs := replayAll(t, mustOpen(t, memConfig(fsys)))
	if len(recs) != 8 {
		t.Fatalf("replayed %d, want 8", len(recs))
	}
	checkRecords(t, recs, want, 1)
}

func TestAppendNoSyncBufferBound(t *testing.T) {
	fsys := NewMemFS(3)
	cfg := memConfig(fsys)
	cfg.BufferSize = 1000
	l := mustOpen(t, cfg)
	syncs := fsys.OpCalls(OpSync)
	var want []Entry
	for i := range 100 {
		want = append(want, testEntry(i))
		if _, err := l.AppendNoSync(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if fsys.OpCalls(OpSync) == syncs {
		t.Fatal("no sync although far more than BufferSize was appended")
	}
	if l.DurableSeq() < 80 {
		t.Fatalf("DurableSeq = %d: the buffer was not drained", l.DurableSeq())
	}
	mustClose(t, l)
	checkRecords(t, replayAll(t, mustOpen(t, cfg)), want, 1)
}

func TestInvalidEntries(t *testing.T) {
	cfg := memConfig(NewMemFS(4))
	cfg.MaxRecordSize = 100
	l := mustOpen(t, cfg)
	for _, es := range [][]Entry{{{Type: 0}}, {{Type: 1, Data: make([]byte, 101)}}, {{Type: 1}, {Type: 0}}} {
		if _, err := l.Append(es...); !errors.Is(err, ErrInvalidEntry) {
			t.Fatalf("Append(%v) = %v, want ErrInvalidEntry", es, err)
		}
		if _, err := l.AppendNoSync(es...); !errors.Is(err, ErrInvalidEntry) {
			t.Fatalf("AppendNoSync(%v) = %v, want ErrInvalidEntry", es, err)
		}
	}
	if seq, err := l.Append(Entry{Type: 1, Data: make([]byte, 100)}, Entry{Type: 255}); err != nil || seq != 2 {
		t.Fatalf("valid Append after invalid ones = %d, %v", seq, err)
	}
	mustClose(t, l)
}

func TestClosedLog(t *testing.T) {
	fsys := NewMemFS(5)
	l := mustOpen(t, memConfig(fsys))
	mustClose(t, l)
	if _, err := l.Append(testEntry(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
	if err := l.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close = %v", err)
	}
	if err := l.Replay(func(Record) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Replay after Close = %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	if err := l.Crash(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Crash after Close = %v", err)
	}
}

func TestReplayCallbackError(t *testing.T) {
	l := mustOpen(t, memConfig(NewMemFS(6)))
	for i := range 5 {
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := l.Replay(func(r Record) error {
		n++
		if r.Seq == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Fatalf("Replay = %v after %d records", err, n)
	}
	mustClose(t, l)
}

// TestTruncateEveryOffset cuts the log at every byte offset of its last
// records: Open must replay exactly the whole records before the cut, report
// the cut as a torn tail, and continue with the right seq.
func TestTruncateEveryOffset(t *testing.T) { truncateEveryOffset(t, 0, 0) }

// TestTruncateEveryOffsetPrealloc cuts the same way but leaves zeros after
// the cut, as a crash in a preallocated segment does, and reopens with
// preallocation: a cut at a record boundary is a clean end, anything else
// is a torn tail; either way the file is extended again and appends go on.
func TestTruncateEveryOffsetPrealloc(t *testing.T) { truncateEveryOffset(t, 3000, 700) }

func truncateEveryOffset(t *testing.T, zeroTail int, prealloc int64) {
	const n = 20
	cfgOf := func(fsys *MemFS) Config {
		cfg := memConfig(fsys)
		cfg.PreallocSize = prealloc
		cfg.inlinePrealloc = true // nothing writes after the test's crash
		return cfg
	}
	base := NewMemFS(7)
	l := mustOpen(t, memConfig(base))
	var want []Entry
	for i := range n {
		want = append(want, testEntry(i))
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	full, err := base.ReadFile(segPath(1))
	if err != nil {
		t.Fatal(err)
	}
	offs, end := frameOffsets(want)
	if end != int64(len(full)) {
		t.Fatalf("segment is %d bytes, want %d", len(full), end)
	}
	lastFew := 4
	if testing.Short() {
		lastFew = 2
	}
	for cut := offs[n-lastFew]; cut <= end; cut++ {
		fsys := base.Clone()
		if err := fsys.WriteFile(segPath(1), append(bytes.Clone(full[:cut]), make([]byte, zeroTail)...)); err != nil {
			t.Fatal(err)
		}
		whole := 0
		for whole < n && offs[whole]+RecordHeaderSize+int64(len(want[whole].Data)) <= cut {
			whole++
		}
		l, err := Open(cfgOf(fsys))
		if err != nil {
			t.Fatalf("cut at %d: Open: %v", cut, err)
		}
		recs := replayAll(t, l)
		if len(recs) != whole {
			t.Fatalf("cut at %d: replayed %d records, want %d", cut, len(recs), whole)
		}
		checkRecords(t, recs, want, 1)
		tt, torn := l.TornTail()
		atBoundary := whole == n && cut == end || whole < n && cut == offs[whole]
		if torn == atBoundary {
			t.Fatalf("cut at %d: torn tail reported %v (%+v)", cut, torn, tt)
		}
		if torn && (tt.Offset != offs[whole] || tt.Size != cut+int64(zeroTail) || tt.Seq != uint64(whole+1)) {
			t.Fatalf("cut at %d: torn tail %+v, want offset %d", cut, tt, offs[whole])
		}
		e := Entry{Type: 9, Data: []byte("after the cut")}
		if seq, err := l.Append(e); err != nil || seq != uint64(whole+1) {
			t.Fatalf("cut at %d: Append = %d, %v, want seq %d", cut, seq, err, whole+1)
		}
		if prealloc > 0 {
			// The log extended the segment again: crash with the zeros
			// in place instead of closing.
			if got, _ := fsys.ReadFile(segPath(1)); int64(len(got)) < offsOrEnd(offs, end, whole)+prealloc/2 {
				t.Fatalf("cut at %d: segment is %d bytes with preallocation", cut, len(got))
			}
		} else {
			mustClose(t, l)
		}
		// The repair and the new record are durable.
		fsys.Crash(CrashSyncedOnly)
		l = mustOpen(t, cfgOf(fsys))
		if tt, torn := l.TornTail(); torn {
			t.Fatalf("cut at %d: torn tail after the repair: %+v", cut, tt)
		}
		recs = replayAll(t, l)
		checkRecords(t, recs[:whole], want, 1)
		if len(recs) != whole+1 || recs[whole].Seq != uint64(whole+1) || !bytes.Equal(recs[whole].Data, e.Data) {
			t.Fatalf("cut at %d: after reopen %d records, last %+v", cut, len(recs), recs[len(recs)-1])
		}
		mustClose(t, l)
	}
}

// TestTruncateEveryOffsetOS does the same on the real disk, over the last
// two records.
func TestTruncateEveryOffsetOS(t *testing.T) {
	root := t.TempDir()
	cfg := DefaultConfig(filepath.Join(root, "base"))
	l := mustOpen(t, cfg)
	var want []Entry
	for i := range 6 {
		want = append(want, testEntry(i))
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	full, err := os.ReadFile(filepath.Join(cfg.Dir, SegmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	offs, end := frameOffsets(want)
	step := int64(1)
	if testing.Short() {
		step = 7
	}
	for cut := offs[4]; cut <= end; cut += step {
		dir := filepath.Join(root, "cut")
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, SegmentName(1)), full[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		whole := 4
		if cut >= offs[5] {
			whole = 5
		}
		if cut == end {
			whole = 6
		}
		l := mustOpen(t, DefaultConfig(dir))
		recs := replayAll(t, l)
		if len(recs) != whole {
			t.Fatalf("cut at %d: %d records, want %d", cut, len(recs), whole)
		}
		checkRecords(t, recs, want, 1)
		if seq, err := l.Append(Entry{Type: 1}); err != nil || seq != uint64(whole+1) {
			t.Fatalf("cut at %d: Append = %d, %v", cut, seq, err)
		}
		mustClose(t, l)
		if fi, err := os.Stat(filepath.Join(dir, SegmentName(1))); err != nil || fi.Size() != offsOrEnd(offs, end, whole)+RecordHeaderSize {
			t.Fatalf("cut at %d: segment size after repair and append: %v %v", cut, fi.Size(), err)
		}
	}
}

func offsOrEnd(offs []int64, end int64, i int) int64 {
	if i < len(offs) {
		return offs[i]
	}
	return end
}

// TestBitFlips flips every bit of the last two records, of a middle record
// and of the segment header. A flip is always detected: as a torn tail
// (the log then is a prefix of what was appended) or as corruption; never
// is a wrong record returned. A flip in a record that valid records follow
// is corruption naming the segment and the record's offset.
func TestBitFlips(t *testing.T) { bitFlips(t, 0) }

// TestBitFlipsPrealloc flips the same bits with zeros after the records (a
// preallocated segment), and every bit of the first zeros: a flipped zero
// is garbage after the last record, a torn tail.
func TestBitFlipsPrealloc(t *testing.T) { bitFlips(t, 5000) }

func bitFlips(t *testing.T, zeroTail int) {
	const n = 10
	base := NewMemFS(8)
	l := mustOpen(t, memConfig(base))
	var want []Entry
	for i := range n {
		want = append(want, testEntry(i+3))
		if _, err := l.Append(testEntry(i + 3)); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	full, _ := base.ReadFile(segPath(1))
	offs, end := frameOffsets(want)
	full = append(full, make([]byte, zeroTail)...)

	flip := func(bit int64) (*Log, error) {
		fsys := base.Clone()
		b := bytes.Clone(full)
		b[bit/8] ^= 1 << (bit % 8)
		if err := fsys.WriteFile(segPath(1), b); err != nil {
			t.Fatal(err)
		}
		cfg := memConfig(fsys)
		cfg.PreallocSize = int64(zeroTail)
		return Open(cfg)
	}
	recordAt := func(off int64) int {
		i := 0
		for i+1 < n && offs[i+1] <= off {
			i++
		}
		return i
	}
	regions := [][2]int64{
		{0, SegmentHeaderSize},     // header
		{offs[4], offs[5]},         // a middle record
		{offs[n-2], end},           // the last two records
		{offs[0], offs[0] + 24},    // the first record's header
		{offs[n-1] - 4, offs[n-1]}, // the end of the second-to-last record
	}
	if zeroTail > 0 {
		regions = append(regions, [2]int64{end, end + 40}, [2]int64{end + int64(zeroTail) - 20, end + int64(zeroTail)})
	}
	for _, reg := range regions {
		for bit := reg[0] * 8; bit < reg[1]*8; bit++ {
			l, err := flip(bit)
			off := bit / 8
			if off < SegmentHeaderSize {
				if ce := asCorruption(t, err); ce.Offset != 0 || ce.Segment != segPath(1) {
					t.Fatalf("bit %d: %v", bit, ce)
				}
				continue
			}
			if off >= end {
				// In the zeros: garbage after the last record, cut.
				if err != nil {
					t.Fatalf("bit %d in the zero tail: %v", bit, err)
				}
				if tt, torn := l.TornTail(); !torn || tt.Offset != end {
					t.Fatalf("bit %d in the zero tail: torn tail %+v %v", bit, tt, torn)
				}
				checkRecords(t, replayAll(t, l), want, 1)
				if got := len(replayAll(t, l)); got != n {
					t.Fatalf("bit %d in the zero tail: %d records", bit, got)
				}
				mustClose(t, l)
				continue
			}
			rec := recordAt(off)
			if rec < n-1 {
				// Valid records follow: corruption, at the damaged record.
				ce := asCorruption(t, err)
				if ce.Segment != segPath(1) || ce.Offset != offs[rec] || ce.Seq != uint64(rec+1) {
					t.Fatalf("bit %d (record %d at %d): %v", bit, rec+1, offs[rec], ce)
				}
				if !strings.Contains(ce.Error(), SegmentName(1)) {
					t.Fatalf("error does not name the segment: %v", ce)
				}
				continue
			}
			// The last record: a torn tail, cut.
			if err != nil {
				t.Fatalf("bit %d in the last record: %v", bit, err)
			}
			recs := replayAll(t, l)
			if len(recs) != n-1 {
				t.Fatalf("bit %d: %d records, want %d", bit, len(recs), n-1)
			}
			checkRecords(t, recs, want, 1)
			mustClose(t, l)
		}
	}
}
