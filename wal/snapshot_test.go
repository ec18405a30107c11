package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var errStop = errors.New("stopped (simulated crash)")

// TestSnapshotCrashAtEveryStep: a crash (every crash mode of MemFS, many
// seeds) after each step of writing snapshot 2 over snapshot 1 leaves
// LoadSnapshot with snapshot 2 whole or snapshot 1 whole, never anything
// else: a torn write, a lost rename (the directory not synced) and a
// leftover temporary file are all told apart from a good snapshot.
func TestSnapshotCrashAtEveryStep(t *testing.T) {
	one := bytes.Repeat([]byte("one "), 300)
	two := bytes.Repeat([]byte("two!"), 500)
	for seed := uint64(1); seed <= 40; seed++ {
		for _, step := range []SnapshotStep{SnapWrite, SnapSynced, SnapRenamed, 0} {
			for _, mode := range []CrashMode{CrashSyncedOnly, CrashTornPrefix, CrashTornZeros, CrashTornGarbage} {
				name := fmt.Sprintf("seed %d step %d mode %d", seed, step, mode)
				fsys := NewMemFS(seed)
				if err := fsys.MkdirAll("/d", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := WriteSnapshot(fsys, "/d", 10, one, nil); err != nil {
					t.Fatal(err)
				}
				err := WriteSnapshot(fsys, "/d", 20, two, func(s SnapshotStep) error {
					if s == step {
						return errStop
					}
					return nil
				})
				if step != 0 && !errors.Is(err, errStop) || step == 0 && err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				fsys.Crash(mode)
				snap, ok, _, err := LoadSnapshot(fsys, "/d")
				if err != nil || !ok {
					t.Fatalf("%s: no snapshot: %v", name, err)
				}
				switch {
				case snap.Seq == 20 && bytes.Equal(snap.Data, two):
				case snap.Seq == 10 && bytes.Equal(snap.Data, one):
					if step == 0 {
						t.Fatalf("%s: a completed snapshot was lost", name)
					}
				default:
					t.Fatalf("%s: loaded seq %d with %d bytes", name, snap.Seq, len(snap.Data))
				}
			}
		}
	}
}

// TestSnapshotDamaged: a torn (short) or corrupted (a flipped bit
// anywhere) newest snapshot is skipped, with a reason, for the one before,
// and CheckSnapshot (the check after writing, a piece at a time) refuses
// it too. The newer one is written in parts (WriteSnapshotParts).
func TestSnapshotDamaged(t *testing.T) {
	good := []byte("the older snapshot")
	newer := bytes.Repeat([]byte{7}, 100)
	size := SnapshotHeaderSize + len(newer)
	for _, damage := range []string{"flip", "short", "header-only", "empty"} {
		for off := 0; off < size; off += 7 {
			if damage != "flip" && off > 0 {
				break
			}
			fsys := NewMemFS(1)
			fsys.MkdirAll("/d", 0o755)
			if err := WriteSnapshot(fsys, "/d", 5, good, nil); err != nil {
				t.Fatal(err)
			}
			if err := WriteSnapshotParts(fsys, "/d", 9, [][]byte{newer[:10], nil, newer[10:]}, nil); err != nil {
				t.Fatal(err)
			}
			if err := CheckSnapshot(fsys, "/d", 9); err != nil {
				t.Fatalf("the whole snapshot: %v", err)
			}
			if s, err := ReadSnapshot(fsys, "/d", 9); err != nil || !bytes.Equal(s.Data, newer) {
				t.Fatalf("the whole snapshot reads back %q, %v", s.Data, err)
			}
			path := filepath.Join("/d", SnapshotName(9))
			b, _ := fsys.ReadFile(path)
			switch damage {
			case "flip":
				b[off] ^= 0x10
			case "short":
				b = b[:len(b)-1]
			case "header-only":
				b = b[:SnapshotHeaderSize]
			case "empty":
				b = nil
			}
			if err := fsys.WriteFile(path, b); err != nil {
				t.Fatal(err)
			}
			snap, ok, skipped, err := LoadSnapshot(fsys, "/d")
			if err != nil || !ok || snap.Seq != 5 || !bytes.Equal(snap.Data, good) {
				t.Fatalf("%s at %d: got seq %d ok %v err %v", damage, off, snap.Seq, ok, err)
			}
			if len(skipped) != 1 || !errors.Is(skipped[0], ErrBadSnapshot) {
				t.Fatalf("%s at %d: skipped %v", damage, off, skipped)
			}
			if err := CheckSnapshot(fsys, "/d", 9); !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("%s at %d: CheckSnapshot: %v", damage, off, err)
			}
		}
	}
}

// TestSnapshotPrune keeps the newest snapshots and removes temporary
// leftovers; the log ignores snapshot files.
func TestSnapshotPrune(t *testing.T) {
	fsys := NewMemFS(1)
	cfg := memConfig(fsys)
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1, 3)
	for _, seq := range []uint64{1, 2, 3} {
		if err := WriteSnapshot(fsys, cfg.Dir, seq, []byte{byte(seq)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	f, _ := fsys.OpenFile(filepath.Join(cfg.Dir, SnapshotName(4)+tmpSuffix), os.O_RDWR|os.O_CREATE, 0o644)
	f.Close()
	if err := PruneSnapshots(fsys, cfg.Dir, 3, 2); err != nil { // keep 2 and 3
		t.Fatal(err)
	}
	var snaps []string
	for _, name := range fsys.List(cfg.Dir) {
		if _, ok := parseSnapshotName(name); ok {
			snaps = append(snaps, name)
		} else if filepath.Ext(name) == ".tmp" {
			t.Fatalf("leftover %s", name)
		}
	}
	if fmt.Sprint(snaps) != fmt.Sprint([]string{SnapshotName(2), SnapshotName(3)}) {
		t.Fatalf("kept %v", snaps)
	}
	l.Close()
	if l, err = Open(cfg); err != nil {
		t.Fatalf("the log must ignore snapshot files: %v", err)
	}
	l.Close()
}

// TestSnapshotEmptyData: a snapshot of no data (a file of just its header)
// is written, read back and checked, on the memory and the real disk.
func TestSnapshotEmptyData(t *testing.T) {
	for name, fsys := range map[string]FS{"memfs": NewMemFS(1), "osfs": OSFS()} {
		dir := "/d"
		if name == "osfs" {
			dir = t.TempDir()
		}
		if err := fsys.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := WriteSnapshotParts(fsys, dir, 3, nil, nil); err != nil {
			t.Fatalf("%s: write: %v", name, err)
		}
		if err := CheckSnapshot(fsys, dir, 3); err != nil {
			t.Fatalf("%s: check: %v", name, err)
		}
		if s, err := ReadSnapshot(fsys, dir, 3); err != nil || len(s.Data) != 0 {
			t.Fatalf("%s: read: %q, %v", name, s.Data, err)
		}
	}
}
