// Package idset is a set of ids, kept as 64-bit keyed hashes, for a
// service that must refuse an id it has seen before in an append-only
// ledger of its entries (internal/ledger) without holding every id in
// memory: the order service's check that an order id is new.
//
// The hashes of the entries committed since the last snapshot are in
// memory; a snapshot's Flush writes them, sorted, to an immutable run file
// covering a range of ledger entries [start, end) and the ledger offsets
// of both ends, and merges older runs into bigger ones (so that a few
// runs cover everything: a lookup of an absent id reads one 2 KiB block
// per run). Memory keeps only each run's index: the first hash and
// checksum of every block of BlockLen hashes, 12 bytes per 256 ids.
//
// The set is derived from the ledger and is never ahead of it: a run is
// written after the ledger entries it covers were fsynced, and Attach,
// given the ledger length and entry count a restored snapshot recorded,
// uses only runs that end at or before that count, removes the others
// (written for a snapshot that never landed) and reads only the ledger
// past the last run it uses. A run file that is missing, torn or fails
// its checksums is rebuilt from the ledger entries it covered.
//
// Files live in the subdirectory "idset" of the service's log directory,
// through the wal.FS the log and the ledger use: the key file "key" and
// the runs "run-<start>-<end>" (hex entry counts), each written to a
// temporary file, fsynced, renamed into place and the directory fsynced.
package idset

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dtx-dev/dtx/internal/ledger"
	"github.com/dtx-dev/dtx/wal"
)

// DirName is the set's directory in a service's log directory.
const DirName = "idset"

const keyName = "key"

// chunkLen bounds the hashes a rebuild from the ledger holds in memory
// before it writes them as a run (8 MiB).
const chunkLen = 1 << 20

// Set is a set of ids. The service's loop owns it (Add, Has, Capture,
// Attach, Len); a Capture's Flush runs off the loop, one at a time (the
// snapshots of a service are serialized), and tells the loop through an
// atomic mark which hashes it may drop from memory.
type Set struct {
	k0, k1 uint64
	check  uint64 // the key's check value, in every run's footer

	// The hashes of entries [start, start+len(list)) not in a run, in
	// commit order, and the same as a set.
	mem   map[uint64]struct{}
	list  []uint64
	start int64
	mark  atomic.Pointer[int64] // a finished Flush's end
	buf   []byte                // a block, for the loop's lookups

	// Set by Attach (nil fsys: in memory only).
	fsys   wal.FS
	dir    string
	ledger string
	idOf   func(payload []byte) (string, error)

	mu   sync.RWMutex // the loop reads runs; Flush replaces them
	runs []*run       // contiguous, in entry order, from entry 0

	memOff int64 // the ledger offset of entry start (Attach, then Flush)
}

// New returns an empty set in memory, under a fresh random key.
func New() *Set {
	s := &Set{mem: make(map[uint64]struct{}), buf: make([]byte, blockBytes)}
	var k [16]byte
	rand.Read(k[:])
	s.setKey(k[:])
	return s
}

func (s *Set) setKey(k []byte) {
	s.k0, s.k1 = binary.LittleEndian.Uint64(k), binary.LittleEndian.Uint64(k[8:])
	s.check = sum64(s.k0, s.k1, "dtx idset key check")
}

// apply drops from memory what a finished Flush put in a run.
func (s *Set) apply() {
	p := s.mark.Swap(nil)
	if p == nil || *p <= s.start {
		return
	}
	k := int(*p - s.start)
	for _, h := range s.list[:k] {
		delete(s.mem, h)
	}
	s.list = slices.Clone(s.list[k:])
	s.start = *p
	if len(s.mem) == 0 {
		s.mem = make(map[uint64]struct{}) // a map never shrinks
	}
}

// Restore sets the number of entries before the first Add of a set in
// memory: a restored snapshot's ledger count (whose ids Attach finds).
func (s *Set) Restore(count int) { s.start = int64(count) }

// Add adds the id of the next ledger entry (on the loop).
func (s *Set) Add(id string) {
	if s.mark.Load() != nil {
		s.apply()
	}
	h := sum64(s.k0, s.k1, id)
	s.mem[h] = struct{}{}
	s.list = append(s.list, h)
}

// Len returns the number of entries added, in runs and in memory.
func (s *Set) Len() int64 { return s.start + int64(len(s.list)) }

// InMemory returns the number of hashes held in memory (not in a run).
func (s *Set) InMemory() int {
	s.apply()
	return len(s.list)
}

// Runs returns the number of run files in use.
func (s *Set) Runs() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.runs)
}

// Has reports whether id was added (or, 1 in 2^64 per id, one with the
// same hash: a false match, which refuses a new id). An error (a run's
// block failed its checksum, or could not be read) answers nothing: the
// caller must refuse the id; the next Flush rebuilds a damaged run.
func (s *Set) Has(id string) (bool, error) {
	if s.mark.Load() != nil {
		s.apply()
	}
	h := sum64(s.k0, s.k1, id)
	if _, ok := s.mem[h]; ok {
		return true, nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := len(s.runs) - 1; i >= 0; i-- {
		ok, err := s.runs[i].has(h, s.buf)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// Capture is the set as a snapshot captured it on the loop.
type Capture struct {
	s          *Set
	hashes     []uint64 // never written again by the loop
	start, end int64
}

// Capture takes the hashes in memory for a snapshot (on the loop; a
// slice header: the loop only appends past it).
func (s *Set) Capture() Capture {
	s.apply()
	return Capture{s: s, hashes: s.list[:len(s.list):len(s.list)], start: s.start, end: s.Len()}
}

// Flush, off the loop, after the ledger's own flush made entries up to
// count durable, ending at ledger offset length, writes the captured
// hashes as a run covering them, rebuilds any run found damaged, and
// merges runs. In memory only (no Attach) it does nothing.
func (c Capture) Flush(length int64, count int) error {
	s := c.s
	if s.fsys == nil {
		return nil
	}
	if int64(count) != c.end {
		return fmt.Errorf("idset: the ledger flushed %d entries but the set captured %d", count, c.end)
	}
	if err := s.repair(); err != nil {
		return err
	}
	if c.end > c.start {
		sorted := slices.Clone(c.hashes)
		slices.Sort(sorted)
		r, err := s.write(meta{start: c.start, end: c.end, startOff: s.memOff, endOff: length}, each(sorted))
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.runs = append(s.runs, r)
		s.mu.Unlock()
		s.memOff = length
		end := c.end
		s.mark.Store(&end)
	}
	return s.merge()
}

// write writes the hashes fill adds (ascending) as the run m and opens
// it; if fill fails, nothing is renamed into place.
func (s *Set) write(m meta, fill func(add func(uint64)) error) (*run, error) {
	m.check = s.check
	w, err := newWriter(s.fsys, path.Join(s.dir, runName(m.start, m.end)))
	if err != nil {
		return nil, err
	}
	if err := fill(w.add); err != nil {
		w.abort()
		return nil, err
	}
	name, err := w.finish(m)
	if err != nil {
		return nil, err
	}
	return openRun(s.fsys, name)
}

// Close closes the run files.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for _, r := range s.runs {
		err = errors.Join(err, r.f.Close())
	}
	s.runs = nil
	return err
}

// readKey returns the key stored in dir, or nil.
func readKey(fsys wal.FS, name string) []byte {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	b := make([]byte, 20)
	if n, _ := f.ReadAt(b, 0); n != 20 || crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
		return nil
	}
	return b[:16]
}

func writeKey(fsys wal.FS, name string, k []byte) error {
	b := binary.LittleEndian.AppendUint32(k[:16:16], crc32.Checksum(k[:16], castagnoli))
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("idset: %w", err)
	}
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, name)
	}
	if err == nil {
		err = fsys.SyncDir(path.Dir(name))
	}
	if err != nil {
		return fmt.Errorf("idset: write %s: %w", name, err)
	}
	return nil
}

// Attach opens the set's files in dir's subdirectory DirName for the
// ledger file ledgerName of length entries of length bytes, as a restored
// snapshot recorded them (0, 0: an empty ledger), after Ledger.Attach cut
// the file to that length. It drops whatever the set held in memory: the
// caller then Adds again the ids of the entries past count (those the
// snapshot held itself, then the log's replay). idOf returns an entry's
// id from its ledger payload. It uses the runs that chain from entry 0 to
// at most count, rebuilds from the ledger what no valid run covers, and
// reads the ledger past the last run into memory (writing it as runs too
// when it is long).
func (s *Set) Attach(fsys wal.FS, dir, ledgerName string, length int64, count int, idOf func([]byte) (string, error)) error {
	if s.fsys != nil {
		return errors.New("idset: already attached")
	}
	d := path.Join(dir, DirName)
	if err := fsys.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("idset: %w", err)
	}
	s.fsys, s.dir, s.ledger, s.idOf = fsys, d, ledgerName, idOf
	s.mem, s.list, s.start, s.memOff = make(map[uint64]struct{}), nil, 0, ledger.HeaderLen
	s.mark.Store(nil)
	names, err := fsys.ReadDir(d)
	if err != nil {
		return fmt.Errorf("idset: %w", err)
	}
	if k := readKey(fsys, path.Join(d, keyName)); k != nil {
		s.setKey(k)
	} else {
		var k [16]byte
		binary.LittleEndian.PutUint64(k[:], s.k0)
		binary.LittleEndian.PutUint64(k[8:], s.k1)
		if err := writeKey(fsys, path.Join(d, keyName), k[:]); err != nil {
			return err
		}
	}
	var cands []*run
	removed := false // to make durable
	for _, name := range names {
		full := path.Join(d, name)
		if strings.HasSuffix(name, ".tmp") {
			fsys.Remove(full) // a write that never finished
			removed = true
			continue
		}
		start, end, ok := parseRunName(name)
		if !ok {
			continue
		}
		r, err := openRun(fsys, full)
		switch {
		case err != nil, r.start != start || r.end != end, r.check != s.check, end > int64(count), r.endOff > length:
			// Damaged, under another key, or written for a snapshot
			// that never landed: the ledger covers its entries.
			if r != nil {
				r.f.Close()
			}
			fsys.Remove(full)
			removed = true
			continue
		}
		cands = append(cands, r)
	}
	dropped, err := s.chain(cands, length, int64(count))
	if removed || dropped {
		if serr := fsys.SyncDir(d); err == nil && serr != nil {
			err = fmt.Errorf("idset: %w", serr)
		}
	}
	return err
}

// chain picks the runs that cover entries [0, count) from cands, rebuilds
// the gaps from the ledger, reads the rest into memory and removes the
// candidates it did not use (reporting whether it removed any).
func (s *Set) chain(cands []*run, length, count int64) (dropped bool, err error) {
	used := map[*run]bool{}
	pos, off := int64(0), ledger.HeaderLen
	tail := false
	for pos < count && err == nil {
		var best, next *run
		for _, r := range cands {
			if r.start == pos && r.startOff == off && (best == nil || r.end > best.end) {
				best = r
			}
			if r.start > pos && r.startOff > off && (next == nil || r.start < next.start) {
				next = r
			}
		}
		switch {
		case best != nil:
			s.runs = append(s.runs, best)
			used[best] = true
			pos, off = best.end, best.endOff
		case next != nil: // a gap: rebuild it
			err = s.rebuild(pos, next.start, off, next.startOff, true)
			pos, off = next.start, next.startOff
		default:
			err = s.rebuild(pos, count, off, length, false)
			pos, tail = count, true
		}
	}
	if !tail {
		s.start, s.memOff = pos, off
	}
	for _, r := range cands {
		if !used[r] {
			r.f.Close()
			s.fsys.Remove(r.name)
			dropped = true
		}
	}
	return dropped, err
}

// rebuild reads ledger entries [from, to) at offsets [fromOff, toOff)
// and writes their hashes as runs of at most chunkLen; with all false the
// last chunk stays in memory instead (the tail past the last run).
func (s *Set) rebuild(from, to, fromOff, toOff int64, all bool) error {
	var hashes []uint64
	a, aOff := from, fromOff
	n := from
	flush := func(end, endOff int64) error {
		slices.Sort(hashes)
		r, err := s.write(meta{start: a, end: end, startOff: aOff, endOff: endOff}, each(hashes))
		if err != nil {
			return err
		}
		s.runs = append(s.runs, r)
		hashes, a, aOff = hashes[:0], end, endOff
		return nil
	}
	err := ledger.ScanFrom(s.fsys, s.ledger, fromOff, toOff, func(off int64, p []byte) error {
		if n == to {
			return fmt.Errorf("%w: %s: more than %d entries up to offset %d", ledger.ErrCorrupt, s.ledger, to, toOff)
		}
		id, err := s.idOf(p)
		if err != nil {
			return fmt.Errorf("%w: %s: entry at offset %d: %v", ledger.ErrCorrupt, s.ledger, off, err)
		}
		hashes = append(hashes, sum64(s.k0, s.k1, id))
		n++
		if len(hashes) == chunkLen {
			return flush(n, ledger.EntryEnd(off, p))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("idset: rebuild entries [%d, %d): %w", from, to, err)
	}
	if n != to {
		return fmt.Errorf("idset: %w: %s: %d entries between offsets %d and %d, want %d", ledger.ErrCorrupt, s.ledger, n-from, fromOff, toOff, to-from)
	}
	if len(hashes) == 0 {
		if !all {
			s.start, s.memOff = to, toOff
		}
		return nil
	}
	if all {
		return flush(to, toOff)
	}
	for _, h := range hashes {
		s.mem[h] = struct{}{}
	}
	s.list = slices.Clone(hashes) // in sorted, not commit, order: only their number matters
	s.start, s.memOff = a, aOff
	return nil
}

func each(hashes []uint64) func(func(uint64)) error {
	return func(add func(uint64)) error {
		for _, h := range hashes {
			add(h)
		}
		return nil
	}
}
