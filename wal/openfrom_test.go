package wal

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

var openFromSeed = flag.Uint64("openfrom-seed", 0, "run TestOpenFromMatchesOpen with this seed only (0: seeds 1..N)")

// collect returns a callback that keeps a copy of every record it sees,
// and the records seen.
func collect() (*[]Record, func(Record) error) {
	var recs []Record
	return &recs, func(r Record) error {
		r.Data = bytes.Clone(r.Data)
		recs = append(recs, r)
		return nil
	}
}

// dirState returns the content of every file of memDir on fsys.
func dirState(t testing.TB, fsys *MemFS) map[string][]byte {
	t.Helper()
	st := map[string][]byte{}
	for _, name := range fsys.List(memDir) {
		b, err := fsys.ReadFile(memDir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		st[name] = b
	}
	return st
}

// durableState is dirState of what a power loss would leave of fsys.
func durableState(t testing.TB, fsys *MemFS) map[string][]byte {
	t.Helper()
	c := fsys.Clone()
	c.Crash(CrashSyncedOnly)
	return dirState(t, c)
}

func sameState(a, b map[string][]byte) bool { return maps.EqualFunc(a, b, bytes.Equal) }

// segmentFirsts returns the first seqs of the segment files of memDir.
func segmentFirsts(fsys *MemFS) []uint64 {
	var firsts []uint64
	for _, name := range fsys.List(memDir) {
		if first, ok := parseSegmentName(name); ok {
			firsts = append(firsts, first)
		}
	}
	return firsts
}

// randomLog leaves on fsys a log as a random run leaves it: small segments
// (some compacted away), preallocated or not, ended by a clean Close, a
// power loss (any crash mode) or a process crash, maybe halted at a random
// call first; then maybe with zeros after a sealed segment's records (a
// rollover that crashed before its truncation), a zero tail or a torn
// tail (a partial record, maybe followed by zeros) after the last one, and
// a leftover temporary file. It returns the config and what it did.
func randomLog(t testing.TB, rng *rand.Rand, fsys *MemFS) (Config, string) {
	t.Helper()
	cfg := memConfig(fsys)
	cfg.SegmentSize = int64(150 + rng.IntN(600))
	if rng.IntN(2) == 0 {
		cfg.PreallocSize = int64(40 + rng.IntN(300))
	}
	cfg.BufferSize = 200 + rng.IntN(400)
	cfg.inlinePrealloc = true
	desc := fmt.Sprintf("segment %d, prealloc %d", cfg.SegmentSize, cfg.PreallocSize)
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rng.IntN(3) == 0 {
		k := rng.IntN(400)
		fsys.HaltAfter(k)
		desc += fmt.Sprintf(", halted after %d calls", k)
	}
	n := rng.IntN(160)
	for i := range n {
		var err error
		switch e := testEntry(i); rng.IntN(8) {
		case 0:
			_, err = l.AppendNoSync(e)
		case 1:
			_, err = l.Append(e, testEntry(1000+i))
		case 2:
			if rng.IntN(6) == 0 {
				upTo := l.LastSeq() - uint64(rng.IntN(30))
				err = l.Compact(upTo)
			}
		default:
			_, err = l.Append(e)
		}
		if err != nil {
			break
		}
	}
	fsys.Disarm() // a halt not reached yet: none
	switch end := rng.IntN(4); {
	case end == 0 && !fsys.Halted():
		l.Close()
		desc += ", closed"
	case end <= 1:
		mode := CrashMode(1 + rng.IntN(4))
		fsys.Crash(mode)
		desc += fmt.Sprintf(", power loss (mode %d)", mode)
	default:
		fsys.Restart()
		desc += ", process crash"
	}
	firsts := segmentFirsts(fsys)
	appendTo := func(first uint64, b []byte) {
		data, err := fsys.ReadFile(segPath(first))
		if err != nil {
			t.Fatal(err)
		}
		if err := fsys.WriteFile(segPath(first), append(data, b...)); err != nil {
			t.Fatal(err)
		}
	}
	if len(firsts) >= 2 && rng.IntN(3) == 0 {
		i := rng.IntN(len(firsts) - 1)
		z := 1 + rng.IntN(300)
		appendTo(firsts[i], make([]byte, z))
		desc += fmt.Sprintf(", %d zeros after sealed segment %d", z, firsts[i])
	}
	if len(firsts) > 0 {
		last := firsts[len(firsts)-1]
		switch rng.IntN(4) {
		case 0:
			z := 1 + rng.IntN(300)
			appendTo(last, make([]byte, z))
			desc += fmt.Sprintf(", %d zeros after the last segment", z)
		case 1:
			frame := appendRecord(nil, 1<<40, 7, testEntry(rng.IntN(500)).Data)
			cut := 1 + rng.IntN(len(frame)-1)
			tail := frame[:cut]
			if rng.IntN(2) == 0 {
				tail = append(tail, make([]byte, 1+rng.IntN(200))...)
			}
			appendTo(last, tail)
			desc += fmt.Sprintf(", torn tail of %d bytes", len(tail))
		}
	}
	if len(firsts) > 0 && rng.IntN(4) == 0 {
		h := encodeSegmentHeader(firsts[len(firsts)-1] + 1000)
		if err := fsys.WriteFile(segPath(firsts[len(firsts)-1]+1000)+tmpSuffix, h[:]); err != nil {
			t.Fatal(err)
		}
		desc += ", a leftover temporary file"
	}
	cfg.FS = nil
	return cfg, desc
}

// TestOpenFromMatchesOpen: on random logs, OpenFrom(from, fn) hands fn the
// records Open then ReplayFromNoCopy(from) hands theirs, and leaves the
// log, the files and what is durable as they leave them (and a record is
// durable before fn sees it, as before Replay does): LastSeq,
// FirstSeq, DurableSeq, TornTail, Stats, a later Replay of the whole log
// (segments OpenFrom did not read included), appends after it and the
// files after Close. A from whose records are gone (before the first kept
// segment) fails it with a *MissingError and changes nothing. A failure
// prints its seed; -openfrom-seed runs that one alone.
func TestOpenFromMatchesOpen(t *testing.T) {
	seeds := 2000
	if testing.Short() {
		seeds = 300
	}
	lo, hi := uint64(1), uint64(seeds)
	if *openFromSeed != 0 {
		lo, hi = *openFromSeed, *openFromSeed
	}
	var skipped, missing, sealedZerosSkipped, torn int
	for seed := lo; seed <= hi; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0x6f70656e66726f6d))
		fsys := NewMemFS(seed)
		cfg, desc := randomLog(t, rng, fsys)
		fatalf := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d (%s; go test ./wal -run TestOpenFromMatchesOpen -openfrom-seed %d): %s",
				seed, desc, seed, fmt.Sprintf(format, args...))
		}
		on := func(fs *MemFS) Config { c := cfg; c.FS = fs; return c }

		a, b := fsys.Clone(), fsys.Clone()
		la, err := Open(on(a))
		if err != nil {
			fatalf("Open: %v", err)
		}
		firsts := segmentFirsts(a)
		var from uint64
		switch rng.IntN(3) {
		case 0: // at or next to a segment boundary
			from = firsts[rng.IntN(len(firsts))] + uint64(rng.IntN(3)) - 1
		default:
			from = uint64(rng.IntN(int(la.LastSeq()) + 4))
		}
		desc += fmt.Sprintf(", from %d (log %d..%d in %d segments)", from, la.FirstSeq(), la.LastSeq(), len(firsts))
		want, wantFn := collect()
		if err := la.ReplayFromNoCopy(from, wantFn); err != nil {
			fatalf("ReplayFromNoCopy: %v", err)
		}
		before := dirState(t, b)
		got, gotFn := collect()
		if seed%3 == 0 {
			// Every record handed over is durable: a power loss then
			// keeps it.
			keep := gotFn
			gotFn = func(r Record) error {
				if d := durableLast(t, on(b)); d < r.Seq {
					fatalf("record %d handed over while a power loss would keep the log up to %d", r.Seq, d)
				}
				return keep(r)
			}
		}
		lb, err := OpenFrom(on(b), from, gotFn)
		if max(from, 1) < la.FirstSeq() {
			missing++
			var me *MissingError
			if !errors.As(err, &me) || !errors.Is(err, ErrMissing) || me.From != max(from, 1) || me.First != la.FirstSeq() {
				fatalf("OpenFrom of a log starting at %d = %v, want a *MissingError", la.FirstSeq(), err)
			}
			if lb != nil || len(*got) > 0 {
				fatalf("OpenFrom failed with a Log (%v) or after handing over %d records", lb != nil, len(*got))
			}
			if !sameState(before, dirState(t, b)) {
				fatalf("OpenFrom that found records missing changed the files")
			}
			la.Close()
			continue
		}
		if err != nil {
			fatalf("OpenFrom: %v", err)
		}
		if !slices.EqualFunc(*want, *got, func(x, y Record) bool {
			return x.Seq == y.Seq && x.Type == y.Type && bytes.Equal(x.Data, y.Data)
		}) {
			fatalf("OpenFrom handed over %d records (%v), Open and ReplayFromNoCopy %d (%v)",
				len(*got), seqSpan(*got), len(*want), seqSpan(*want))
		}
		for _, seg := range lb.segs {
			if seg.unchecked {
				skipped++
				// No record ends in a zero byte (testEntry's data are
				// letters): this one has zeros after its records.
				if data, _ := b.ReadFile(seg.path); len(data) > 0 && data[len(data)-1] == 0 {
					sealedZerosSkipped++
				}
			}
		}
		ta, okA := la.TornTail()
		tb, okB := lb.TornTail()
		if okB {
			torn++
		}
		switch {
		case la.LastSeq() != lb.LastSeq(), la.FirstSeq() != lb.FirstSeq(), la.DurableSeq() != lb.DurableSeq():
			fatalf("seqs: OpenFrom last %d first %d durable %d, Open %d %d %d", lb.LastSeq(), lb.FirstSeq(),
				lb.DurableSeq(), la.LastSeq(), la.FirstSeq(), la.DurableSeq())
		case ta != tb || okA != okB:
			fatalf("torn tail: OpenFrom %+v %v, Open %+v %v", tb, okB, ta, okA)
		case la.Stats() != lb.Stats():
			fatalf("stats: OpenFrom %+v, Open %+v", lb.Stats(), la.Stats())
		case !sameState(dirState(t, a), dirState(t, b)):
			fatalf("OpenFrom left other files than Open")
		case !sameState(durableState(t, a), durableState(t, b)):
			fatalf("OpenFrom made other data durable than Open")
		}
		// A replay of the whole log reads the segments OpenFrom skipped.
		allA, replayA := collect()
		allB, replayB := collect()
		if errA, errB := la.Replay(replayA), lb.Replay(replayB); errA != nil || errB != nil {
			fatalf("Replay after Open: %v, after OpenFrom: %v", errA, errB)
		}
		if !slices.EqualFunc(*allA, *allB, func(x, y Record) bool {
			return x.Seq == y.Seq && x.Type == y.Type && bytes.Equal(x.Data, y.Data)
		}) {
			fatalf("Replay after OpenFrom: %v, after Open: %v", seqSpan(*allB), seqSpan(*allA))
		}
		for i := range 1 + rng.IntN(40) {
			e := testEntry(5000 + i)
			sa, errA := la.Append(e)
			sb, errB := lb.Append(e)
			if errA != nil || errB != nil || sa != sb {
				fatalf("append after OpenFrom: %d %v, after Open: %d %v", sb, errB, sa, errA)
			}
		}
		if errA, errB := la.Close(), lb.Close(); errA != nil || errB != nil {
			fatalf("Close after Open: %v, after OpenFrom: %v", errA, errB)
		}
		if !sameState(dirState(t, a), dirState(t, b)) {
			fatalf("after appends and Close, OpenFrom's log has other files than Open's")
		}
	}
	t.Logf("%d segments not read, %d of them sealed with zeros after their records; %d torn tails; %d logs with records missing",
		skipped, sealedZerosSkipped, torn, missing)
	if hi-lo > 100 && (skipped == 0 || sealedZerosSkipped == 0 || torn == 0 || missing == 0) {
		t.Fatalf("the random logs miss a case: %d segments not read, %d with zeros, %d torn tails, %d with records missing",
			skipped, sealedZerosSkipped, torn, missing)
	}
}

// durableLast returns the last seq of the log of cfg that a power loss
// now would keep.
func durableLast(t testing.TB, cfg Config) uint64 {
	t.Helper()
	c := cfg.FS.(*MemFS).Clone()
	c.Crash(CrashSyncedOnly)
	cfg.FS, cfg.ReadOnly = c, true
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open after a power loss: %v", err)
	}
	defer l.Close()
	return l.LastSeq()
}

// seqSpan describes the seqs of recs.
func seqSpan(recs []Record) string {
	if len(recs) == 0 {
		return "none"
	}
	return fmt.Sprintf("seqs %d..%d", recs[0].Seq, recs[len(recs)-1].Seq)
}

// fourSegments writes entries 0..59 to a log of small segments on a new
// MemFS and closes it. It returns the FS, the config, the entries and the
// first seqs of the segments (at least four).
func fourSegments(t *testing.T) (*MemFS, Config, []Entry, []uint64) {
	t.Helper()
	fsys := NewMemFS(1)
	cfg := memConfig(fsys)
	cfg.SegmentSize = 400
	l := mustOpen(t, cfg)
	var es []Entry
	for i := range 60 {
		es = append(es, testEntry(i))
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	firsts := segmentFirsts(fsys)
	if len(firsts) < 4 {
		t.Fatalf("%d segments, want 4 or more", len(firsts))
	}
	cfg.FS = nil
	return fsys, cfg, es, firsts
}

// recordOffset returns the offset of record seq in the segment that starts
// at first, of a log holding es.
func recordOffset(es []Entry, first, seq uint64) int64 {
	offs, _ := frameOffsets(es[first-1 : seq])
	return offs[len(offs)-1]
}

// damage flips a byte of a file.
func damage(t *testing.T, fsys *MemFS, path string, off int64) {
	t.Helper()
	b, err := fsys.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if err := fsys.WriteFile(path, b); err != nil {
		t.Fatal(err)
	}
}

// TestOpenFromCorruption: damage in a segment OpenFrom reads (the one
// holding from, before or after from, or a later one) fails it with the
// *CorruptionError Open reports; damage in a record of a segment it does
// not read does not fail it, and a later Replay of the whole log reports
// it (a damaged record, or a record lost at the end of such a segment), as
// Open would have. A skipped segment's header is checked.
func TestOpenFromCorruption(t *testing.T) {
	base, cfg, es, firsts := fourSegments(t)
	on := func(fs *MemFS) Config { c := cfg; c.FS = fs; return c }
	from := firsts[2] + 1 // segments 0 and 1 are not read
	// sameCorruption checks that err is the corruption Open finds in fsys
	// (Replay words a seq gap differently).
	sameCorruption := func(t *testing.T, fsys *MemFS, err error) *CorruptionError {
		t.Helper()
		ce := asCorruption(t, err)
		_, openErr := Open(on(fsys.Clone()))
		if oe := asCorruption(t, openErr); oe.Segment != ce.Segment || oe.Offset != ce.Offset || oe.Seq != ce.Seq {
			t.Fatalf("OpenFrom reports %v, Open %v", ce, oe)
		}
		return ce
	}

	for _, c := range []struct {
		name  string
		first uint64 // the damaged segment
		seq   uint64 // the damaged record
	}{
		{"segment of from, before it", firsts[2], firsts[2]},
		{"segment of from, after it", firsts[2], firsts[2] + 2},
		{"a later sealed segment", firsts[3], firsts[3] + 1},
		{"the last segment, a record before the last", firsts[len(firsts)-1], firsts[len(firsts)-1]},
	} {
		t.Run(c.name, func(t *testing.T) {
			fsys := base.Clone()
			off := recordOffset(es, c.first, c.seq)
			damage(t, fsys, segPath(c.first), off+RecordHeaderSize)
			got, fn := collect()
			l, err := OpenFrom(on(fsys), from, fn)
			if l != nil {
				t.Fatal("OpenFrom returned a Log with its error")
			}
			ce := sameCorruption(t, fsys, err)
			if ce.Segment != segPath(c.first) || ce.Offset != off || ce.Seq != c.seq {
				t.Fatalf("corruption reported at %s offset %d seq %d, want %s %d %d", ce.Segment, ce.Offset, ce.Seq,
					segPath(c.first), off, c.seq)
			}
			// What fn saw before: the records from from up to the damage.
			if want := max(int(c.seq)-int(from), 0); len(*got) != want {
				t.Fatalf("fn saw %d records before the corruption, want %d", len(*got), want)
			}
			checkRecords(t, *got, es, from)
		})
	}

	t.Run("a segment not read", func(t *testing.T) {
		fsys := base.Clone()
		seq := firsts[1] + 1
		off := recordOffset(es, firsts[1], seq)
		damage(t, fsys, segPath(firsts[1]), off+RecordHeaderSize)
		got, fn := collect()
		l, err := OpenFrom(on(fsys), from, fn)
		if err != nil {
			t.Fatalf("OpenFrom with damage only before from: %v", err)
		}
		defer l.Close()
		checkRecords(t, *got, es, from)
		if len(*got) != len(es)-int(from)+1 {
			t.Fatalf("fn saw %d records, want %d", len(*got), len(es)-int(from)+1)
		}
		if err := l.ReplayFrom(from, func(Record) error { return nil }); err != nil {
			t.Fatalf("ReplayFrom(%d): %v", from, err)
		}
		err = l.Replay(func(Record) error { return nil })
		ce := sameCorruption(t, fsys, err)
		if ce.Segment != segPath(firsts[1]) || ce.Offset != off || ce.Seq != seq {
			t.Fatalf("Replay reports corruption at %s offset %d seq %d, want %s %d %d", ce.Segment, ce.Offset, ce.Seq,
				segPath(firsts[1]), off, seq)
		}
	})

	t.Run("a record lost at the end of a segment not read", func(t *testing.T) {
		fsys := base.Clone()
		b, _ := fsys.ReadFile(segPath(firsts[1]))
		cut := recordOffset(es, firsts[1], firsts[2]-1)
		if err := fsys.WriteFile(segPath(firsts[1]), b[:cut]); err != nil {
			t.Fatal(err)
		}
		l, err := OpenFrom(on(fsys), from, func(Record) error { return nil })
		if err != nil {
			t.Fatalf("OpenFrom: %v", err)
		}
		defer l.Close()
		ce := sameCorruption(t, fsys, l.Replay(func(Record) error { return nil }))
		if ce.Segment != segPath(firsts[2]) || ce.Offset != 0 || ce.Seq != firsts[2]-1 {
			t.Fatalf("Replay reports %v, want a seq gap at the header of %s", ce, segPath(firsts[2]))
		}
	})

	t.Run("a bad header of a segment not read", func(t *testing.T) {
		for _, hdr := range [][]byte{nil, []byte("DTX-WAL"), func() []byte { h := encodeSegmentHeader(firsts[1] + 1); return h[:] }()} {
			fsys := base.Clone()
			b, _ := fsys.ReadFile(segPath(firsts[1]))
			if err := fsys.WriteFile(segPath(firsts[1]), append(slices.Clone(hdr), b[SegmentHeaderSize:]...)); err != nil {
				t.Fatal(err)
			}
			called := false
			_, err := OpenFrom(on(fsys), from, func(Record) error { called = true; return nil })
			if ce := sameCorruption(t, fsys, err); ce.Segment != segPath(firsts[1]) || ce.Offset != 0 {
				t.Fatalf("header %q: OpenFrom reports %v, want corruption at the header of %s", hdr, ce, segPath(firsts[1]))
			}
			if called {
				t.Fatalf("header %q: fn called before the header check", hdr)
			}
		}
	})

	t.Run("fn fails", func(t *testing.T) {
		fsys := base.Clone()
		stop := errors.New("stop")
		n := 0
		l, err := OpenFrom(on(fsys), from, func(r Record) error {
			if n++; n == 3 {
				return stop
			}
			return nil
		})
		if err != stop || l != nil {
			t.Fatalf("OpenFrom = %v, %v, want fn's error as is and no Log", l, err)
		}
		// Nothing was changed or left open: the log opens and takes appends.
		l = mustOpen(t, on(fsys))
		if seq, err := l.Append(testEntry(100)); err != nil || seq != uint64(len(es))+1 {
			t.Fatalf("Append after a failed OpenFrom = %d, %v", seq, err)
		}
		mustClose(t, l)
	})
}

// TestOpenFromBounds: a from before the log's first kept record fails
// OpenFrom with a *MissingError (from 0 as 1) before fn sees anything and
// before anything on disk changes (a torn tail stays uncut, a leftover
// temporary file stays); from at the first kept record hands over all of
// them; a from past the end calls fn for nothing and leaves a log whose
// LastSeq says so and which appends after its last record. A new log is
// created as by Open.
func TestOpenFromBounds(t *testing.T) {
	base, cfg, es, firsts := fourSegments(t)
	on := func(fs *MemFS) Config { c := cfg; c.FS = fs; return c }
	l := mustOpen(t, on(base))
	if err := l.Compact(firsts[2]); err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	first, last := firsts[2], uint64(len(es))
	// A torn tail and a leftover temporary file, which a failed OpenFrom
	// must leave alone.
	lastSeg := segPath(firsts[len(firsts)-1])
	b, _ := base.ReadFile(lastSeg)
	frame := appendRecord(nil, last+1, 1, []byte("torn"))
	if err := base.WriteFile(lastSeg, append(b, frame[:len(frame)-2]...)); err != nil {
		t.Fatal(err)
	}
	if err := base.WriteFile(segPath(last+1)+tmpSuffix, nil); err != nil {
		t.Fatal(err)
	}

	for _, from := range []uint64{0, 1, first - 1} {
		fsys := base.Clone()
		before := dirState(t, fsys)
		called := false
		l, err := OpenFrom(on(fsys), from, func(Record) error { called = true; return nil })
		var me *MissingError
		if !errors.As(err, &me) || !errors.Is(err, ErrMissing) || l != nil {
			t.Fatalf("OpenFrom(%d) of a log starting at %d = %v, %v, want a *MissingError", from, first, l, err)
		}
		if me.From != max(from, 1) || me.First != first || me.Dir != memDir {
			t.Fatalf("OpenFrom(%d): %+v", from, me)
		}
		if called || !sameState(before, dirState(t, fsys)) {
			t.Fatalf("OpenFrom(%d) called fn (%v) or changed the files", from, called)
		}
	}

	for _, from := range []uint64{first, first + 1, last, last + 1, last + 10} {
		fsys := base.Clone()
		got, fn := collect()
		l, err := OpenFrom(on(fsys), from, fn)
		if err != nil {
			t.Fatalf("OpenFrom(%d): %v", from, err)
		}
		if want := int(max(int64(last)-int64(from)+1, 0)); len(*got) != want {
			t.Fatalf("OpenFrom(%d) handed over %d records, want %d", from, len(*got), want)
		}
		checkRecords(t, *got, es, from)
		if l.FirstSeq() != first || l.LastSeq() != last {
			t.Fatalf("OpenFrom(%d): log %d..%d, want %d..%d", from, l.FirstSeq(), l.LastSeq(), first, last)
		}
		if _, ok := l.TornTail(); !ok {
			t.Fatalf("OpenFrom(%d) did not find the torn tail", from)
		}
		if seq, err := l.Append(testEntry(100)); err != nil || seq != last+1 {
			t.Fatalf("OpenFrom(%d): Append = %d, %v, want %d", from, seq, err, last+1)
		}
		mustClose(t, l)
		if slices.Contains(fsys.List(memDir), SegmentName(last+1)+tmpSuffix) {
			t.Fatalf("OpenFrom(%d) left the temporary file", from)
		}
	}

	// A new log, and one that does not exist yet: created as Open does.
	for _, from := range []uint64{0, 1, 5} {
		fsys := NewMemFS(2)
		called := false
		l, err := OpenFrom(memConfig(fsys), from, func(Record) error { called = true; return nil })
		if err != nil || called {
			t.Fatalf("OpenFrom(%d) of a new log = %v (fn called: %v)", from, err, called)
		}
		if l.FirstSeq() != 1 || l.LastSeq() != 0 || !slices.Equal(fsys.List(memDir), []string{SegmentName(1)}) {
			t.Fatalf("OpenFrom(%d) of a new log: %d..%d, files %v", from, l.FirstSeq(), l.LastSeq(), fsys.List(memDir))
		}
		mustClose(t, l)
	}

	// Read-only: nothing cut, nothing removed, the records before the torn
	// tail handed over.
	fsys := base.Clone()
	before := dirState(t, fsys)
	ro := on(fsys)
	ro.ReadOnly = true
	got, fn := collect()
	l, err := OpenFrom(ro, first+1, fn)
	if err != nil {
		t.Fatalf("read-only OpenFrom: %v", err)
	}
	checkRecords(t, *got, es, first+1)
	if len(*got) != int(last-first) || l.LastSeq() != last {
		t.Fatalf("read-only OpenFrom: %d records, last %d", len(*got), l.LastSeq())
	}
	mustClose(t, l)
	if !sameState(before, dirState(t, fsys)) {
		t.Fatal("read-only OpenFrom changed the files")
	}
}
