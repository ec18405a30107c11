package wal

import (
	"errors"
	"fmt"
	"log/slog"
)

// Defaults of Config; a zero field means its default.
const (
	DefaultSegmentSize   = 64 << 20
	DefaultMaxRecordSize = 16 << 20
	DefaultBufferSize    = 1 << 20
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
	// (default 64 MiB). A batch is split at record boundaries so that no
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
	// FS is the file system (default: the OS, see OSFS). Tests use a MemFS.
	FS FS
	// ReadOnly opens the log for reading only (the dump command): nothing is
	// created, removed or repaired; a torn tail is reported by TornTail and
	// skipped, not cut; Append, Sync and Compact fail with ErrReadOnly.
	ReadOnly bool
	// Logger receives recovery notices (torn tail cut, leftover files
	// removed) and failures. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of a log in dir on the OS file
// system with every default spelled out.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:           dir,
		SegmentSize:   DefaultSegmentSize,
		MaxRecordSize: DefaultMaxRecordSize,
		BufferSize:    DefaultBufferSize,
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
