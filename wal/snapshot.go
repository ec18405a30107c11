package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Snapshots. A component that snapshots its state writes it next to its
// log, as a file named after the seq of the last record it covers:
//
//	snap-0000000000a391f2.snap
//
// written crash-safely: "<name>.tmp" is written, synced, renamed to
// "<name>" and the directory synced. A snapshot file is a 32-byte header
// and the data:
//
//	+--------+---------+----------+-------+--------+--------+
//	| magic  | version | reserved |  seq  | length |  CRC   |
//	|   8    |    2    |    2     |   8   |   8    |   4    |
//	+--------+---------+----------+-------+--------+--------+
//	magic = "DTX-SNAP", version = 1, CRC-32C over bytes 8..28 and the
//	data; seq must match the file name; length is the data's.
//
// LoadSnapshot takes the newest snapshot that is whole and checks out; a
// torn or damaged one (a crash during its write, a flipped bit) is
// reported and the one before it is used. The Log ignores these files.

const (
	snapMagic   = "DTX-SNAP"
	snapVersion = 1
	// SnapshotHeaderSize is the size of a snapshot file's header.
	SnapshotHeaderSize = 32
	snapPrefix         = "snap-"
	snapSuffix         = ".snap"
)

// SnapshotName returns the file name of the snapshot covering seq.
func SnapshotName(seq uint64) string { return fmt.Sprintf("%s%016x%s", snapPrefix, seq, snapSuffix) }

func parseSnapshotName(name string) (uint64, bool) {
	hex, ok := strings.CutPrefix(name, snapPrefix)
	if !ok {
		return 0, false
	}
	hex, ok = strings.CutSuffix(hex, snapSuffix)
	if !ok {
		return 0, false
	}
	seq, ok := parseSegmentName(hex + ".wal")
	return seq, ok
}

// SnapshotStep names the steps of WriteSnapshot, for crash tests.
type SnapshotStep uint8

const (
	SnapWrite   SnapshotStep = 1 + iota // the temporary file is written (not synced)
	SnapSynced                          // the temporary file is synced
	SnapRenamed                         // renamed, the directory not yet synced
)

// WriteSnapshot writes data as the snapshot covering seq in dir: temporary
// file, write, sync, rename, sync dir. after, if not nil, is called after
// each step and may stop the write there (it returns an error, which
// WriteSnapshot returns) to simulate a crash. On any error the temporary
// file is removed if it can be.
func WriteSnapshot(fsys FS, dir string, seq uint64, data []byte, after func(SnapshotStep) error) error {
	return WriteSnapshotParts(fsys, dir, seq, [][]byte{data}, after)
}

// WriteSnapshotParts is WriteSnapshot of the data made of parts, one after
// the other, written as they are (a snapshot of tens of megabytes is never
// copied into one buffer).
func WriteSnapshotParts(fsys FS, dir string, seq uint64, parts [][]byte, after func(SnapshotStep) error) error {
	path := filepath.Join(dir, SnapshotName(seq))
	tmp := path + tmpSuffix
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("wal: snapshot: %w", err)
	}
	closed := false
	fail := func(op string, err error) error {
		if !closed {
			f.Close()
		}
		if rerr := fsys.Remove(tmp); rerr == nil {
			_ = fsys.SyncDir(dir)
		}
		return fmt.Errorf("wal: snapshot %s: %s: %w", path, op, err)
	}
	step := func(s SnapshotStep) error {
		if after == nil {
			return nil
		}
		return after(s)
	}
	var n int
	for _, p := range parts {
		n += len(p)
	}
	h := make([]byte, SnapshotHeaderSize)
	copy(h, snapMagic)
	binary.LittleEndian.PutUint16(h[8:], snapVersion)
	binary.LittleEndian.PutUint64(h[12:], seq)
	binary.LittleEndian.PutUint64(h[20:], uint64(n))
	crc := crc32.Checksum(h[8:28], castagnoli)
	for _, p := range parts {
		crc = crc32.Update(crc, castagnoli, p)
	}
	binary.LittleEndian.PutUint32(h[28:], crc)
	off := int64(0)
	for _, p := range append([][]byte{h}, parts...) {
		if k, err := f.WriteAt(p, off); err != nil || k != len(p) {
			if err == nil {
				err = io.ErrShortWrite
			}
			return fail("write", err)
		}
		off += int64(len(p))
	}
	if err := step(SnapWrite); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fail("sync", err)
	}
	if err := step(SnapSynced); err != nil {
		return err
	}
	closed = true
	if err := f.Close(); err != nil {
		return fail("close", err)
	}
	if err := fsys.Rename(tmp, path); err != nil {
		return fail("rename", err)
	}
	if err := step(SnapRenamed); err != nil {
		return err
	}
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("wal: snapshot %s: sync dir: %w", path, err)
	}
	return nil
}

// Snapshot is a snapshot read back by LoadSnapshot.
type Snapshot struct {
	Seq  uint64 // the last log record it covers
	Data []byte
	Name string
}

// ErrBadSnapshot wraps the reason a snapshot file was not used.
var ErrBadSnapshot = errors.New("wal: bad snapshot")

// LoadSnapshot returns the newest whole, valid snapshot in dir (ok false
// if there is none) and, in skipped, an error for each newer one that is
// torn or damaged (wrapping ErrBadSnapshot). err is for a directory that
// cannot be read.
func LoadSnapshot(fsys FS, dir string) (snap Snapshot, ok bool, skipped []error, err error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		if isNotExist(err) {
			return Snapshot{}, false, nil, nil
		}
		return Snapshot{}, false, nil, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	seqs := snapshotSeqs(names)
	for i := len(seqs) - 1; i >= 0; i-- {
		s, err := readSnapshot(fsys, dir, seqs[i])
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		return s, true, skipped, nil
	}
	return Snapshot{}, false, skipped, nil
}

// SnapshotSeqs lists the seqs of the snapshot files in dir, oldest first
// (whole or not; none if dir cannot be read).
func SnapshotSeqs(fsys FS, dir string) []uint64 {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil
	}
	return snapshotSeqs(names)
}

func snapshotSeqs(names []string) []uint64 {
	var seqs []uint64
	for _, name := range names {
		if seq, ok := parseSnapshotName(name); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	return seqs
}

func readSnapshot(fsys FS, dir string, seq uint64) (Snapshot, error) {
	return scanSnapshot(fsys, dir, seq, true)
}

// scanSnapshot reads and checks the snapshot covering seq in dir; with
// keep, the data is read whole and returned, otherwise a piece at a time
// (a check needs no copy of it in memory).
func scanSnapshot(fsys FS, dir string, seq uint64, keep bool) (Snapshot, error) {
	name := SnapshotName(seq)
	bad := func(why string) (Snapshot, error) {
		return Snapshot{}, fmt.Errorf("%w: %s: %s", ErrBadSnapshot, filepath.Join(dir, name), why)
	}
	f, err := fsys.OpenFile(filepath.Join(dir, name), os.O_RDONLY, 0)
	if err != nil {
		return bad(err.Error())
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return bad(err.Error())
	}
	size := st.Size()
	if size < SnapshotHeaderSize {
		return bad(fmt.Sprintf("%d bytes, shorter than a header", size))
	}
	h := make([]byte, SnapshotHeaderSize)
	if k, err := f.ReadAt(h, 0); k < SnapshotHeaderSize {
		// io.ReaderAt may return io.EOF with a whole read that ends at the
		// end of the file (a snapshot of no data): only a short read fails.
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return bad(err.Error())
	}
	if why := checkHeader(h, seq, size-SnapshotHeaderSize); why != "" {
		return bad(why)
	}
	var data, buf []byte
	if keep {
		data = make([]byte, size-SnapshotHeaderSize)
		buf = data
	} else {
		buf = make([]byte, min(size-SnapshotHeaderSize, 1<<20))
	}
	crc := crc32.Checksum(h[8:28], castagnoli)
	for off := int64(SnapshotHeaderSize); off < size; {
		piece := buf[:min(int64(len(buf)), size-off)]
		if keep {
			piece = data[off-SnapshotHeaderSize:]
		}
		k, err := f.ReadAt(piece, off)
		if k == 0 {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return bad(err.Error())
		}
		crc = crc32.Update(crc, castagnoli, piece[:k])
		off += int64(k)
	}
	if crc != binary.LittleEndian.Uint32(h[28:]) {
		return bad("checksum mismatch")
	}
	return Snapshot{Seq: seq, Data: data, Name: name}, nil
}

// ReadSnapshot reads and checks the snapshot covering seq in dir (an
// error wrapping ErrBadSnapshot if it is missing, torn or damaged).
func ReadSnapshot(fsys FS, dir string, seq uint64) (Snapshot, error) {
	return readSnapshot(fsys, dir, seq)
}

// checkHeader returns why h is not the header of the snapshot covering seq
// with dataLen bytes of data ("" if it is; the checksum is not checked).
func checkHeader(h []byte, seq uint64, dataLen int64) string {
	switch {
	case string(h[:8]) != snapMagic:
		return "bad magic"
	case binary.LittleEndian.Uint16(h[8:]) != snapVersion:
		return fmt.Sprintf("unknown version %d", binary.LittleEndian.Uint16(h[8:]))
	case binary.LittleEndian.Uint64(h[12:]) != seq:
		return "seq does not match the name"
	case binary.LittleEndian.Uint64(h[20:]) != uint64(dataLen):
		return fmt.Sprintf("length %d, but %d bytes of data (torn?)", binary.LittleEndian.Uint64(h[20:]), dataLen)
	}
	return ""
}

// CheckSnapshot checks the snapshot covering seq in dir as ReadSnapshot
// does, reading it a piece at a time instead of whole (a check after
// writing it needs no second copy of it in memory).
func CheckSnapshot(fsys FS, dir string, seq uint64) error {
	_, err := scanSnapshot(fsys, dir, seq, false)
	return err
}

// OlderSnapshot returns the newest valid snapshot in dir that covers less
// than before (ok false if there is none): the one to fall back to if the
// newest is ever found damaged, so the log must be kept from it on.
func OlderSnapshot(fsys FS, dir string, before uint64) (seq uint64, ok bool) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	seqs := snapshotSeqs(names)
	for i := len(seqs) - 1; i >= 0; i-- {
		if seqs[i] >= before {
			continue
		}
		// Checked a piece at a time, not read whole: the newer snapshot
		// is still in its writer's memory.
		if _, err := scanSnapshot(fsys, dir, seqs[i], false); err == nil {
			return seqs[i], true
		}
	}
	return 0, false
}

// PruneSnapshots removes every snapshot file of dir but those covering the
// seqs in keep, and leftover temporary snapshot files, then syncs the
// directory.
func PruneSnapshots(fsys FS, dir string, keep ...uint64) error {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wal: list %s: %w", dir, err)
	}
	var victims []string
	for _, name := range names {
		if base, ok := strings.CutSuffix(name, tmpSuffix); ok {
			if _, ok := parseSnapshotName(base); ok {
				victims = append(victims, name)
			}
			continue
		}
		if seq, ok := parseSnapshotName(name); ok && !slices.Contains(keep, seq) {
			victims = append(victims, name)
		}
	}
	if len(victims) == 0 {
		return nil
	}
	for _, name := range victims {
		if err := fsys.Remove(filepath.Join(dir, name)); err != nil && !isNotExist(err) {
			return fmt.Errorf("wal: prune snapshots: %w", err)
		}
	}
	return fsys.SyncDir(dir)
}

// FirstSegment returns the first seq of the oldest log segment in dir, from
// the segment files' names alone (ok false: no segment). It is 1 until the
// log is first compacted.
func FirstSegment(fsys FS, dir string) (first uint64, ok bool, err error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		if isNotExist(err) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	for _, name := range names {
		if seq, isSeg := parseSegmentName(name); isSeg && (!ok || seq < first) {
			first, ok = seq, true
		}
	}
	return first, ok, nil
}
