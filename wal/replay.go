package wal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Replay calls fn for every record of the log in seq order, from the oldest
// kept segment on, and stops at the first error fn returns (returned as
// is). Record.Data is a fresh slice fn may keep. Replay visits the records
// written to the segment files when it reaches them: after Open, the whole
// recovered log; records appended with AppendNoSync are visited once a Sync
// or Append wrote them; records appended while Replay runs may or may not
// be visited. It checks every record again (or for the first time, in a
// segment OpenFrom did not read: there, as in Open, zeros from a bad
// record to the end of the file are the segment's end): a bad one is a
// *CorruptionError. fn must not call Compact or Close (Replay holds off
// Compact until it returns).
func (l *Log) Replay(fn func(Record) error) error { return l.ReplayFrom(0, fn) }

// ReplayFrom is Replay of the records with Seq >= from only: segments
// wholly before from are not read, and the records before from in the
// first segment read are checked but neither copied nor handed to fn (a
// snapshot's tail is replayed without paying for what it covers).
func (l *Log) ReplayFrom(from uint64, fn func(Record) error) error {
	return l.replayFrom(from, true, fn)
}

// ReplayFromNoCopy is ReplayFrom without a copy of each record's data:
// Record.Data is valid only during the call to fn, which must not keep it
// (it lies in the buffer the segment is read through). For a caller that
// decodes each record into values of its own, as recovery does: it spares
// an allocation and a copy per record.
func (l *Log) ReplayFromNoCopy(from uint64, fn func(Record) error) error {
	return l.replayFrom(from, false, fn)
}

func (l *Log) replayFrom(from uint64, clone bool, fn func(Record) error) error {
	l.compactMu.RLock()
	defer l.compactMu.RUnlock()
	l.mu.Lock()
	closed := l.mu.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	l.segMu.Lock()
	segs := slices.Clone(l.segs)
	l.segMu.Unlock()
	if len(segs) == 0 {
		return nil
	}
	for len(segs) > 1 && segs[1].first <= from {
		segs = segs[1:]
	}
	expected := segs[0].first
	var buf []byte
	for _, seg := range segs {
		next, b, err := l.replaySegment(seg, expected, from, clone, buf, fn)
		if err != nil {
			return err
		}
		buf, expected = b, next
	}
	return nil
}

func (l *Log) replaySegment(seg *segment, expected, from uint64, clone bool, buf []byte, fn func(Record) error) (uint64, []byte, error) {
	size := seg.size.Load()
	f, err := l.fs.OpenFile(seg.path, os.O_RDONLY, 0)
	if err != nil {
		return 0, buf, fmt.Errorf("wal: replay: %w", err)
	}
	defer f.Close()
	if seg.unchecked {
		// Open did not read it: where its records end is not known.
		fi, err := f.Stat()
		if err != nil {
			return 0, buf, fmt.Errorf("wal: replay: stat segment: %w", err)
		}
		size = fi.Size()
	}
	r := newSegReader(f, seg.path, size, l.cfg.MaxRecordSize, buf)
	first, reason, err := r.header()
	switch {
	case err != nil:
		return 0, r.buf, err
	case reason == "" && first != expected:
		reason = fmt.Sprintf("segment header names first seq %d, want %d", first, expected)
	}
	if reason != "" {
		return 0, r.buf, &CorruptionError{Segment: seg.path, Offset: 0, Seq: expected, Reason: reason}
	}
	sc, err := r.scan(first, func(off int64, fr recordFrame) error {
		if fr.seq < from {
			return nil
		}
		data := fr.data
		if clone {
			data = bytes.Clone(data)
		}
		return fn(Record{Seq: fr.seq, Type: fr.typ, Data: data})
	})
	if err != nil {
		return 0, r.buf, err
	}
	if bad := sc.bad; bad != nil {
		reason := bad.reason
		if seg.unchecked {
			// As walk: zeros from the bad byte to the end of a sealed
			// segment are the preallocated room of a rollover that crashed
			// before its truncation, not damage (a record lost there shows
			// as a seq gap at the next segment).
			nz, err := r.nextNonZero(bad.off)
			if err != nil {
				return 0, r.buf, err
			}
			if nz == size {
				return sc.next, r.buf, nil
			}
			reason += " (in a segment that is not the last)"
		}
		return 0, r.buf, &CorruptionError{Segment: seg.path, Offset: bad.off, Seq: bad.seq, Reason: reason}
	}
	return sc.next, r.buf, nil
}

// Compact tells the log that records with Seq < upTo are no longer needed:
// it removes, oldest first, every segment all of whose records are below
// upTo, never the active segment, syncing the directory after each
// removal (so a crash leaves a contiguous log). After a restart, Replay
// starts at the oldest kept segment. A failed directory sync is final (see
// ErrFailed).
func (l *Log) Compact(upTo uint64) error {
	l.mu.Lock()
	err := l.checkLocked()
	l.mu.Unlock()
	if err != nil {
		return err
	}
	l.compactMu.Lock()
	defer l.compactMu.Unlock()
	l.segMu.Lock()
	var victims []*segment
	for i := 0; i+1 < len(l.segs) && l.segs[i+1].first <= upTo; i++ {
		victims = append(victims, l.segs[i])
	}
	l.segMu.Unlock()
	for _, seg := range victims {
		if err := l.fs.Remove(seg.path); err != nil {
			return fmt.Errorf("wal: compact: %w", err)
		}
		l.segMu.Lock()
		if l.segs[0] != seg {
			panic("wal: compacted segment is not the oldest")
		}
		l.segs = l.segs[1:]
		l.segMu.Unlock()
		if err := l.fs.SyncDir(l.cfg.Dir); err != nil {
			err = failedError("compact: sync dir", err)
			l.mu.Lock()
			if l.mu.failed == nil {
				l.mu.failed = err
			}
			l.mu.Unlock()
			return err
		}
	}
	return nil
}

// Dump writes every record of the log in cfg.Dir to w, one line each, in
// seq order, for the operator's "dtx log" command. It opens nothing for
// writing (cfg.ReadOnly is implied) and repairs nothing. format renders one
// record; nil means DefaultFormat; Record.Data is valid only during the
// call. A torn tail is reported in a last line starting "# torn tail".
// Corruption is reported in a line starting "# corrupt" after the records
// before it, and returned as the *CorruptionError.
func Dump(cfg Config, w io.Writer, format func(Record) string) error {
	cfg.ReadOnly = true
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if format == nil {
		format = DefaultFormat
	}
	bw := bufio.NewWriter(w)
	listing, err := listDir(cfg.FS, cfg.Dir)
	if err != nil {
		return err
	}
	res, err := walk(cfg.FS, cfg.Dir, listing.firsts, 0, cfg.MaxRecordSize,
		func(_ string, _ int64, fr recordFrame) error {
			_, err := fmt.Fprintln(bw, format(Record{Seq: fr.seq, Type: fr.typ, Data: fr.data}))
			return err
		})
	if ce := (*CorruptionError)(nil); errors.As(err, &ce) {
		fmt.Fprintf(bw, "# corrupt: %s\n", ce.Error())
	}
	if err != nil {
		bw.Flush()
		return err
	}
	switch t := res.torn; {
	case t != nil:
		fmt.Fprintf(bw, "# torn tail: segment %s offset %d: %d bytes after the last whole record (seq %d): %s\n",
			filepath.Base(t.Segment), t.Offset, t.Size-t.Offset, t.Seq-1, t.Reason)
	case len(res.segs) > 0:
		fmt.Fprintf(bw, "# end: %d segments, seqs %d..%d\n", len(res.segs), res.segs[0].first, res.next-1)
	default:
		fmt.Fprintf(bw, "# empty log\n")
	}
	return bw.Flush()
}

// DefaultFormat renders a record as "seq type=T len=N data" with the data
// quoted, cut after 64 bytes.
func DefaultFormat(r Record) string {
	const maxShown = 64
	if len(r.Data) > maxShown {
		return fmt.Sprintf("%d type=%d len=%d %q...", r.Seq, r.Type, len(r.Data), r.Data[:maxShown])
	}
	return fmt.Sprintf("%d type=%d len=%d %q", r.Seq, r.Type, len(r.Data), r.Data)
}
