package wal

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// preallocConfig is a config with small segments and small preallocation
// chunks on fsys, zero-filling inline (deterministic).
func preallocConfig(fsys FS) Config {
	cfg := memConfig(fsys)
	cfg.SegmentSize = 1000
	cfg.PreallocSize = 300
	cfg.inlinePrealloc = true
	return cfg
}

// warnCounter is a slog handler that counts records at Warn and above.
type warnCounter struct {
	mu   sync.Mutex
	msgs []string
}

func (h *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		h.msgs = append(h.msgs, r.Message)
		h.mu.Unlock()
	}
	return nil
}
func (h *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnCounter) WithGroup(string) slog.Handler      { return h }

// appendN appends testEntry(from..from+n-1) durably.
func appendN(t *testing.T, l *Log, from, n int) []Entry {
	t.Helper()
	var es []Entry
	for i := from; i < from+n; i++ {
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
		es = append(es, testEntry(i))
	}
	return es
}

// TestPreallocCleanReopen: a preallocated log that lost power (zeros after
// its records, durable) or was closed reopens with no torn tail and no
// warning, in read-write and read-only mode; appends overwrite the zeros.
func TestPreallocCleanReopen(t *testing.T) {
	fsys := NewMemFS(3)
	cfg := preallocConfig(fsys)
	cfg.SegmentSize = 1 << 20
	l := mustOpen(t, cfg)
	want := appendN(t, l, 0, 10)
	_, end := frameOffsets(want)
	data, _ := fsys.ReadFile(segPath(1))
	if int64(len(data)) <= end || !bytes.Equal(data[end:], make([]byte, len(data)-int(end))) {
		t.Fatalf("segment is %d bytes for %d of records: not preallocated with zeros", len(data), end)
	}
	if st := l.Stats(); st.PreallocBytes == 0 || st.PreallocSyncs == 0 || st.Writes != 10 || st.Syncs != 10+1 {
		t.Fatalf("stats %+v", st)
	}
	fsys.Crash(CrashSyncedOnly) // power loss: the zeros stay, they were synced
	if got, _ := fsys.ReadFile(segPath(1)); !bytes.Equal(got, data) {
		t.Fatalf("power loss left %d bytes of %d: preallocated zeros not synced", len(got), len(data))
	}
	for _, ro := range []bool{true, false} {
		var h warnCounter
		c := cfg
		c.ReadOnly, c.Logger = ro, slog.New(&h)
		l = mustOpen(t, c)
		if tt, torn := l.TornTail(); torn {
			t.Fatalf("read-only %v: torn tail %+v", ro, tt)
		}
		if len(h.msgs) != 0 {
			t.Fatalf("read-only %v: warnings %q", ro, h.msgs)
		}
		checkRecords(t, replayAll(t, l), want, 1)
		if len(replayAll(t, l)) != 10 {
			t.Fatal("records missing")
		}
		if ro {
			var out bytes.Buffer
			if err := Dump(c, &out, nil); err != nil || !strings.Contains(out.String(), "seqs 1..10") {
				t.Fatalf("Dump: %v\n%s", err, out.String())
			}
			if got, _ := fsys.ReadFile(segPath(1)); !bytes.Equal(got, data) {
				t.Fatal("read-only open changed the segment")
			}
			mustClose(t, l)
		}
	}
	before, _ := fsys.ReadFile(segPath(1))
	want = append(want, appendN(t, l, 10, 1)...)
	if got, _ := fsys.ReadFile(segPath(1)); len(got) != len(before) {
		t.Fatalf("an append grew the preallocated segment from %d to %d bytes", len(before), len(got))
	}
	mustClose(t, l)
	_, end = frameOffsets(want)
	if got, _ := fsys.ReadFile(segPath(1)); int64(len(got)) != end {
		t.Fatalf("Close left %d bytes, records end at %d", len(got), end)
	}
	l = mustOpen(t, cfg)
	if _, torn := l.TornTail(); torn {
		t.Fatal("torn tail after Close")
	}
	checkRecords(t, replayAll(t, l), want, 1)
	mustClose(t, l)
}

// TestPreallocZerosThenRecord: zeros after the last record followed by a
// valid record with the expected seq or a later one is damage in the
// middle of the log, not a preallocated tail: corruption, at every
// distance (window and zero-block boundaries included). A valid record
// with an earlier seq there is garbage: a torn tail.
func TestPreallocZerosThenRecord(t *testing.T) {
	base := NewMemFS(4)
	cfg := memConfig(base)
	l := mustOpen(t, cfg)
	want := appendN(t, l, 0, 5)
	mustClose(t, l)
	full, _ := base.ReadFile(segPath(1))
	_, end := frameOffsets(want)
	gaps := []int{0, 1, 3, 16, 17, 19, 20, 21, 4075, 4096, 4097, 5000, readChunk - 40, readChunk - 17, readChunk - 16, readChunk, readChunk + 3, 3 << 20}
	for _, gap := range gaps {
		for _, seq := range []uint64{6, 9, 3} {
			if gap == 0 && seq == 6 {
				continue // just the next record
			}
			fsys := base.Clone()
			b := append(bytes.Clone(full), make([]byte, gap)...)
			b = appendRecord(b, seq, 7, []byte("a later record"))
			b = append(b, make([]byte, 100)...)
			fsys.WriteFile(segPath(1), b)
			for _, ro := range []bool{true, false} {
				c := cfg
				c.ReadOnly = ro
				c.FS = fsys
				l, err := Open(c)
				label := fmt.Sprintf("gap %d, seq %d, read-only %v", gap, seq, ro)
				if seq < 6 && gap > 0 {
					if err != nil {
						t.Fatalf("%s: %v", label, err)
					}
					if tt, torn := l.TornTail(); !torn || tt.Offset != end {
						t.Fatalf("%s: torn tail %+v %v", label, tt, torn)
					}
					checkRecords(t, replayAll(t, l), want, 1)
					l.Close()
					continue
				}
				ce := asCorruption(t, err)
				if ce.Offset != end || ce.Seq != 6 || !strings.Contains(ce.Reason, fmt.Sprintf("seq %d", seq)) {
					t.Fatalf("%s: %v", label, ce)
				}
			}
		}
	}
}

// TestPreallocTornWriteCut: a torn write inside the preallocated region (a
// prefix of a record, or garbage, then the zeros) is a torn tail: reported,
// cut, and the segment is extended again; appends continue.
func TestPreallocTornWriteCut(t *testing.T) {
	garbage := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3}
	for _, tornLen := range []int{1, 4, 19, 20, 25, 33} {
		for _, kind := range []string{"prefix", "garbage"} {
			fsys := NewMemFS(5)
			cfg := preallocConfig(fsys)
			l := mustOpen(t, cfg)
			want := appendN(t, l, 0, 6)
			fsys.Crash(CrashSyncedOnly)
			data, _ := fsys.ReadFile(segPath(1))
			_, end := frameOffsets(want)
			if int64(len(data)) < end+40 {
				t.Fatalf("segment is %d bytes, records end at %d: no room", len(data), end)
			}
			torn := appendRecord(nil, 7, 1, testEntry(6).Data)
			if kind == "garbage" {
				torn = bytes.Repeat(garbage, 10)
			}
			copy(data[end:], torn[:min(tornLen, len(torn))])
			if bytes.Equal(data[end:end+int64(tornLen)], make([]byte, tornLen)) {
				t.Fatalf("%s %d: the torn write is zeros", kind, tornLen)
			}
			fsys.WriteFile(segPath(1), data)
			l = mustOpen(t, cfg)
			label := fmt.Sprintf("%s of %d bytes", kind, tornLen)
			tt, ok := l.TornTail()
			if !ok || tt.Offset != end || tt.Size != int64(len(data)) || tt.Seq != 7 {
				t.Fatalf("%s: torn tail %+v %v", label, tt, ok)
			}
			checkRecords(t, replayAll(t, l), want, 1)
			got, _ := fsys.ReadFile(segPath(1))
			if int64(len(got)) <= end || !bytes.Equal(got[end:], make([]byte, len(got)-int(end))) {
				t.Fatalf("%s: after the cut the segment is %d bytes, not records then zeros", label, len(got))
			}
			if seq, err := l.Append(testEntry(100)); err != nil || seq != 7 {
				t.Fatalf("%s: Append = %d, %v", label, seq, err)
			}
			fsys.Crash(CrashSyncedOnly)
			l = mustOpen(t, cfg)
			if _, ok := l.TornTail(); ok {
				t.Fatalf("%s: torn tail after the repair", label)
			}
			checkRecords(t, replayAll(t, l), append(want, testEntry(100)), 1)
			if recs := replayAll(t, l); len(recs) != 7 || !bytes.Equal(recs[6].Data, testEntry(100).Data) {
				t.Fatalf("%s: %d records after reopen", label, len(recs))
			}
			mustClose(t, l)
		}
	}
}

// TestPreallocRollover: with preallocation, every sealed segment is cut to
// its records (no zeros), the active one has zeros ahead, records sync as
// often as without preallocation, and all replay.
func TestPreallocRollover(t *testing.T) {
	var syncs [2]uint64
	for i, pre := range []int64{0, 300} {
		fsys := NewMemFS(6)
		cfg := preallocConfig(fsys)
		cfg.PreallocSize = pre
		l := mustOpen(t, cfg)
		want := appendN(t, l, 0, 120)
		st := l.Stats()
		syncs[i] = st.Syncs
		if st.Rollovers < 4 {
			t.Fatalf("prealloc %d: %d rollovers", pre, st.Rollovers)
		}
		if pre > 0 && (st.PreallocBytes == 0 || st.PreallocSyncs == 0) {
			t.Fatalf("prealloc %d: stats %+v", pre, st)
		}
		names := fsys.List(memDir)
		seq := 1
		for j, name := range names {
			first, _ := parseSegmentName(name)
			data, _ := fsys.ReadFile(filepath.Join(memDir, name))
			k := seq - 1
			for k < len(want) && uint64(k+1) < nextFirst(names, j) {
				k++
			}
			_, end := frameOffsets(want[seq-1 : k])
			if first != uint64(seq) {
				t.Fatalf("segment %s, want first %d", name, seq)
			}
			last := j == len(names)-1
			switch {
			case !last && int64(len(data)) != end:
				t.Fatalf("prealloc %d: sealed segment %s is %d bytes, records end at %d", pre, name, len(data), end)
			case last && pre > 0 && (int64(len(data)) <= end || len(data) > int(cfg.SegmentSize)):
				t.Fatalf("prealloc %d: active segment %s is %d bytes, records end at %d", pre, name, len(data), end)
			case last && pre > 0 && !bytes.Equal(data[end:], make([]byte, len(data)-int(end))):
				t.Fatalf("prealloc %d: active segment is not zeros after the records", pre)
			}
			seq = k + 1
		}
		checkRecords(t, replayAll(t, l), want, 1)
		mustClose(t, l)
		l = mustOpen(t, cfg)
		if got := len(replayAll(t, l)); got != len(want) {
			t.Fatalf("prealloc %d: %d records after reopen", pre, got)
		}
		mustClose(t, l)
	}
	if syncs[0] != syncs[1] {
		t.Fatalf("syncs of records: %d without preallocation, %d with", syncs[0], syncs[1])
	}
}

func nextFirst(names []string, j int) uint64 {
	if j+1 >= len(names) {
		return 1 << 62
	}
	f, _ := parseSegmentName(names[j+1])
	return f
}

// TestPreallocSealedZeroTail: a crash in a rollover between creating the
// new segment and cutting the old one's zeros (which this log never does:
// it cuts first) would leave zeros after the records of a segment that is
// not the last. That is accepted as the segment's end, read-only too; a
// record lost there still shows as a gap at the next segment.
func TestPreallocSealedZeroTail(t *testing.T) {
	fsys, cfg, want := buildSegments(t, 20)
	names := fsys.List(memDir)
	if len(names) < 3 {
		t.Fatalf("%d segments", len(names))
	}
	mid := filepath.Join(memDir, names[1])
	midData, _ := fsys.ReadFile(mid)
	for _, ro := range []bool{true, false} {
		f := fsys.Clone()
		f.WriteFile(mid, append(bytes.Clone(midData), make([]byte, 5000)...))
		c := cfg
		c.FS, c.ReadOnly = f, ro
		l := mustOpen(t, c)
		if _, torn := l.TornTail(); torn {
			t.Fatal("torn tail reported")
		}
		checkRecords(t, replayAll(t, l), want, 1)
		if got := len(replayAll(t, l)); got != len(want) {
			t.Fatalf("%d records", got)
		}
		if !ro {
			if seq, err := l.Append(testEntry(20)); err != nil || seq != 21 {
				t.Fatalf("Append = %d, %v", seq, err)
			}
		}
		mustClose(t, l)
	}
	// The last record of the middle segment lost (zeroed): a gap.
	first, _ := parseSegmentName(names[1])
	next, _ := parseSegmentName(names[2])
	cut := int64(SegmentHeaderSize)
	for s := first; s < next-1; s++ {
		cut += RecordHeaderSize + int64(len(want[s-1].Data))
	}
	f := fsys.Clone()
	b := bytes.Clone(midData)
	clear(b[cut:])
	f.WriteFile(mid, b)
	c := cfg
	c.FS = f
	_, err := Open(c)
	if ce := asCorruption(t, err); !strings.Contains(ce.Reason, "gap") {
		t.Fatalf("zeroed last record of a sealed segment: %v", ce)
	}
}

// TestConcurrentAppendPrealloc runs the concurrent workload with the zero
// fill in the background and tiny chunks, so that leaders wait for it,
// roll over during it and write past it.
func TestConcurrentAppendPrealloc(t *testing.T) {
	cfg := memConfig(NewMemFS(31))
	cfg.SegmentSize = 4096
	cfg.PreallocSize = 256
	concurrentAppends(t, cfg, 32, 200)
}

// TestMemFSOverwriteCrash: an unsynced overwrite inside a synced file (as
// in a preallocated region) keeps the durable size and content; a crash
// keeps only a prefix of the new bytes (then zeros or garbage in those
// modes, within the written region), never changes bytes outside it.
func TestMemFSOverwriteCrash(t *testing.T) {
	for seed := range uint64(200) {
		for _, mode := range []CrashMode{CrashSyncedOnly, CrashTornPrefix, CrashTornZeros, CrashTornGarbage} {
			m := NewMemFS(seed)
			m.MkdirAll("/d", 0o755)
			f, _ := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o644)
			m.SyncDir("/d")
			old := bytes.Repeat([]byte{'.'}, 100)
			f.WriteAt(old, 0)
			f.Sync()
			neu := bytes.Repeat([]byte{'N'}, 30)
			f.WriteAt(neu, 40)
			m.Crash(mode)
			got, _ := m.ReadFile("/d/a")
			if len(got) != 100 || !bytes.Equal(got[:40], old[:40]) || !bytes.Equal(got[70:], old[70:]) {
				t.Fatalf("seed %d mode %d: %q", seed, mode, got)
			}
			k := 40
			for k < 70 && got[k] == 'N' {
				k++
			}
			rest := got[k:70]
			switch mode {
			case CrashSyncedOnly:
				if k != 40 || !bytes.Equal(rest, old[:30]) {
					t.Fatalf("seed %d: synced-only crash kept %q", seed, got)
				}
			case CrashTornPrefix:
				if !bytes.Equal(rest, old[k:70]) {
					t.Fatalf("seed %d: torn prefix %q", seed, got)
				}
			case CrashTornZeros:
				z := bytes.TrimLeft(rest, "\x00")
				if !bytes.Equal(z, old[70-len(z):70]) {
					t.Fatalf("seed %d: torn zeros %q", seed, got)
				}
			}
		}
	}
}

// TestPreallocZerosDurable: the zeros written ahead are synced by the
// extension itself (so a later record sync has no size change to commit):
// a power loss right after an extension keeps them.
func TestPreallocZerosDurable(t *testing.T) {
	fsys := NewMemFS(9)
	cfg := preallocConfig(fsys)
	cfg.SegmentSize = 1 << 20
	l := mustOpen(t, cfg)
	before := l.Stats().PreallocSyncs
	for i := 0; l.Stats().PreallocSyncs == before; i++ {
		if i > 100 {
			t.Fatal("no extension")
		}
		appendN(t, l, i, 1)
	}
	data, _ := fsys.ReadFile(segPath(1))
	fsys.Crash(CrashSyncedOnly)
	if got, _ := fsys.ReadFile(segPath(1)); !bytes.Equal(got, data) {
		t.Fatalf("power loss after an extension left %d bytes of %d", len(got), len(data))
	}
}
