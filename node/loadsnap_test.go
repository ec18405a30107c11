package node

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path"
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
	})
}
