package wal

import (
	"errors"
	"sync"
	"testing"
)

var errInjected = errors.New("injected I/O error")

// TestSyncFailureIsFinal: a failed fdatasync fails that Append with
// ErrFailed and the cause; no later append succeeds; the log never syncs
// again; and what was not synced is not durable.
func TestSyncFailureIsFinal(t *testing.T) {
	for _, op := range []Op{OpSync, OpWrite} {
		t.Run(op.String(), func(t *testing.T) {
			fsys := NewMemFS(10)
			l := mustOpen(t, memConfig(fsys))
			var want []Entry
			for i := range 3 {
				want = append(want, testEntry(i))
				if _, err := l.Append(testEntry(i)); err != nil {
					t.Fatal(err)
				}
			}
			fsys.FailNth(op, 1, errInjected)
			_, err := l.Append(testEntry(3))
			if !errors.Is(err, ErrFailed) || !errors.Is(err, errInjected) {
				t.Fatalf("Append with a failing %v = %v, want ErrFailed wrapping the cause", op, err)
			}
			syncs, writes := fsys.OpCalls(OpSync), fsys.OpCalls(OpWrite)
			for i := range 3 {
				if _, err := l.Append(testEntry(4 + i)); !errors.Is(err, ErrFailed) || !errors.Is(err, errInjected) {
					t.Fatalf("Append after the failure = %v", err)
				}
			}
			if _, err := l.AppendNoSync(testEntry(9)); !errors.Is(err, ErrFailed) {
				t.Fatalf("AppendNoSync after the failure = %v", err)
			}
			if err := l.Sync(); !errors.Is(err, ErrFailed) {
				t.Fatalf("Sync after the failure = %v", err)
			}
			if err := l.Compact(2); !errors.Is(err, ErrFailed) {
				t.Fatalf("Compact after the failure = %v", err)
			}
			if err := l.Close(); !errors.Is(err, ErrFailed) {
				t.Fatalf("Close after the failure = %v", err)
			}
			if fsys.OpCalls(OpSync) != syncs || fsys.OpCalls(OpWrite) != writes {
				t.Fatal("the failed log wrote or synced again")
			}
			// Only synced data survives; the failed record was never durable.
			fsys.Crash(CrashSyncedOnly)
			recs := replayAll(t, mustOpen(t, memConfig(fsys)))
			if len(recs) != 3 {
				t.Fatalf("replayed %d records after the failure, want 3", len(recs))
			}
			checkRecords(t, recs, want, 1)
		})
	}
}

// TestSyncFailureConcurrent: with many appenders in flight, the round whose
// sync fails fails all its callers and every later one; every Append that
// returned nil is durable.
func TestSyncFailureConcurrent(t *testing.T) {
	for _, failAt := range []int{1, 3, 10} {
		fsys := NewMemFS(uint64(failAt))
		l := mustOpen(t, memConfig(slowSyncFS{fsys})) // slow syncs: rounds with many callers
		fsys.FailNth(OpSync, failAt, errInjected)
		const G, N = 16, 30
		var (
			mu    sync.Mutex
			acked = map[uint64][]byte{}
			wg    sync.WaitGroup
		)
		for g := range G {
			wg.Add(1)
			go func() {
				defer wg.Done()
				failed := false
				for i := range N {
					e := testEntry(g*N + i)
					seq, err := l.Append(e)
					if err != nil {
						if !errors.Is(err, ErrFailed) || !errors.Is(err, errInjected) {
							t.Errorf("Append = %v", err)
						}
						failed = true
						continue
					}
					if failed {
						t.Errorf("Append succeeded after a failure")
					}
					mu.Lock()
					acked[seq] = e.Data
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		l.Close()
		fsys.Crash(CrashSyncedOnly)
		l = mustOpen(t, memConfig(fsys))
		recs := replayAll(t, l)
		if len(acked) == G*N {
			t.Fatalf("failAt %d: no Append failed", failAt)
		}
		got := map[uint64]bool{}
		for _, r := range recs {
			got[r.Seq] = true
			if d, ok := acked[r.Seq]; ok && string(d) != string(r.Data) {
				t.Fatalf("seq %d: data %q, acked %q", r.Seq, r.Data, d)
			}
		}
		for seq := range acked {
			if !got[seq] {
				t.Fatalf("failAt %d: acked seq %d lost", failAt, seq)
			}
		}
		mustClose(t, l)
	}
}

// TestCreateSegmentFailure: a failure while rolling over is final too.
func TestRolloverFailure(t *testing.T) {
	for _, op := range []Op{OpOpen, OpWrite, OpSync, OpRename, OpSyncDir, OpClose} {
		fsys := NewMemFS(11)
		cfg := memConfig(fsys)
		cfg.SegmentSize = 200
		l := mustOpen(t, cfg)
		var acked []Entry
		fsys.FailNth(op, 2, errInjected)
		var err error
		for i := 0; err == nil && i < 20; i++ {
			if _, err = l.Append(testEntry(i)); err == nil {
				acked = append(acked, testEntry(i))
			}
		}
		if !errors.Is(err, ErrFailed) || !errors.Is(err, errInjected) {
			t.Fatalf("%v: Append = %v", op, err)
		}
		if _, err := l.Append(testEntry(0)); !errors.Is(err, ErrFailed) {
			t.Fatalf("%v: Append after failure = %v", op, err)
		}
		l.Close()
		fsys.Crash(CrashSyncedOnly)
		l = mustOpen(t, cfg)
		recs := replayAll(t, l)
		if len(recs) < len(acked) {
			t.Fatalf("%v: %d records, %d acked", op, len(recs), len(acked))
		}
		checkRecords(t, recs, append(acked, testEntry(len(acked))), 1)
		mustClose(t, l)
	}
}

func TestOpenFailures(t *testing.T) {
	base := NewMemFS(12)
	l := mustOpen(t, memConfig(base))
	for i := range 5 {
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	for op := OpOpen; op < numOps; op++ {
		fsys := base.Clone()
		fsys.FailNth(op, 1, errInjected)
		l, err := Open(memConfig(fsys))
		if err == nil {
			if fsys.OpCalls(op) > base.OpCalls(op) && op != OpClose {
				t.Fatalf("%v failed during Open, Open succeeded", op)
			}
			l.Close()
			continue
		}
		if !errors.Is(err, errInjected) {
			t.Fatalf("%v: Open = %v", op, err)
		}
	}
}
