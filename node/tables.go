package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"unsafe"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/twopc"
	"github.com/dtx-dev/dtx/wal"
)

// Table files: the outcome tables of a component's snapshots, kept beside
// them so that a snapshot writes only what changed (twopc's spill.go says
// why). Each table is a ledger file (append-only, checksummed entries,
// cut to the length a snapshot recorded) named tab-SEQ-K, SEQ the first
// snapshot that wrote it. An entry is a piece of one of the table's byte
// chunks: the chunk's number, the offset the piece starts at and the
// bytes. A piece at offset 0 is the whole chunk (new, or replaced since
// the last snapshot by a copy with a value changed in place); a piece at
// the chunk's present length grows it (entries appended since). Read in
// order up to the recorded length, the pieces rebuild the chunks as the
// snapshot saw them. An expired set's file holds its hashes, 8 bytes
// each. A table whose file has grown past twice its size (pieces of
// chunks replaced since) is written afresh to a new file.

// TablePrefix starts the name of every table file.
const TablePrefix = "tab-"

// tablePiece bounds the bytes of one entry (ledger.MaxEntry bounds them).
const tablePiece = 256 << 10

// Tables is the TableSpill of one component's snapshot directory: it keeps
// each table's file open while the table lives and remembers which of its
// chunks are in it. One snapshot at a time uses it (Begin, the encoding,
// End); it is not safe for concurrent use.
type Tables struct {
	fsys  wal.FS
	dir   string
	seq   uint64 // the snapshot being written: names new files
	made  int
	files map[uint64]*tableFile
	used  map[uint64]bool
	refs  []string // the files the snapshot being written names
	// written counts the bytes appended for the snapshot being written,
	// appends says where.
	written int64
	appends []TableAppend
	// damagedFrom, set by checkTail during the snapshot being written, is
	// the oldest snapshot whose appended bytes it found damaged (0: none).
	damagedFrom uint64
	// lastSeq and lastAppends are the last snapshot that landed and
	// where its table bytes went: read back before the next one keeps it
	// as its fallback, whether or not a table still uses the file.
	lastSeq     uint64
	lastAppends []TableAppend
	// Hook, if set, is called before each append to a table file (a test
	// may return an error there, as from a failed write).
	Hook func(file string) error
}

type tableFile struct {
	f      *ledger.File
	marks  []chunkMark // what the file holds of each chunk
	bytes  int64       // the table's bytes when last written
	hashes *twopc.TableRef
	// checked: the bytes before it were read back after a later
	// snapshot began (checkTail). pendingFrom is the oldest snapshot that
	// appended bytes past it (0: none).
	checked     int64
	pendingFrom uint64
}

// checkTail reads back what tf gained for the last snapshot before the
// next one builds on it. A snapshot shares the file with the one before
// it, so damage to those bytes would break both of the snapshots kept,
// the newer and its fallback: found here, the table is written afresh
// to a new file instead, and only the snapshot that had the damage is
// lost: Snapshot sets aside the snapshots that appended the damaged
// bytes before it writes the new one, so that the new one keeps the
// snapshot before them as its fallback (and the log from it) rather than
// a damaged one. It reports whether the bytes are whole.
func (t *Tables) checkTail(tf *tableFile) (bool, error) {
	if tf.checked >= tf.f.Len() {
		return true, nil
	}
	err := ledger.ScanFrom(t.fsys, tf.f.Name(), max(tf.checked, ledger.HeaderLen), tf.f.Len(), func(int64, []byte) error { return nil })
	switch {
	case err == nil:
		tf.checked, tf.pendingFrom = tf.f.Len(), 0
		return true, nil
	case errors.Is(err, ledger.ErrCorrupt):
		if from := tf.pendingFrom; from != 0 && (t.damagedFrom == 0 || from < t.damagedFrom) {
			t.damagedFrom = from
		}
		return false, nil
	default:
		return false, err
	}
}

// chunkMark is a chunk as it was written: its first byte's address and
// its length. The same address and a greater length is the same chunk
// grown; another address is a chunk replaced.
type chunkMark struct {
	p *byte
	n int
}

// NewTables returns the table writer of dir.
func NewTables(fsys wal.FS, dir string) *Tables {
	return &Tables{fsys: fsys, dir: dir, files: map[uint64]*tableFile{}, used: map[uint64]bool{}}
}

// Begin starts the writes of the snapshot that will cover seq.
func (t *Tables) Begin(seq uint64) {
	t.seq, t.made, t.refs, t.written, t.appends, t.damagedFrom = seq, 0, nil, 0, nil, 0
	clear(t.used)
}

// End ends a snapshot's writes (whether it landed or not) and closes the
// files of the tables it did not name: they are gone from the machine.
// It returns the files the snapshot names.
func (t *Tables) End() []string {
	for id, tf := range t.files {
		if !t.used[id] {
			tf.f.Close()
			delete(t.files, id)
		}
	}
	return t.refs
}

// Close closes every file.
func (t *Tables) Close() {
	for id, tf := range t.files {
		tf.f.Close()
		delete(t.files, id)
	}
}

func (t *Tables) create(id uint64) (*tableFile, error) {
	if old := t.files[id]; old != nil {
		old.f.Close()
		delete(t.files, id)
	}
	if err := t.fsys.MkdirAll(t.dir, 0o755); err != nil {
		return nil, fmt.Errorf("table file: %w", err)
	}
	names, err := t.fsys.ReadDir(t.dir)
	if err != nil {
		return nil, fmt.Errorf("table file: list %s: %w", t.dir, err)
	}
	var name string
	for { // a new name: a kept snapshot of an earlier run may have used this seq
		name = fmt.Sprintf("%s%016x-%d", TablePrefix, t.seq, t.made)
		t.made++
		if _, found := slices.BinarySearch(names, name); !found {
			break
		}
	}
	f, err := ledger.Open(t.fsys, path.Join(t.dir, name), 0)
	if err != nil {
		return nil, err
	}
	tf := &tableFile{f: f}
	t.files[id] = tf
	return tf, nil
}

func (t *Tables) append(tf *tableFile, payloads [][]byte) error {
	if len(payloads) == 0 {
		return nil
	}
	if t.Hook != nil {
		if err := t.Hook(path.Base(tf.f.Name())); err != nil {
			return err
		}
	}
	before := tf.f.Len()
	n, err := tf.f.Append(payloads)
	t.written += n - before
	if n > before {
		t.appends = append(t.appends, TableAppend{File: path.Base(tf.f.Name()), From: before, To: n})
		if tf.pendingFrom == 0 {
			tf.pendingFrom = t.seq
		}
	}
	return err
}

// Table writes what changed of table id's chunks since its last call.
func (t *Tables) Table(id uint64, chunks [][]byte, n int) (twopc.TableRef, error) {
	t.used[id] = true
	var size int64
	for _, c := range chunks {
		size += int64(len(c))
	}
	tf := t.files[id]
	whole := true
	if tf != nil {
		var err error
		if whole, err = t.checkTail(tf); err != nil {
			return twopc.TableRef{}, err
		}
	}
	if tf == nil || !whole || tf.hashes != nil || tf.f.Len() > 2*size+1<<20 || len(tf.marks) > len(chunks) {
		var err error
		if tf, err = t.create(id); err != nil {
			return twopc.TableRef{}, err
		}
	}
	var payloads [][]byte
	marks := slices.Clone(tf.marks)
	for i, c := range chunks {
		from, whole := 0, true
		p := unsafe.SliceData(c)
		if i < len(marks) && marks[i].p == p && marks[i].n <= len(c) {
			from, whole = marks[i].n, false // the same chunk, maybe grown
		}
		for first := true; from < len(c) || whole && first; first = false {
			end := min(len(c), from+tablePiece)
			b := make([]byte, 0, 2*binary.MaxVarintLen64+end-from)
			b = binary.AppendUvarint(b, uint64(i))
			b = binary.AppendUvarint(b, uint64(from))
			payloads = append(payloads, append(b, c[from:end]...))
			from = end
		}
		if i < len(marks) {
			marks[i] = chunkMark{p, len(c)}
		} else {
			marks = append(marks, chunkMark{p, len(c)})
		}
	}
	if err := t.append(tf, payloads); err != nil {
		return twopc.TableRef{}, err
	}
	tf.marks, tf.bytes = marks, size
	name := path.Base(tf.f.Name())
	t.refs = append(t.refs, name)
	return twopc.TableRef{File: name, Len: tf.f.Len(), Chunks: len(chunks), N: n}, nil
}

// Hashes writes the expired set id, once.
func (t *Tables) Hashes(id uint64, hs []uint64) (twopc.TableRef, error) {
	t.used[id] = true
	if tf := t.files[id]; tf != nil && tf.hashes != nil {
		whole, err := t.checkTail(tf)
		if err != nil {
			return twopc.TableRef{}, err
		}
		if whole {
			t.refs = append(t.refs, tf.hashes.File)
			return *tf.hashes, nil
		}
	}
	tf, err := t.create(id)
	if err != nil {
		return twopc.TableRef{}, err
	}
	var payloads [][]byte
	for len(hs) > 0 {
		k := min(len(hs), tablePiece/8)
		b := make([]byte, 0, 8*k)
		for _, h := range hs[:k] {
			b = binary.LittleEndian.AppendUint64(b, h)
		}
		payloads = append(payloads, b)
		hs = hs[k:]
	}
	n := 0
	for _, p := range payloads {
		n += len(p) / 8
	}
	if err := t.append(tf, payloads); err != nil {
		delete(t.files, id)
		tf.f.Close()
		return twopc.TableRef{}, err
	}
	name := path.Base(tf.f.Name())
	tf.hashes = &twopc.TableRef{File: name, Len: tf.f.Len(), Chunks: n, N: n}
	t.refs = append(t.refs, name)
	return *tf.hashes, nil
}

// tableSource is the tables a snapshot names, read into memory (every
// entry's checksum checked) before the snapshot is restored, so that a
// damaged table file makes the restart fall back to an older snapshot
// instead of failing half-way through a restore (a twopc.TableSource).
type tableSource map[twopc.TableRef][][]byte

func tableKey(r twopc.TableRef) twopc.TableRef { return twopc.TableRef{File: r.File, Len: r.Len} }

// readTables reads the entries of every file refs name, up to its length.
func readTables(fsys wal.FS, dir string, refs []twopc.TableRef) (tableSource, error) {
	src := tableSource{}
	for _, r := range refs {
		if !strings.HasPrefix(r.File, TablePrefix) || strings.ContainsAny(r.File, `/\`) {
			return nil, fmt.Errorf("%w: table file name %q", ledger.ErrCorrupt, r.File)
		}
		if r.Len < ledger.HeaderLen {
			return nil, fmt.Errorf("%w: table file %s: recorded length %d", ledger.ErrCorrupt, r.File, r.Len)
		}
		k := tableKey(r)
		if _, ok := src[k]; ok {
			continue
		}
		ps, err := ledger.ReadEntries(fsys, path.Join(dir, r.File), r.Len)
		if err != nil {
			return nil, err
		}
		src[k] = ps
	}
	return src, nil
}

// Chunks rebuilds the table's chunks from its pieces.
func (s tableSource) Chunks(ref twopc.TableRef, fn func([]byte) error) error {
	ps, ok := s[tableKey(ref)]
	if !ok {
		return fmt.Errorf("table file %s (%d bytes) was not read", ref.File, ref.Len)
	}
	var chunks [][]byte
	var owned []bool // chunks[i] is a buffer of this call's, not a stored piece
	for _, p := range ps {
		i, k := binary.Uvarint(p)
		if k <= 0 {
			return fmt.Errorf("%w: table file %s: bad chunk number", ledger.ErrCorrupt, ref.File)
		}
		p = p[k:]
		off, k := binary.Uvarint(p)
		if k <= 0 {
			return fmt.Errorf("%w: table file %s: bad offset", ledger.ErrCorrupt, ref.File)
		}
		p = p[k:]
		switch {
		case i > uint64(len(chunks)) || i == uint64(len(chunks)) && off != 0:
			return fmt.Errorf("%w: table file %s: a piece of chunk %d at %d, with %d chunks", ledger.ErrCorrupt, ref.File, i, off, len(chunks))
		case i == uint64(len(chunks)):
			chunks, owned = append(chunks, p), append(owned, false)
		case off == 0:
			chunks[i], owned[i] = p, false
		case off == uint64(len(chunks[i])):
			if !owned[i] { // grow a copy: the stored piece stays as read
				c := make([]byte, len(chunks[i]), 2*(len(chunks[i])+len(p)))
				copy(c, chunks[i])
				chunks[i], owned[i] = c, true
			}
			chunks[i] = append(chunks[i], p...)
		default:
			return fmt.Errorf("%w: table file %s: a piece of chunk %d at %d, which holds %d bytes", ledger.ErrCorrupt, ref.File, i, off, len(chunks[i]))
		}
	}
	if len(chunks) != ref.Chunks {
		return fmt.Errorf("%w: table file %s: %d chunks up to %d bytes, the snapshot says %d", ledger.ErrCorrupt, ref.File, len(chunks), ref.Len, ref.Chunks)
	}
	for _, c := range chunks {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// Hashes reads an expired set's hashes.
func (s tableSource) Hashes(ref twopc.TableRef) ([]uint64, error) {
	ps, ok := s[tableKey(ref)]
	if !ok {
		return nil, fmt.Errorf("table file %s (%d bytes) was not read", ref.File, ref.Len)
	}
	hs := make([]uint64, 0, ref.N)
	for _, p := range ps {
		if len(p)%8 != 0 {
			return nil, fmt.Errorf("%w: table file %s: a piece of %d bytes", ledger.ErrCorrupt, ref.File, len(p))
		}
		for i := 0; i < len(p); i += 8 {
			hs = append(hs, binary.LittleEndian.Uint64(p[i:]))
		}
	}
	return hs, nil
}

// LoadSnapshot returns the newest whole, valid snapshot of dir whose
// table files (tables names them) read whole too, with those tables read,
// and an error for each newer snapshot it skipped as damaged (its file or
// one of its table files). found is false if there is none.
//
// A newer snapshot skipped for a damaged table file is set aside once an
// older one loads: renamed to its name plus DamagedSuffix (kept for a
// look, never read again). Its own file checks out, so otherwise the next
// snapshot would keep it as the one to fall back to (wal.OlderSnapshot
// checks only the snapshot file) and compact the log past the one that
// loaded: a second damage would then leave nothing to start from.
func LoadSnapshot(fsys wal.FS, dir string, tables func(data []byte) ([]twopc.TableRef, error)) (snap wal.Snapshot, src twopc.TableSource, found bool, skipped []error, err error) {
	snap, found, skipped, err = wal.LoadSnapshot(fsys, dir)
	var aside []string // snapshots skipped for their table files
	for err == nil && found {
		refs, terr := tables(snap.Data)
		if terr == nil {
			var ts tableSource
			if ts, terr = readTables(fsys, dir, refs); terr == nil {
				if err := setAside(fsys, dir, aside); err != nil {
					return wal.Snapshot{}, nil, false, skipped, err
				}
				return snap, ts, true, skipped, nil
			}
		}
		if !errors.Is(terr, ledger.ErrCorrupt) && !errors.Is(terr, fs.ErrNotExist) && !errors.Is(terr, twopc.ErrDecode) {
			// Not damage (a failing disk, say): the restart fails, as
			// for the snapshot file itself, rather than fall back.
			return wal.Snapshot{}, nil, false, skipped, fmt.Errorf("snapshot %s: %w", snap.Name, terr)
		}
		skipped = append(skipped, fmt.Errorf("%w: %s: %v", wal.ErrBadSnapshot, snap.Name, terr))
		aside = append(aside, snap.Name)
		older, ok := wal.OlderSnapshot(fsys, dir, snap.Seq)
		if !ok {
			return wal.Snapshot{}, nil, false, skipped, nil
		}
		snap, err = wal.ReadSnapshot(fsys, dir, older)
	}
	return snap, nil, found, skipped, err
}

// DamagedSuffix is added to the name of a snapshot set aside by
// LoadSnapshot.
const DamagedSuffix = ".damaged"

// setAside renames the snapshot files names of dir to name+DamagedSuffix
// and syncs the directory.
func setAside(fsys wal.FS, dir string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	for _, name := range names {
		if err := fsys.Rename(path.Join(dir, name), path.Join(dir, name+DamagedSuffix)); err != nil {
			return fmt.Errorf("set aside the damaged snapshot %s: %w", name, err)
		}
	}
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("set aside the damaged snapshots: %w", err)
	}
	return nil
}

// PruneTables removes the table files of dir that no kept snapshot names:
// files is how to read the names out of a snapshot's bytes. It reads every
// snapshot file in dir but the ones named in known (their table files
// given). A snapshot it cannot read makes it remove nothing.
func PruneTables(fsys wal.FS, dir string, known map[uint64][]string, tables func(snapshot []byte) ([]twopc.TableRef, error)) error {
	keep := map[string]bool{}
	for _, seq := range wal.SnapshotSeqs(fsys, dir) {
		names, ok := known[seq]
		if !ok {
			snap, err := wal.ReadSnapshot(fsys, dir, seq)
			if err != nil {
				return nil // damaged: it is no fallback, but remove nothing on a guess
			}
			refs, err := tables(snap.Data)
			if err != nil {
				return nil
			}
			for _, r := range refs {
				names = append(names, r.File)
			}
		}
		for _, n := range names {
			keep[n] = true
		}
	}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	var errs []error
	for _, n := range names {
		if strings.HasPrefix(n, TablePrefix) && !keep[n] {
			if err := fsys.Remove(path.Join(dir, n)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// TableAppend is the bytes [From, To) a snapshot appended to a table file.
type TableAppend struct {
	File     string
	From, To int64
}

// TableSnapshot is what Tables.Snapshot did.
type TableSnapshot struct {
	// Appends are where the snapshot's table bytes went (crash tests
	// damage them).
	Appends []TableAppend
	// KeptFrom is the seq the log is now kept from (0: all of it).
	KeptFrom uint64
	// Bytes is the snapshot file's payload; TableBytes what was appended
	// to table files for it.
	Bytes      int
	TableBytes int64
	// PruneErr is a failure to remove table files no kept snapshot names
	// (they are removed after a later snapshot).
	PruneErr error
	// SetAside names the earlier snapshots set aside because bytes they
	// appended to a table file were found damaged (checkTail).
	SetAside []string
}

// Snapshot writes the snapshot that covers seq: encode (the function a
// capture on the loop returned) writes the tables through t, then the
// snapshot is made durable (WriteSnapshot, with h), then the table files
// no kept snapshot names are removed (PruneTables, with tables to read
// the names out of an older snapshot). Call it off the loop, one snapshot
// at a time.
func (t *Tables) Snapshot(log *wal.Log, seq uint64, encode func(*Tables) ([][]byte, error), h SnapshotHooks, tables func([]byte) ([]twopc.TableRef, error)) (TableSnapshot, error) {
	var res TableSnapshot
	t.Hook = h.Table
	t.Begin(seq)
	data, err := encode(t)
	refs := t.End()
	res.TableBytes, res.Appends = t.written, t.appends
	if err != nil {
		return res, fmt.Errorf("snapshot tables: %w", err)
	}
	for _, p := range data {
		res.Bytes += len(p)
	}
	if t.lastSeq != 0 && t.lastSeq < seq {
		// The bytes the last snapshot appended, read back: it is this
		// one's fallback, and a file no table uses any more (a
		// generation dropped, a table rewritten) is not read by
		// checkTail.
		verified := map[string]int64{} // what checkTail read back already
		for _, tf := range t.files {
			verified[path.Base(tf.f.Name())] = tf.checked
		}
		for _, a := range t.lastAppends {
			if verified[a.File] >= a.To {
				continue
			}
			err := ledger.ScanFrom(t.fsys, path.Join(t.dir, a.File), a.From, a.To, func(int64, []byte) error { return nil })
			if errors.Is(err, ledger.ErrCorrupt) || errors.Is(err, fs.ErrNotExist) {
				if t.damagedFrom == 0 || t.lastSeq < t.damagedFrom {
					t.damagedFrom = t.lastSeq
				}
				break
			}
			if err != nil {
				return res, fmt.Errorf("snapshot tables: read back %s: %w", a.File, err)
			}
		}
	}
	if from := t.damagedFrom; from != 0 {
		// Those snapshots cannot load: set aside, the one before them
		// (if any is left) is this one's fallback, and the log is not
		// compacted past it.
		for _, s := range wal.SnapshotSeqs(t.fsys, t.dir) {
			if s >= from && s < seq {
				res.SetAside = append(res.SetAside, wal.SnapshotName(s))
			}
		}
		if err := setAside(t.fsys, t.dir, res.SetAside); err != nil {
			return res, err
		}
	}
	if res.KeptFrom, err = WriteSnapshot(t.fsys, t.dir, log, seq, data, h); err != nil {
		return res, err
	}
	t.lastSeq, t.lastAppends = seq, res.Appends
	// Only this snapshot's names are taken as known: a snapshot file of
	// an earlier seq on disk may be another incarnation's, with other
	// names, so it is read.
	res.PruneErr = PruneTables(t.fsys, t.dir, map[uint64][]string{seq: refs}, tables)
	return res, nil
}
