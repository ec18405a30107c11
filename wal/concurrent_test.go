package wal

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// concurrentAppends runs G goroutines of N calls each (1 to 3 entries a
// call, every fourth call AppendNoSync) and checks that every acknowledged
// record replays exactly once with its seq, and that seqs are dense.
func concurrentAppends(t *testing.T, cfg Config, G, N int) {
	l := mustOpen(t, cfg)
	type ack struct {
		last uint64
		n    int
		g, i int
	}
	acks := make([][]ack, G)
	var wg sync.WaitGroup
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var es [3]Entry
			for i := range N {
				k := 1 + (g+i)%3
				for j := range k {
					data := binary.LittleEndian.AppendUint32(nil, uint32(g))
					data = binary.LittleEndian.AppendUint32(data, uint32(i))
					data = binary.LittleEndian.AppendUint32(data, uint32(j))
					es[j] = Entry{Type: uint8(1 + j), Data: data}
				}
				var last uint64
				var err error
				if i%4 == 3 {
					last, err = l.AppendNoSync(es[:k]...)
				} else {
					last, err = l.Append(es[:k]...)
				}
				if err != nil {
					t.Errorf("goroutine %d call %d: %v", g, i, err)
					return
				}
				acks[g] = append(acks[g], ack{last: last, n: k, g: g, i: i})
				if i%10 == 9 {
					if err := l.Sync(); err != nil {
						t.Errorf("Sync: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	mustClose(t, l)
	if t.Failed() {
		return
	}
	// Seq ranges of the calls are disjoint and cover 1..total.
	var all []ack
	for _, a := range acks {
		for i := 1; i < len(a); i++ {
			if a[i].last <= a[i-1].last {
				t.Fatalf("goroutine %d: seqs went back: %d after %d", a[i].g, a[i].last, a[i-1].last)
			}
		}
		all = append(all, a...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].last < all[j].last })
	want := uint64(0)
	for _, a := range all {
		want += uint64(a.n)
		if a.last != want {
			t.Fatalf("seq ranges not dense: call ends at %d, want %d", a.last, want)
		}
	}
	l = mustOpen(t, cfg)
	recs := replayAll(t, l)
	if uint64(len(recs)) != want {
		t.Fatalf("replayed %d records, appended %d", len(recs), want)
	}
	idx := 0
	for _, a := range all {
		for j := range a.n {
			r := recs[idx]
			seq := a.last - uint64(a.n) + 1 + uint64(j)
			if r.Seq != seq || r.Type != uint8(1+j) ||
				binary.LittleEndian.Uint32(r.Data) != uint32(a.g) ||
				binary.LittleEndian.Uint32(r.Data[4:]) != uint32(a.i) ||
				binary.LittleEndian.Uint32(r.Data[8:]) != uint32(j) {
				t.Fatalf("record %d: %+v, want seq %d of goroutine %d call %d entry %d", idx, r, seq, a.g, a.i, j)
			}
			idx++
		}
	}
	mustClose(t, l)
}

func TestConcurrentAppendMem(t *testing.T) {
	cfg := memConfig(NewMemFS(30))
	cfg.SegmentSize = 4096
	concurrentAppends(t, cfg, 32, 200)
}

func TestConcurrentAppendOS(t *testing.T) {
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "wal"))
	cfg.SegmentSize = 64 << 10
	n := 150
	if testing.Short() {
		n = 30
	}
	concurrentAppends(t, cfg, 32, n)
}

// slowSyncFS is a MemFS whose file syncs take a while, like a disk's.
type slowSyncFS struct{ *MemFS }

type slowSyncFile struct{ File }

func (s slowSyncFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := s.MemFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f}, nil
}

func (f slowSyncFile) Sync() error {
	time.Sleep(500 * time.Microsecond)
	return f.File.Sync()
}

// TestGroupCommitBatches: concurrent appenders share syncs.
func TestGroupCommitBatches(t *testing.T) {
	l := mustOpen(t, memConfig(slowSyncFS{NewMemFS(32)}))
	const G, N = 32, 20
	var wg sync.WaitGroup
	for range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range N {
				if _, err := l.Append(Entry{Type: 1, Data: []byte("0123456789abcdef")}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	mustClose(t, l)
	if st.Appends != G*N || st.Entries != G*N || st.SyncedEntries != G*N {
		t.Fatalf("stats %+v", st)
	}
	if st.GroupSyncs >= G*N/4 || st.MaxEntriesPerSync < 8 || st.AvgEntriesPerSync() < 4 {
		t.Fatalf("no group commit: %+v (avg %.1f)", st, st.AvgEntriesPerSync())
	}
	t.Logf("%d appends in %d syncs, max %d per sync, avg %.1f", st.Appends, st.GroupSyncs, st.MaxEntriesPerSync, st.AvgEntriesPerSync())
}

// TestCrashOS: Log.Crash on the real disk keeps exactly the durable records
// and a new Open works.
func TestCrashOS(t *testing.T) {
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "wal"))
	l := mustOpen(t, cfg)
	var want []Entry
	for i := range 5 {
		want = append(want, testEntry(i))
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 5; i < 8; i++ {
		if _, err := l.AppendNoSync(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Crash(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(testEntry(9)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Crash = %v", err)
	}
	l = mustOpen(t, cfg)
	recs := replayAll(t, l)
	if len(recs) != 5 {
		t.Fatalf("after Crash: %d records, want 5", len(recs))
	}
	checkRecords(t, recs, want, 1)
	if seq, err := l.Append(testEntry(5)); err != nil || seq != 6 {
		t.Fatalf("Append after Crash and Open = %d, %v", seq, err)
	}
	mustClose(t, l)
}

// TestCrashDuringAppends: Crash while appenders run; every Append that
// returned nil is replayed, nothing else beyond them.
func TestCrashDuringAppends(t *testing.T) {
	for _, onOS := range []bool{false, true} {
		var cfg Config
		var fsys *MemFS
		if onOS {
			cfg = DefaultConfig(filepath.Join(t.TempDir(), "wal"))
		} else {
			fsys = NewMemFS(31)
			cfg = memConfig(fsys)
		}
		cfg.SegmentSize = 8 << 10
		l := mustOpen(t, cfg)
		var mu sync.Mutex
		acked := map[uint64]bool{}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					seq, err := l.Append(testEntry(g*1000 + i))
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Errorf("Append = %v", err)
						}
						return
					}
					mu.Lock()
					acked[seq] = true
					mu.Unlock()
				}
			}()
		}
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= 200 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := l.Crash(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if fsys != nil {
			fsys.Crash(CrashSyncedOnly)
		}
		l = mustOpen(t, cfg)
		recs := replayAll(t, l)
		got := map[uint64]bool{}
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("seq %d at %d", r.Seq, i)
			}
			got[r.Seq] = true
		}
		for seq := range acked {
			if !got[seq] {
				t.Fatalf("os=%v: acked seq %d lost (replayed %d)", onOS, seq, len(recs))
			}
		}
		mustClose(t, l)
	}
}
