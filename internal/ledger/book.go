package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dtx-dev/dtx/internal/chunk"
	"github.com/dtx-dev/dtx/wal"
)

// FileName is the name of a service's ledger in its log directory.
const FileName = "ledger"

// Book is a service's ledger of committed entries: the entries in its
// ledger file, up to the length the loop knows to be durable, then the
// entries committed since (the tail, in memory). Until Attach, everything
// is in memory (a store used without a log directory, or restored from a
// snapshot written before the ledger file existed).
//
// The loop owns the Book (Append, Capture, Each, Restore, Attach); a
// Capture's Flush runs off the loop, one at a time (the snapshots of a
// service are serialized), and tells the loop through an atomic mark which
// entries it may drop from the tail: the loop drops them at its next call.
type Book[T any] struct {
	tail   chunk.List[T]
	count  int   // entries in the file, as the loop knows them
	length int64 // the file's length covering them
	file   *File
	fsys   wal.FS
	name   string
	mark   atomic.Pointer[mark]
	held   atomic.Int64 // tail.Len(), for readers off the loop
	encode func(b []byte, v T) []byte
	decode func([]byte) (T, error)
}

type mark struct {
	length int64
	count  int
}

// NewBook returns an empty in-memory book whose entries encode and decode
// as given (decode must not keep its argument).
func NewBook[T any](encode func(b []byte, v T) []byte, decode func([]byte) (T, error)) *Book[T] {
	return &Book[T]{encode: encode, decode: decode}
}

// apply drops from the tail what a finished Flush put in the file.
func (b *Book[T]) apply() {
	m := b.mark.Swap(nil)
	if m == nil || m.count <= b.count {
		return
	}
	drop := m.count - b.count
	var rest chunk.List[T]
	i := 0
	for v := range b.tail.All() {
		if i >= drop {
			rest.Append(v)
		}
		i++
	}
	b.tail, b.count, b.length = rest, m.count, m.length
	b.held.Store(int64(rest.Len()))
}

// Append adds a committed entry (on the loop).
func (b *Book[T]) Append(v T) {
	if b.mark.Load() != nil {
		b.apply()
	}
	b.tail.Append(v)
	if b.file != nil {
		b.held.Add(1)
	}
}

// Held returns the number of entries held in memory since the book was
// attached to its file, as of the loop's last call: safe off the loop (a
// snapshotter reads it to decide when to move them to the file). It is 0
// for a book without a file, which has nowhere to move them.
func (b *Book[T]) Held() int { return int(b.held.Load()) }

// Len returns the number of entries, in the file and in memory.
func (b *Book[T]) Len() int {
	b.apply()
	return b.count + b.tail.Len()
}

// Tail returns the number of entries held in memory.
func (b *Book[T]) Tail() int {
	b.apply()
	return b.tail.Len()
}

// FileLen returns the ledger file's length as the loop knows it: the
// length Restore recorded, or Attach found, or the last Flush made.
func (b *Book[T]) FileLen() int64 {
	b.apply()
	return b.length
}

// Attached reports whether the book has a ledger file.
func (b *Book[T]) Attached() bool { return b.file != nil }

// Restore records what a snapshot said of the file: its length and
// entry count (0, 0: no file yet), before Attach; entries the snapshot
// held itself (one taken without a file) are Appended.
func (b *Book[T]) Restore(length int64, count int) {
	b.length, b.count = length, count
}

// Attach opens the ledger file name in fsys and cuts it to the length
// Restore recorded: entries past it belong to a snapshot that never
// landed, and the log replay after the loaded snapshot rebuilds them in
// the tail. Call it after the snapshot is restored (or none was found),
// before the log is replayed.
func (b *Book[T]) Attach(fsys wal.FS, name string) error {
	if b.file != nil {
		return errors.New("ledger: already attached")
	}
	if b.count == 0 && b.length > HeaderLen {
		return fmt.Errorf("%w: %s: a length of %d with no entry", ErrCorrupt, name, b.length)
	}
	f, err := Open(fsys, name, b.length)
	if err != nil {
		return err
	}
	b.file, b.fsys, b.name, b.length = f, fsys, name, f.Len()
	b.held.Store(int64(b.tail.Len()))
	return nil
}

// Each calls fn with every entry in commit order: the file's, streamed
// (never all in memory), then the tail's.
func (b *Book[T]) Each(fn func(T) error) error {
	b.apply()
	if b.file != nil {
		n := 0
		err := Scan(b.fsys, b.name, b.length, func(p []byte) error {
			v, err := b.decode(p)
			if err != nil {
				return fmt.Errorf("%w: %s: entry %d: %v", ErrCorrupt, b.name, n, err)
			}
			n++
			return fn(v)
		})
		if err != nil {
			return err
		}
		if n != b.count {
			return fmt.Errorf("%w: %s: %d entries up to length %d, the snapshot says %d", ErrCorrupt, b.name, n, b.length, b.count)
		}
	}
	for v := range b.tail.All() {
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

// Capture is a book as a snapshot captured it on the loop.
type Capture[T any] struct {
	b      *Book[T]
	tail   chunk.List[T] // frozen
	count  int
	length int64
}

// Capture freezes the tail (a copy of its chunk headers) for a snapshot
// (on the loop).
func (b *Book[T]) Capture() Capture[T] {
	b.apply()
	return Capture[T]{b: b, tail: b.tail.Frozen(), count: b.count, length: b.length}
}

// Flush, off the loop and before the snapshot is written, appends the
// captured tail to the ledger file and fsyncs it, and returns the length
// and entry count the snapshot records. Without a file it returns the
// captured entries instead, for the snapshot to hold (length 0).
func (c Capture[T]) Flush() (length int64, count int, inline []T, err error) {
	b := c.b
	if b.file == nil {
		inline = make([]T, 0, c.tail.Len())
		for v := range c.tail.All() {
			inline = append(inline, v)
		}
		return 0, 0, inline, nil
	}
	if b.file.Len() != c.length {
		return 0, 0, nil, fmt.Errorf("ledger: %s: the file is %d bytes but the capture expects %d (two snapshots at once?)", b.name, b.file.Len(), c.length)
	}
	payloads := make([][]byte, 0, c.tail.Len())
	var buf []byte
	for v := range c.tail.All() {
		start := len(buf)
		buf = b.encode(buf, v)
		payloads = append(payloads, buf[start:len(buf):len(buf)])
	}
	// buf may have moved while growing: cut the payloads again.
	off := 0
	for i, p := range payloads {
		payloads[i] = buf[off : off+len(p) : off+len(p)]
		off += len(p)
	}
	n, err := b.file.Append(payloads)
	if err != nil {
		return 0, 0, nil, err
	}
	count = c.count + c.tail.Len()
	// Held drops now, before the mark is stored (the loop's apply, which
	// may run as soon as it is, stores the exact count).
	b.held.Add(-int64(c.tail.Len()))
	b.mark.Store(&mark{length: n, count: count})
	return n, count, nil, nil
}

// Close closes the ledger file, if any.
func (b *Book[T]) Close() error {
	if b.file == nil {
		return nil
	}
	return b.file.Close()
}

// AppendString appends s with its uvarint length, for entry encoders.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Reader decodes what AppendString and binary.AppendVarint wrote; the
// first error sticks.
type Reader struct {
	B   []byte
	Err error
}

// String reads a string.
func (r *Reader) String() string {
	n := r.Uvarint()
	if r.Err != nil {
		return ""
	}
	if n > uint64(len(r.B)) {
		r.Err = errors.New("string past the end")
		return ""
	}
	s := string(r.B[:n])
	r.B = r.B[n:]
	return s
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.Err != nil {
		return 0
	}
	v, k := binary.Uvarint(r.B)
	if k <= 0 {
		r.Err = errors.New("bad varint")
		return 0
	}
	r.B = r.B[k:]
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	if r.Err != nil {
		return 0
	}
	v, k := binary.Varint(r.B)
	if k <= 0 {
		r.Err = errors.New("bad varint")
		return 0
	}
	r.B = r.B[k:]
	return v
}

// Done returns the first error, or one if bytes are left over.
func (r *Reader) Done() error {
	if r.Err == nil && len(r.B) != 0 {
		r.Err = fmt.Errorf("%d bytes left over", len(r.B))
	}
	return r.Err
}

// TailAt returns a pointer to the entry i of the tail (0 <= i < Tail()).
func (b *Book[T]) TailAt(i int) *T {
	b.apply()
	return b.tail.At(i)
}
