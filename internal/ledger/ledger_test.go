package ledger

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dtx-dev/dtx/wal"
)

func scanAll(t *testing.T, fsys wal.FS, name string, n int64) []string {
	t.Helper()
	var got []string
	if err := Scan(fsys, name, n, func(p []byte) error { got = append(got, string(p)); return nil }); err != nil {
		t.Fatalf("scan up to %d: %v", n, err)
	}
	return got
}

func payloads(from, to int) [][]byte {
	var b [][]byte
	for i := from; i < to; i++ {
		b = append(b, fmt.Appendf(nil, "entry-%d", i))
	}
	return b
}

func want(from, to int) string {
	var s []string
	for _, p := range payloads(from, to) {
		s = append(s, string(p))
	}
	return fmt.Sprint(s)
}

// A ledger appended to, crashed before the snapshot recording the new
// length landed, reopened at the old length holds exactly the old entries,
// whatever the crash left of the unsynced or synced tail; reopened at the
// new length (the snapshot landed) it holds both.
func TestLedgerCutToRecordedLength(t *testing.T) {
	for _, mode := range []wal.CrashMode{wal.CrashSyncedOnly, wal.CrashTornPrefix, wal.CrashTornZeros, wal.CrashTornGarbage} {
		for seed := uint64(1); seed <= 20; seed++ {
			t.Run(fmt.Sprintf("mode%d/seed%d", mode, seed), func(t *testing.T) {
				fsys := wal.NewMemFS(seed)
				if err := fsys.MkdirAll("svc", 0o755); err != nil {
					t.Fatal(err)
				}
				l, err := Open(fsys, "svc/ledger", 0)
				if err != nil {
					t.Fatal(err)
				}
				old, err := l.Append(payloads(0, 5))
				if err != nil {
					t.Fatal(err)
				}
				synced := seed%2 == 0 // the crash falls after the fsync, or in the middle of the write
				if synced {
					if _, err := l.Append(payloads(5, 9)); err != nil {
						t.Fatal(err)
					}
				} else {
					fsys.HaltAfter(0) // the write itself is refused: nothing past old
					if _, err := l.Append(payloads(5, 9)); err == nil {
						t.Fatal("append on a halted FS succeeded")
					}
				}
				fsys.Crash(mode)
				l2, err := Open(fsys, "svc/ledger", old)
				if err != nil {
					t.Fatal(err)
				}
				defer l2.Close()
				if got := fmt.Sprint(scanAll(t, fsys, "svc/ledger", l2.Len())); got != want(0, 5) {
					t.Fatalf("seed %d: after the crash got %s, want %s", seed, got, want(0, 5))
				}
				// The next append goes right after the cut and reads back.
				n, err := l2.Append(payloads(9, 11))
				if err != nil {
					t.Fatal(err)
				}
				fsys.Crash(mode)
				w := append(scanAll(t, fsys, "svc/ledger", old), "entry-9", "entry-10")
				if got := fmt.Sprint(scanAll(t, fsys, "svc/ledger", n)); got != fmt.Sprint(w) {
					t.Fatalf("seed %d: after the second append got %s, want %s", seed, got, fmt.Sprint(w))
				}
			})
		}
	}
}

// A torn tail written without the fsync (a process that died between
// write and fsync, the power lost) is cut away by Open at the recorded
// length.
func TestLedgerTornTail(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		fsys := wal.NewMemFS(seed)
		fsys.MkdirAll("d", 0o755)
		l, err := Open(fsys, "d/l", 0)
		if err != nil {
			t.Fatal(err)
		}
		n, err := l.Append(payloads(0, 3))
		if err != nil {
			t.Fatal(err)
		}
		fsys.FailNth(wal.OpSync, 1, errors.New("injected sync failure"))
		if _, err := l.Append(payloads(3, 40)); err == nil {
			t.Fatalf("seed %d: append with a failing fsync succeeded", seed)
		}
		if l.Len() != n {
			t.Fatalf("seed %d: a failed append moved the length from %d to %d", seed, n, l.Len())
		}
		fsys.Crash(wal.CrashTornGarbage)
		l2, err := Open(fsys, "d/l", n)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if got := fmt.Sprint(scanAll(t, fsys, "d/l", l2.Len())); got != want(0, 3) {
			t.Fatalf("seed %d: got %s, want %s", seed, got, want(0, 3))
		}
	}
}

func TestLedgerErrors(t *testing.T) {
	fsys := wal.NewMemFS(1)
	fsys.MkdirAll("d", 0o755)
	l, err := Open(fsys, "d/l", 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := l.Append(payloads(0, 3))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	// A snapshot recording more than the file holds.
	if _, err := Open(fsys, "d/l", n+1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open past the end: %v, want ErrCorrupt", err)
	}
	// A flipped bit in an entry.
	b, _ := fsys.ReadFile("d/l")
	b[len(b)-2] ^= 1
	fsys.WriteFile("d/l", b)
	err = Scan(fsys, "d/l", n, func([]byte) error { return nil })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan of a damaged entry: %v, want ErrCorrupt", err)
	}
	// A length that cuts an entry in the middle.
	b[len(b)-2] ^= 1
	fsys.WriteFile("d/l", b)
	if err := Scan(fsys, "d/l", n-3, func([]byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan to the middle of an entry: %v, want ErrCorrupt", err)
	}
	// Length 0 is empty even without a file.
	if err := Scan(fsys, "d/missing", 0, func([]byte) error { return errors.New("called") }); err != nil {
		t.Fatal(err)
	}
}

// ScanFrom an offset an earlier scan reported reads exactly the entries
// from there, and refuses an offset outside the ledger.
func TestScanFrom(t *testing.T) {
	fsys := wal.NewMemFS(1)
	fsys.MkdirAll("d", 0o755)
	l, err := Open(fsys, "d/l", 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := l.Append(payloads(0, 10))
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	if err := ScanFrom(fsys, "d/l", HeaderLen, n, func(off int64, p []byte) error {
		offs = append(offs, off)
		if want := EntryEnd(off, p); want > n {
			t.Fatalf("entry at %d ends at %d, past %d", off, want, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(offs) != 10 || offs[0] != HeaderLen {
		t.Fatalf("offsets %v", offs)
	}
	var got []string
	if err := ScanFrom(fsys, "d/l", offs[7], n, func(_ int64, p []byte) error { got = append(got, string(p)); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != want(7, 10) {
		t.Fatalf("from entry 7: %v, want %s", got, want(7, 10))
	}
	if err := ScanFrom(fsys, "d/l", n, n, func(int64, []byte) error { t.Fatal("an entry past the end"); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := ScanFrom(fsys, "d/l", 3, n, func(int64, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan from inside the magic: %v", err)
	}
}

// TestReadEntries: ReadEntries returns what Scan does, up to any recorded
// length, and refuses what Scan refuses: a flipped byte, a file shorter
// than the length, a bad magic, a length inside the header.
func TestReadEntries(t *testing.T) {
	fsys := wal.NewMemFS(1)
	if err := fsys.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Open(fsys, "/d/l", 0)
	if err != nil {
		t.Fatal(err)
	}
	var lens []int64
	for i := range 5 {
		n, err := l.Append(payloads(10*i, 10*i+10))
		if err != nil {
			t.Fatal(err)
		}
		lens = append(lens, n)
	}
	l.Close()
	for _, n := range append([]int64{HeaderLen}, lens...) {
		ps, err := ReadEntries(fsys, "/d/l", n)
		if err != nil {
			t.Fatalf("length %d: %v", n, err)
		}
		var got []string
		for _, p := range ps {
			got = append(got, string(p))
		}
		if fmt.Sprint(got) != fmt.Sprint(scanAll(t, fsys, "/d/l", n)) {
			t.Fatalf("length %d: ReadEntries %v, Scan %v", n, got, scanAll(t, fsys, "/d/l", n))
		}
	}
	last := lens[len(lens)-1]
	b, err := fsys.ReadFile("/d/l")
	if err != nil {
		t.Fatal(err)
	}
	bad := func(name string, data []byte, n int64) {
		t.Helper()
		if err := fsys.WriteFile("/d/x", data); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadEntries(fsys, "/d/x", n); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	flipped := append([]byte(nil), b...)
	flipped[last-3] ^= 1
	bad("a flipped byte", flipped, last)
	bad("shorter than the length", b[:last-5], last)
	magic := append([]byte(nil), b...)
	magic[0] ^= 1
	bad("bad magic", magic, last)
	bad("a length inside the header", b, HeaderLen-1)
	bad("a length inside an entry", b, lens[0]-2)
	if ps, err := ReadEntries(fsys, "/d/none", 0); err != nil || ps != nil {
		t.Fatalf("length 0: %v %v, want nothing", ps, err)
	}
}
