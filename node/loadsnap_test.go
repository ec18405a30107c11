package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// failOpenFS fails every open of one file with an error that is not
// damage (a failing disk).
type failOpenFS struct {
	wal.FS
	name string
}

var errDisk = errors.New("disk on fire")

func (f failOpenFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	if path.Base(name) == f.name {
		return nil, errDisk
	}
	return f.FS.OpenFile(name, flag, perm)
}

// TestLoadSnapshotDamageOrFailure: a restart falls back past a snapshot
// whose table file is damaged (to the older snapshot, whose part of the
// file is whole), but a table file it cannot read is an error: the start
// fails rather than load an older state for a disk that may come back.
func TestLoadSnapshotDamageOrFailure(t *testing.T) {
	onBothFS(t, func(t *testing.T, f tablesFS) {
		tb := NewTables(f.fsys, f.dir)
		refsOf := func(b []byte) ([]twopc.TableRef, error) {
			var refs []twopc.TableRef
			err := json.Unmarshal(b, &refs)
			return refs, err
		}
		chunk := make([]byte, 100, 1000)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		var refs []twopc.TableRef
		for _, seq := range []uint64{10, 20} {
			tb.Begin(seq)
			ref, err := tb.Table(1, [][]byte{chunk}, 1)
			if err != nil {
				t.Fatal(err)
			}
			tb.End()
			data, _ := json.Marshal([]twopc.TableRef{ref})
			if err := wal.WriteSnapshot(f.fsys, f.dir, seq, data, nil); err != nil {
				t.Fatal(err)
			}
			refs = append(refs, ref)
			chunk = chunk[:len(chunk)+50] // grown in place: the next one appends
		}
		tb.Close()
		if refs[0].File != refs[1].File || refs[1].Len <= refs[0].Len {
			t.Fatalf("the second snapshot did not extend the first one's file: %+v", refs)
		}
		snap, _, found, skipped, err := LoadSnapshot(f.fsys, f.dir, refsOf)
		if err != nil || !found || snap.Seq != 20 || len(skipped) != 0 {
			t.Fatalf("whole: snapshot %d found %v, skipped %v, %v; want 20", snap.Seq, found, skipped, err)
		}

		failing := failOpenFS{FS: f.fsys, name: refs[0].File}
		snap, _, found, _, err = LoadSnapshot(failing, f.dir, refsOf)
		if !errors.Is(err, errDisk) || found {
			t.Fatalf("table file unreadable: snapshot %d found %v, %v; want the disk's error and no snapshot", snap.Seq, found, err)
		}

		f.flip(t, refs[0].File, refs[0].Len+(refs[1].Len-refs[0].Len)/2) // what only the newer reads
		snap, _, found, skipped, err = LoadSnapshot(f.fsys, f.dir, refsOf)
		if err != nil || !found || snap.Seq != 10 || len(skipped) != 1 || !strings.Contains(skipped[0].Error(), refs[0].File) {
			t.Fatalf("damaged past the older one's part: snapshot %d found %v, skipped %v, %v; want 10 and the newer skipped", snap.Seq, found, skipped, err)
		}
		// The newer one is set aside, so that the next snapshot keeps
		// the one that loaded as its fallback, not the damaged one.
		if seqs := wal.SnapshotSeqs(f.fsys, f.dir); !slices.Equal(seqs, []uint64{10}) {
			t.Fatalf("snapshots after the fallback: %v, want only 10", seqs)
		}
		names, err := f.fsys.ReadDir(f.dir)
		if err != nil || !slices.Contains(names, wal.SnapshotName(20)+DamagedSuffix) {
			t.Fatalf("the damaged snapshot is not kept aside as %s: %v, %v", wal.SnapshotName(20)+DamagedSuffix, names, err)
		}
		if older, ok := wal.OlderSnapshot(f.fsys, f.dir, 30); !ok || older != 10 {
			t.Fatalf("the fallback of a snapshot 30 would be %d (%v), want 10", older, ok)
		}
	})
}

// TestTablesSnapshotSetsAsideDamaged: when a snapshot finds the bytes the
// one before it appended to a table file damaged (checkTail), it sets
// that one aside before it writes its own, so that it keeps the snapshot
// before the damaged one as its fallback and the log from there: damage
// to what it appends in turn then falls back to that one, where the two
// kept snapshots would otherwise both be damaged and no start possible.
//
// The same when the new snapshot no longer uses the damaged file (its
// table is gone: a generation dropped): the bytes the last snapshot
// appended are read back whatever uses them.
func TestTablesSnapshotSetsAsideDamaged(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("table-moved=%v", moved), func(t *testing.T) { setsAsideDamaged(t, moved) })
	}
}

func setsAsideDamaged(t *testing.T, moved bool) {
	onBothFS(t, func(t *testing.T, f tablesFS) {
		cfg := wal.DefaultConfig(f.dir)
		cfg.FS, cfg.SegmentSize, cfg.PreallocSize = f.fsys, 4096, 0
		log, err := wal.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		refsOf := func(b []byte) ([]twopc.TableRef, error) {
			var refs []twopc.TableRef
			err := json.Unmarshal(b, &refs)
			return refs, err
		}
		tb := NewTables(f.fsys, f.dir)
		defer tb.Close()
		chunk := make([]byte, 100, 1000)
		var seqs []uint64
		var results []TableSnapshot
		snapshot := func() {
			t.Helper()
			for i := range 40 {
				if _, err := log.Append(wal.Entry{Type: 1, Data: []byte(fmt.Sprintf("record %d of snapshot %d", i, len(seqs)))}); err != nil {
					t.Fatal(err)
				}
			}
			seq := log.LastSeq()
			id := uint64(1)
			if moved && len(seqs) == 2 {
				id = 2 // the third snapshot's table is another one, in a file of its own
			}
			res, err := tb.Snapshot(log, seq, func(tb *Tables) ([][]byte, error) {
				ref, err := tb.Table(id, [][]byte{chunk}, 1)
				if err != nil {
					return nil, err
				}
				data, err := json.Marshal([]twopc.TableRef{ref})
				return [][]byte{data}, err
			}, SnapshotHooks{}, refsOf)
			if err != nil {
				t.Fatal(err)
			}
			seqs, results = append(seqs, seq), append(results, res)
			chunk = chunk[:len(chunk)+50] // grown in place: the next one appends
		}
		damage := func(res TableSnapshot) {
			t.Helper()
			if len(res.Appends) != 1 {
				t.Fatalf("appends %+v, want one", res.Appends)
			}
			a := res.Appends[0]
			f.flip(t, a.File, (a.From+a.To)/2)
		}
		snapshot()
		snapshot()
		damage(results[1])
		snapshot()
		if want := []string{wal.SnapshotName(seqs[1])}; !slices.Equal(results[2].SetAside, want) {
			t.Fatalf("set aside %v, want %v", results[2].SetAside, want)
		}
		if got := wal.SnapshotSeqs(f.fsys, f.dir); !slices.Equal(got, []uint64{seqs[0], seqs[2]}) || results[2].KeptFrom != seqs[0]+1 {
			t.Fatalf("kept snapshots %v, log from %d; want %v and %d", got, results[2].KeptFrom, []uint64{seqs[0], seqs[2]}, seqs[0]+1)
		}
		damage(results[2])
		snap, _, found, skipped, err := LoadSnapshot(f.fsys, f.dir, refsOf)
		if err != nil || !found || snap.Seq != seqs[0] || len(skipped) != 1 {
			t.Fatalf("a restart after both damages loads snapshot %d (found %v, skipped %v, %v); want %d", snap.Seq, found, skipped, err, seqs[0])
		}
		if first := log.FirstSeq(); first > seqs[0]+1 {
			t.Fatalf("the log starts at %d, past the fallback's %d", first, seqs[0]+1)
		}
	})
}
