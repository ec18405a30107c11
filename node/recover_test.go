package node

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// restored is a Restorer that keeps the transactions of the records it is
// handed.
type restored struct {
	txs     []string
	started bool
}

func (r *restored) Restore(rec twopc.Record) error {
	r.txs = append(r.txs, rec.Tx)
	return nil
}
func (r *restored) Start() { r.started = true }

// txName is the transaction of the record with seq seq in recoverLog.
func txName(seq uint64) string { return fmt.Sprintf("t%d", seq) }

// recoverLog writes records 1..n (RecPrepared of txName(seq)) to a log of
// small segments on a new MemFS and returns its config and the first seqs
// of its segments.
func recoverLog(t *testing.T, n int) (wal.Config, *wal.MemFS, []uint64) {
	t.Helper()
	fsys := wal.NewMemFS(1)
	cfg := wal.Config{Dir: "/log", FS: fsys, SegmentSize: 300}
	l, err := wal.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= uint64(n); seq++ {
		data := twopc.AppendRecord(nil, &twopc.Record{Type: twopc.RecPrepared, Tx: txName(seq), Op: []byte("op")})
		if _, err := l.Append(wal.Entry{Type: uint8(twopc.RecPrepared), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var firsts []uint64
	for _, name := range fsys.List("/log") {
		if first, err := strconv.ParseUint(strings.TrimSuffix(name, ".wal"), 16, 64); err == nil {
			firsts = append(firsts, first)
		}
	}
	if len(firsts) < 4 {
		t.Fatalf("%d segments, want 4 or more", len(firsts))
	}
	return cfg, fsys, firsts
}

// TestRecoverAfter: RecoverAfter restores exactly the records after the
// snapshot's and starts the machine; it does not read the segments the
// snapshot covers (damage there does not stop it, where the replay with
// mutants planted, which opens the whole log, fails); a log that starts
// after the snapshot's record + 1, or ends before the snapshot's record,
// is an error before any record is restored; a bad record or damage after
// the snapshot fails it.
func TestRecoverAfter(t *testing.T) {
	const n = 60
	base, fsys0, firsts := recoverLog(t, n)
	on := func(fs *wal.MemFS) wal.Config { c := base; c.FS = fs; return c }
	wantTxs := func(after uint64) []string {
		var txs []string
		for seq := after + 1; seq <= n; seq++ {
			txs = append(txs, txName(seq))
		}
		return txs
	}

	// Damage in the segments before the one holding after+1.
	after := firsts[2] + 1
	fsys := fsys0.Clone()
	seg1 := "/log/" + wal.SegmentName(firsts[1])
	b, _ := fsys.ReadFile(seg1)
	b[wal.SegmentHeaderSize+wal.RecordHeaderSize] ^= 0xff
	if err := fsys.WriteFile(seg1, b); err != nil {
		t.Fatal(err)
	}
	for _, a := range []uint64{0, firsts[1] - 1, firsts[2] - 1, after, n - 1, n} {
		m := &restored{}
		log, err := RecoverAfter(on(fsys.Clone()), m, Hooks{}, a)
		if a < firsts[2]-1 {
			if !errors.Is(err, wal.ErrCorrupt) || m.started {
				t.Fatalf("after %d, damage in segment %d: %v, started %v", a, firsts[1], err, m.started)
			}
			continue
		}
		if err != nil {
			t.Fatalf("after %d: %v", a, err)
		}
		if !m.started || !slices.Equal(m.txs, wantTxs(a)) {
			t.Fatalf("after %d: restored %v (started %v), want %v", a, m.txs, m.started, wantTxs(a))
		}
		if log.FirstSeq() != 1 || log.LastSeq() != n {
			t.Fatalf("after %d: log %d..%d", a, log.FirstSeq(), log.LastSeq())
		}
		log.Close()
	}
	// The mutant path opens, then replays, the whole log.
	if _, err := RecoverAfter(on(fsys.Clone()), &restored{}, Hooks{Mutants: 1}, after); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("with mutants: %v, want the damage Open finds", err)
	}

	// A compacted log.
	fsys = fsys0.Clone()
	l, err := wal.Open(on(fsys))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(firsts[2]); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for _, c := range []struct {
		after uint64
		want  string
	}{
		{0, "the log starts at record " + fmt.Sprint(firsts[2]) + " and there is no valid snapshot"},
		{firsts[2] - 2, "after the snapshot's record " + fmt.Sprint(firsts[2]-2) + ": records in between are missing"},
		{n + 1, "the log ends at record 60, before the snapshot's record 61"},
	} {
		for _, h := range []Hooks{{}, {Mutants: 1}} {
			m := &restored{}
			_, err := RecoverAfter(on(fsys.Clone()), m, h, c.after)
			if err == nil || !strings.Contains(err.Error(), c.want) || len(m.txs) > 0 || m.started {
				t.Fatalf("after %d, log %d..%d, mutants %v: %v (restored %d, started %v), want %q",
					c.after, firsts[2], n, h.Mutants, err, len(m.txs), m.started, c.want)
			}
		}
	}
	m := &restored{}
	log, err := RecoverAfter(on(fsys.Clone()), m, Hooks{}, firsts[2]-1)
	if err != nil || !slices.Equal(m.txs, wantTxs(firsts[2]-1)) {
		t.Fatalf("after %d, log starting at %d: %v, restored %v", firsts[2]-1, firsts[2], err, m.txs)
	}
	log.Close()

	// A record that does not decode, after the snapshot: a replay error.
	fsys = fsys0.Clone()
	l, err = wal.Open(on(fsys))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(wal.Entry{Type: uint8(twopc.RecPrepared), Data: []byte{99}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := RecoverAfter(on(fsys), &restored{}, Hooks{}, after); err == nil ||
		!strings.HasPrefix(err.Error(), "replay: log record 61: ") || !errors.Is(err, twopc.ErrDecode) {
		t.Fatalf("a bad record 61: %v", err)
	}
}
