package wal

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by calls on a Log after Close or Crash.
	ErrClosed = errors.New("wal: log closed")
	// ErrCorrupt is wrapped by every *CorruptionError: the log holds a bad
	// record that is not a torn tail. It is never repaired automatically.
	ErrCorrupt = errors.New("wal: corrupt log")
	// ErrFailed is wrapped, together with the original cause, by every error
	// after a write or sync of the log failed. The failure is final: the Log
	// accepts no more appends and never retries a sync; the process should
	// crash and recover from the log.
	ErrFailed = errors.New("wal: log failed")
	// ErrReadOnly is returned by calls that would change a Log opened with
	// Config.ReadOnly.
	ErrReadOnly = errors.New("wal: log is read-only")
	// ErrInvalidEntry is wrapped by the error for an Entry with type 0 or
	// data over Config.MaxRecordSize; nothing of that call is appended.
	ErrInvalidEntry = errors.New("wal: invalid entry")
	// ErrMissing is wrapped by every *MissingError.
	ErrMissing = errors.New("wal: records missing")
)

// CorruptionError reports a bad record (or segment) that is not a torn
// tail: a bad record followed by a valid one, a bad record in a segment that
// is not the last, a gap in the sequence numbers, a bad segment header. It
// wraps ErrCorrupt.
type CorruptionError struct {
	Segment string // path of the segment file
	Offset  int64  // byte offset in that file of the bad record or header
	Seq     uint64 // sequence number expected at Offset (0 if unknown)
	Reason  string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: corrupt log: segment %s offset %d (expected seq %d): %s",
		e.Segment, e.Offset, e.Seq, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// MissingError is OpenFrom's error for a log that no longer holds the
// record it was asked to start from: its oldest kept segment starts after
// it. It wraps ErrMissing.
type MissingError struct {
	Dir   string // the log's directory
	From  uint64 // the seq asked for
	First uint64 // the seq the oldest kept segment starts at
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("wal: records missing: the log in %s starts at record %d, after record %d",
		e.Dir, e.First, e.From)
}

// Unwrap makes errors.Is(err, ErrMissing) true.
func (e *MissingError) Unwrap() error { return ErrMissing }

// failedError is the sticky error of a Log whose write or sync failed.
func failedError(op string, cause error) error {
	return fmt.Errorf("%w: %s: %w", ErrFailed, op, cause)
}
