package wal

import (
	"fmt"
	"sync"
	"testing"
)

// crashWorkload is a deterministic single-goroutine workload over fsys. It
// stops at the first error. It reports, in order, every entry it tried to
// append (attempts), how many of them were acknowledged durable (a prefix:
// Append returned nil, or Sync/Close after them did), and the smallest upTo
// passed to Compact (0 if none).
type crashWorkload struct {
	attempts []Entry
	acked    int
	compact  uint64
	stats    Stats // of the log, before its Close
}

func (w *crashWorkload) run(cfg Config, n int) {
	l, err := Open(cfg)
	if err != nil {
		return
	}
	defer l.Close()
	for i := range n {
		e := testEntry(i)
		switch i % 7 {
		case 0, 1, 2, 4:
			w.attempts = append(w.attempts, e)
			if _, err := l.Append(e); err != nil {
				return
			}
			w.acked = len(w.attempts)
		case 3:
			// Two records in one call.
			e2 := testEntry(1000 + i)
			w.attempts = append(w.attempts, e, e2)
			if _, err := l.Append(e, e2); err != nil {
				return
			}
			w.acked = len(w.attempts)
		case 5:
			w.attempts = append(w.attempts, e)
			if _, err := l.AppendNoSync(e); err != nil {
				return
			}
		case 6:
			if err := l.Sync(); err != nil {
				return
			}
			w.acked = len(w.attempts)
		}
		if i == n/2 {
			upTo := uint64(len(w.attempts)) - 3
			if w.compact == 0 {
				w.compact = upTo
			}
			if err := l.Compact(upTo); err != nil {
				return
			}
		}
	}
	w.attempts = append(w.attempts, testEntry(n))
	if _, err := l.AppendNoSync(testEntry(n)); err != nil {
		return
	}
	w.stats = l.Stats()
	if err := l.Close(); err != nil {
		return
	}
	w.acked = len(w.attempts)
}

var afterRecovery = Entry{Type: 200, Data: []byte("after recovery")}

// checkRecovered opens the log after a crash and checks it against w: the
// replay is a run of the attempts, in order, that includes every
// acknowledged one and starts no later than the compaction point; then the
// log takes appends after it.
func checkRecovered(t *testing.T, cfg Config, w *crashWorkload, label string) (recs []Record, first uint64) {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("%s: Open after crash: %v", label, err)
	}
	recs = replayAll(t, l)
	first = l.FirstSeq()
	if len(recs) > 0 && recs[0].Seq != first {
		t.Fatalf("%s: replay starts at %d, FirstSeq %d", label, recs[0].Seq, first)
	}
	switch {
	case w.compact == 0 && first != 1:
		t.Fatalf("%s: replay starts at seq %d without compaction", label, first)
	case w.compact != 0 && first > w.compact:
		t.Fatalf("%s: replay starts at seq %d, compaction kept seqs >= %d", label, first, w.compact)
	}
	checkRecords(t, recs, w.attempts, first)
	last := first - 1 + uint64(len(recs))
	if last < uint64(w.acked) {
		t.Fatalf("%s: replay ends at seq %d, but %d records were acknowledged", label, last, w.acked)
	}
	if l.LastSeq() != last {
		t.Fatalf("%s: LastSeq %d, replay ends at %d", label, l.LastSeq(), last)
	}
	if seq, err := l.Append(afterRecovery); err != nil || seq != last+1 {
		t.Fatalf("%s: Append after recovery = %d, %v, want %d", label, seq, err, last+1)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("%s: Close: %v", label, err)
	}
	return recs, first
}

// TestCrashAtEveryCall crashes the workload at each of its I/O calls in
// turn (under each crash mode), recovers, and checks that every
// acknowledged record is replayed and that the replay is a prefix of what
// was appended; then it crashes the recovery itself at a few points and
// checks again.
func TestCrashAtEveryCall(t *testing.T) { crashAtEveryCall(t, 0) }

// TestCrashAtEveryCallPrealloc is the same with preallocation: zeros are
// written ahead of the records in chunks of 120 bytes (inline, so that the
// calls come in a fixed order), overwritten by appends, and cut when a
// segment is sealed.
func TestCrashAtEveryCallPrealloc(t *testing.T) { crashAtEveryCall(t, 120) }

func crashAtEveryCall(t *testing.T, prealloc int64) {
	n := 150
	if testing.Short() {
		n = 40
	}
	cfgFor := func(fsys *MemFS) Config {
		cfg := memConfig(fsys)
		cfg.SegmentSize = 400 // several rollovers
		cfg.BufferSize = 300  // AppendNoSync spills now and then
		cfg.PreallocSize = prealloc
		cfg.inlinePrealloc = true
		return cfg
	}
	clean := NewMemFS(0)
	var w0 crashWorkload
	w0.run(cfgFor(clean), n)
	total := clean.Calls()
	if w0.acked != len(w0.attempts) {
		t.Fatalf("clean run acknowledged %d of %d", w0.acked, len(w0.attempts))
	}
	if st := w0.stats; (st.PreallocSyncs > 0) != (prealloc > 0) || st.Rollovers < 3 {
		t.Fatalf("clean run: prealloc %d, stats %+v", prealloc, st)
	}
	checkRecovered(t, cfgFor(clean), &w0, "clean")
	t.Logf("workload: %d I/O calls, %d records", total, len(w0.attempts))
	modes := []CrashMode{CrashSyncedOnly, CrashTornPrefix, CrashTornZeros, CrashTornGarbage}
	for k := 0; k <= total; k++ {
		for mi, mode := range modes {
			seed := uint64(k*len(modes) + mi)
			fsys := NewMemFS(seed)
			fsys.HaltAfter(k)
			var w crashWorkload
			w.run(cfgFor(fsys), n)
			fsys.Crash(mode)
			label := fmt.Sprintf("crash after call %d/%d, mode %d", k, total, mode)
			// Recover, crash the recovery at some call, recover again.
			twice := fsys.Clone()
			checkRecovered(t, cfgFor(fsys), &w, label)
			if testing.Short() && k%3 != 0 {
				continue
			}
			twice.HaltAfter(int(seed % 9))
			if l, err := Open(cfgFor(twice)); err == nil {
				l.Append(Entry{Type: 1, Data: []byte("x")})
				l.Close()
			}
			twice.Crash(mode)
			label2 := label + fmt.Sprintf(", then after call %d of the recovery", seed%9)
			// The record appended during the first recovery may or may not
			// be there; either way what precedes it must be.
			recs := checkRecoveredLoose(t, cfgFor(twice), &w, label2)
			_ = recs
		}
		// A process crash alone: unsynced data survives in the page cache,
		// recovery replays it, so recovery must make it durable before a
		// power loss can take it.
		fsys := NewMemFS(uint64(k))
		fsys.HaltAfter(k)
		var w crashWorkload
		w.run(cfgFor(fsys), n)
		fsys.Restart()
		label := fmt.Sprintf("process crash after call %d/%d", k, total)
		seen, first := checkRecovered(t, cfgFor(fsys), &w, label)
		fsys.Crash(CrashSyncedOnly)
		// Everything the recovery replayed, and the record it appended, must
		// survive the power loss.
		last := int(first) - 1 + len(seen)
		w2 := crashWorkload{
			attempts: append(w.attempts[:last:last], afterRecovery),
			compact:  w.compact,
		}
		w2.acked = len(w2.attempts)
		checkRecovered(t, cfgFor(fsys), &w2, label+", then power loss")
	}
}

// checkRecoveredLoose is checkRecovered for a log whose recovery appended
// one extra record (type 1, "x") that may or may not have survived.
func checkRecoveredLoose(t *testing.T, cfg Config, w *crashWorkload, label string) []Record {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("%s: Open: %v", label, err)
	}
	recs := replayAll(t, l)
	first := l.FirstSeq()
	if len(recs) > 0 && recs[len(recs)-1].Type == 1 && string(recs[len(recs)-1].Data) == "x" &&
		recs[len(recs)-1].Seq > uint64(len(w.attempts)) {
		recs = recs[:len(recs)-1]
	}
	checkRecords(t, recs, w.attempts, first)
	if last := first - 1 + uint64(len(recs)); last < uint64(w.acked) {
		t.Fatalf("%s: replay ends at %d, %d acknowledged", label, last, w.acked)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestCrashConcurrent halts the FS at random calls while many goroutines
// append, crashes it, and checks that every acknowledged record is replayed
// exactly once, with dense seqs and the data that was appended.
func TestCrashConcurrent(t *testing.T) { crashConcurrent(t, 0) }

// TestCrashConcurrentPrealloc is the same with preallocation in the
// background.
func TestCrashConcurrentPrealloc(t *testing.T) { crashConcurrent(t, 200) }

func crashConcurrent(t *testing.T, prealloc int64) {
	runs := 200
	if testing.Short() {
		runs = 40
	}
	modes := []CrashMode{CrashSyncedOnly, CrashTornPrefix, CrashTornZeros, CrashTornGarbage}
	for run := range runs {
		fsys := NewMemFS(uint64(run))
		cfg := memConfig(fsys)
		cfg.SegmentSize = 1024
		cfg.PreallocSize = prealloc
		l, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		fsys.HaltAfter(run * 7 % 400)
		const G, N = 8, 40
		var mu sync.Mutex
		acked := map[uint64]string{}
		tried := map[string]bool{}
		var wg sync.WaitGroup
		for g := range G {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range N {
					data := fmt.Sprintf("g%d-i%d", g, i)
					mu.Lock()
					tried[data] = true
					mu.Unlock()
					seq, err := l.Append(Entry{Type: 1, Data: []byte(data)})
					if err != nil {
						return
					}
					mu.Lock()
					acked[seq] = data
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		l.Close()
		fsys.Crash(modes[run%len(modes)])
		l = mustOpen(t, cfg)
		recs := replayAll(t, l)
		seen := map[string]bool{}
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("run %d: record %d has seq %d", run, i, r.Seq)
			}
			d := string(r.Data)
			if !tried[d] || seen[d] {
				t.Fatalf("run %d: record %d %q never appended or replayed twice", run, r.Seq, d)
			}
			seen[d] = true
			if a, ok := acked[r.Seq]; ok && a != d {
				t.Fatalf("run %d: seq %d is %q, acknowledged as %q", run, r.Seq, d, a)
			}
		}
		for seq, d := range acked {
			if seq > uint64(len(recs)) {
				t.Fatalf("run %d: acknowledged seq %d (%q) lost; %d replayed", run, seq, d, len(recs))
			}
		}
		mustClose(t, l)
	}
}
