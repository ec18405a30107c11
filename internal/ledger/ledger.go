// Package ledger is an append-only, checksummed file of a service's
// committed transactions, kept in the service's log directory through the
// wal.FS the log uses (so the simulator's MemFS crashes it like the log).
//
// The file is an 8-byte magic followed by entries, each a 4-byte
// little-endian payload length, the payload's CRC-32C (Castagnoli) and the
// payload. It is only ever appended to and then fsynced, and a snapshot
// records the length it covers: the length is the truth, not the file's
// size. Open cuts the file to a snapshot's recorded length, because what
// lies past it was appended for a snapshot that never landed (the log
// replay after the snapshot rebuilds those entries in memory) or is a torn
// write. Nothing is ever rewritten in place.
package ledger

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"

	"github.com/dtx-dev/dtx/wal"
)

// Magic opens every ledger file.
const Magic = "DTXLEDG1"

// HeaderLen is the length of an empty ledger (the magic alone).
const HeaderLen = int64(len(Magic))

// entryHeader is the length and CRC-32C before each payload.
const entryHeader = 8

// MaxEntry bounds one payload, so that a damaged length never makes a
// reader allocate gigabytes.
const MaxEntry = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error about a ledger's content.
var ErrCorrupt = errors.New("ledger: corrupt")

// File is an open ledger, for appending. One goroutine appends (the
// service's snapshot writer); readers use Scan with a length they were
// given, which only grows.
type File struct {
	fsys wal.FS
	name string
	f    wal.File
	n    int64
}

// Open opens the ledger name in fsys for appending and cuts it to length,
// the length the loaded snapshot recorded (0: no snapshot, or one taken
// before the service had a ledger: the ledger starts empty). A missing
// file is created (durably: its directory is synced). A file shorter than
// length is an error, never a shorter history: the snapshot claims entries
// the ledger does not have.
func Open(fsys wal.FS, name string, length int64) (*File, error) {
	if length != 0 && length < HeaderLen {
		return nil, fmt.Errorf("%w: %s: recorded length %d is shorter than the header", ErrCorrupt, name, length)
	}
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", name, err)
	}
	l := &File{fsys: fsys, name: name, f: f}
	if err := l.cut(length); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

func (l *File) cut(length int64) error {
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("ledger: %s: %w", l.name, err)
	}
	if fi.Size() < length {
		return fmt.Errorf("%w: %s holds %d bytes but the snapshot recorded %d", ErrCorrupt, l.name, fi.Size(), length)
	}
	if length == 0 { // a new ledger: the magic alone, durable with its name
		if err := l.f.Truncate(0); err != nil {
			return fmt.Errorf("ledger: %s: %w", l.name, err)
		}
		if _, err := l.f.WriteAt([]byte(Magic), 0); err != nil {
			return fmt.Errorf("ledger: %s: %w", l.name, err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("ledger: %s: %w", l.name, err)
		}
		if err := l.fsys.SyncDir(path.Dir(l.name)); err != nil {
			return fmt.Errorf("ledger: %s: %w", l.name, err)
		}
		l.n = HeaderLen
		return nil
	}
	var magic [len(Magic)]byte
	if _, err := l.f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != Magic {
		return fmt.Errorf("%w: %s: bad magic", ErrCorrupt, l.name)
	}
	if fi.Size() > length {
		if err := l.f.Truncate(length); err != nil {
			return fmt.Errorf("ledger: %s: %w", l.name, err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("ledger: %s: %w", l.name, err)
		}
	}
	l.n = length
	return nil
}

// Len returns the ledger's length: what a snapshot taken after the last
// Append records.
func (l *File) Len() int64 { return l.n }

// Name returns the ledger's file name.
func (l *File) Name() string { return l.name }

// Append appends the payloads, in order, and fsyncs the file, so that a
// snapshot may then record the returned length. On an error the ledger's
// length is unchanged (the bytes written past it are cut by the next
// Open, and overwritten by the next Append).
func (l *File) Append(payloads [][]byte) (int64, error) {
	if len(payloads) == 0 {
		return l.n, nil
	}
	size := 0
	for i, p := range payloads {
		if len(p) > MaxEntry {
			return l.n, fmt.Errorf("ledger: %s: entry %d is %d bytes, more than %d", l.name, i, len(p), MaxEntry)
		}
		size += entryHeader + len(p)
	}
	b := make([]byte, 0, size)
	for _, p := range payloads {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(p, castagnoli))
		b = append(b, p...)
	}
	if _, err := l.f.WriteAt(b, l.n); err != nil {
		return l.n, fmt.Errorf("ledger: %s: append: %w", l.name, err)
	}
	if err := l.f.Sync(); err != nil {
		return l.n, fmt.Errorf("ledger: %s: sync: %w", l.name, err)
	}
	l.n += int64(len(b))
	return l.n, nil
}

// Close closes the file.
func (l *File) Close() error { return l.f.Close() }

// Scan reads the entries of ledger name up to length (a length a snapshot
// recorded or Append returned) and calls fn with each payload, in order,
// streaming: fn must not keep the slice. A checksum or length that does
// not match is an error wrapping ErrCorrupt and naming the offset; length
// 0 is an empty ledger, even when the file is missing.
func Scan(fsys wal.FS, name string, length int64, fn func(payload []byte) error) error {
	return ScanFrom(fsys, name, HeaderLen, length, func(_ int64, p []byte) error { return fn(p) })
}

// EntryEnd returns the offset just past the entry at off with payload p,
// where the next entry starts.
func EntryEnd(off int64, p []byte) int64 { return off + entryHeader + int64(len(p)) }

// ScanFrom is Scan from the entry that starts at offset from (HeaderLen:
// the first; an offset an earlier scan's EntryEnd returned), reading
// nothing before it but the magic; fn gets each entry's offset too. An
// offset that is not an entry's start reads as a corrupt entry (or
// worse, as a valid one: callers pass only offsets they recorded).
func ScanFrom(fsys wal.FS, name string, from, length int64, fn func(off int64, payload []byte) error) error {
	if length == 0 {
		return nil
	}
	if from < HeaderLen || from > length {
		return fmt.Errorf("%w: %s: scan from offset %d of a ledger of %d bytes", ErrCorrupt, name, from, length)
	}
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("ledger: open %s: %w", name, err)
	}
	defer f.Close()
	var magic [len(Magic)]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != Magic {
		return fmt.Errorf("%w: %s: bad magic", ErrCorrupt, name)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, from, length-from), 1<<16) // not two reads per entry
	var hdr [entryHeader]byte
	var buf []byte
	off := from
	for off < length {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return readErr(name, "entry header", off, err)
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if n > MaxEntry || int64(n) > length-off-entryHeader {
			return fmt.Errorf("%w: %s: entry at offset %d claims %d bytes", ErrCorrupt, name, off, n)
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return readErr(name, "entry", off, err)
		}
		if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			return fmt.Errorf("%w: %s: entry at offset %d: checksum mismatch", ErrCorrupt, name, off)
		}
		if err := fn(off, buf); err != nil {
			return err
		}
		off += entryHeader + int64(n)
	}
	return nil
}

// ReadEntries is Scan into memory: it reads ledger name up to length with
// one read and returns its payloads, each a view of that one buffer (no
// copy per entry), checked as Scan checks them. A restart reads a
// snapshot's table files so.
func ReadEntries(fsys wal.FS, name string, length int64) ([][]byte, error) {
	if length == 0 {
		return nil, nil
	}
	if length < HeaderLen {
		return nil, fmt.Errorf("%w: %s: length %d is shorter than the header", ErrCorrupt, name, length)
	}
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", name, err)
	}
	defer f.Close()
	b := make([]byte, length)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s holds %d bytes, %d expected", ErrCorrupt, name, n, length)
		}
		return nil, fmt.Errorf("ledger: %s: %w", name, err)
	}
	if string(b[:HeaderLen]) != Magic {
		return nil, fmt.Errorf("%w: %s: bad magic", ErrCorrupt, name)
	}
	var out [][]byte
	for off := HeaderLen; off < length; {
		if length-off < entryHeader {
			return nil, fmt.Errorf("%w: %s: entry header at offset %d: %d bytes left", ErrCorrupt, name, off, length-off)
		}
		n := binary.LittleEndian.Uint32(b[off:])
		if n > MaxEntry || int64(n) > length-off-entryHeader {
			return nil, fmt.Errorf("%w: %s: entry at offset %d claims %d bytes", ErrCorrupt, name, off, n)
		}
		p := b[off+entryHeader : off+entryHeader+int64(n) : off+entryHeader+int64(n)]
		if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(b[off+4:]) {
			return nil, fmt.Errorf("%w: %s: entry at offset %d: checksum mismatch", ErrCorrupt, name, off)
		}
		out = append(out, p)
		off += entryHeader + int64(n)
	}
	return out, nil
}

// readErr is the error of a read that came short: a file shorter than the
// length it was given to read is corrupt (torn), a failing read is not.
func readErr(name, what string, off int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: %s at offset %d: %v", ErrCorrupt, name, what, off, err)
	}
	return fmt.Errorf("ledger: %s: %s at offset %d: %w", name, what, off, err)
}
