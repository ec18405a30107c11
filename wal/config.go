package wal

import (
	"errors"
	"fmt"
	"log/slog"
)

// Defaults of Config; a zero field means its default.
const (
	DefaultSegmentSize   = 8 << 20
	DefaultMaxRecordSize = 16 << 20
	DefaultBufferSize    = 1 << 20
	// DefaultPreallocSize is the zero-fill chunk of DefaultConfig (Config's
	// zero value means no preallocation).
	DefaultPreallocSize = 4 << 20
	// MinSegmentSize is the smallest SegmentSize accepted (small sizes are
	// for tests that want many rollovers).
	MinSegmentSize = SegmentHeaderSize + RecordHeaderSize
)

// Config configures a Log. Zero fields take their defaults.
type Config struct {
	// Dir is the directory of the segment files. Open creates it if needed
	// (unless ReadOnly). Required.
	Dir string
	// SegmentSize is the size at which the log rolls over to a new segment
	// (default 8 MiB: a restart reads the last segment whole, and a replay
	// from a snapshot the segment it lies in). A batch is split at record boundaries so that no
	// segment grows past it, except that a record larger than SegmentSize
	// gets a segment of its own.
	SegmentSize int64
	// MaxRecordSize caps the data of one record (default 16 MiB, at most
	// MaxRecordSizeLimit). Append rejects a larger entry; on read, a length
	// field above it is damage, so a bad header never makes the reader
	// allocate more than this. Open a log with at least the cap it was
	// written with.
	MaxRecordSize int
	// BufferSize bounds the bytes of records appended with AppendNoSync that
	// may wait in memory (default 1 MiB); an AppendNoSync that goes past it
	// blocks until they are written and synced.
	BufferSize int
	// PreallocSize, if positive, makes the log preallocate the active
	// segment: it writes and syncs zeros ahead of the records, in chunks of
	// this many bytes (never past SegmentSize), so that an append overwrites
	// durable zeros instead of growing the file, and its fdatasync need not
	// commit a size change. A new segment gets its first chunk before it is
	// renamed into place; later chunks are written in the background when
	// less than half a chunk of room is left. A segment is truncated to its
	// records when it is sealed and on Close. 0 (the zero value) turns it
	// off; DefaultConfig sets DefaultPreallocSize.
	PreallocSize int64
	// FS is the file system (default: the OS, see OSFS). Tests use a MemFS.
	FS FS
	// ReadOnly opens the log for reading only (the dump command): nothing is
	// created, removed or repaired; a torn tail is reported by TornTail and
	// skipped, not cut; Append, Sync and Compact fail with ErrReadOnly.
	ReadOnly bool
	// Logger receives recovery notices (torn tail cut, leftover files
	// removed) and failures. Default: discard.
	Logger *slog.Logger

	// inlinePrealloc makes the zero-fill run in the leader instead of a
	// goroutine: deterministic I/O order for the crash tests.
	inlinePrealloc bool
}

// DefaultConfig returns the configuration of a log in dir on the OS file
// system with every default spelled out.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:           dir,
		SegmentSize:   DefaultSegmentSize,
		MaxRecordSize: DefaultMaxRecordSize,
		BufferSize:    DefaultBufferSize,
		PreallocSize:  DefaultPreallocSize,
		FS:            OSFS(),
	}
}

// Validate reports the first invalid field of c. Zero fields are valid:
// they mean their default.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("wal: Config.Dir is empty")
	case c.SegmentSize < 0 || c.SegmentSize > 0 && c.SegmentSize < MinSegmentSize:
		return fmt.Errorf("wal: Config.SegmentSize %d is below the minimum %d", c.SegmentSize, MinSegmentSize)
	case c.MaxRecordSize < 0 || c.MaxRecordSize > MaxRecordSizeLimit:
		return fmt.Errorf("wal: Config.MaxRecordSize %d is outside [1, %d]", c.MaxRecordSize, MaxRecordSizeLimit)
	case c.BufferSize < 0:
		return fmt.Errorf("wal: Config.BufferSize %d is negative", c.BufferSize)
	case c.PreallocSize < 0:
		return fmt.Errorf("wal: Config.PreallocSize %d is negative", c.PreallocSize)
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.SegmentSize == 0 {
		c.SegmentSize = DefaultSegmentSize
	}
	if c.MaxRecordSize == 0 {
		c.MaxRecordSize = DefaultMaxRecordSize
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.FS == nil {
		c.FS = OSFS()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
