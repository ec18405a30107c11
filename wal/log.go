package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// Entry is one record to append.
type Entry struct {
	Type uint8  // caller-defined record type, 1..255 (0 is invalid)
	Data []byte // payload, at most Config.MaxRecordSize bytes; copied by Append
}

// Record is one record read back.
type Record struct {
	Seq  uint64 // 1-based, dense, increasing across segments and restarts
	Type uint8
	// Data is a fresh slice that the Replay callback may keep. (Dump's
	// format function, and the fn of ReplayFromNoCopy and OpenFrom, get a
	// slice valid only during the call.)
	Data []byte
}

// Stats are counters of a Log since Open, for benchmarks and metrics.
type Stats struct {
	Appends      uint64 // Append and AppendNoSync calls that appended records (Sync excluded)
	Entries      uint64 // records they appended
	Batches      uint64 // group-commit rounds (one write and at most one sync each, barring rollovers)
	Writes       uint64 // write calls to segment files
	BytesWritten uint64 // record bytes written to segment files
	Syncs        uint64 // fdatasync calls on segment files, rollovers and new segment headers included
	// SyncedEntries counts records made durable by group-commit syncs;
	// SyncedEntries/Batches with a sync is the batching factor.
	SyncedEntries     uint64
	GroupSyncs        uint64 // group-commit rounds that synced
	MaxEntriesPerSync uint64 // most records made durable by one group-commit sync
	Rollovers         uint64 // new segments created after Open
	// PreallocBytes and PreallocSyncs count the zeros written ahead of the
	// records (Config.PreallocSize) and the syncs that made them, or a
	// truncation of them, durable; they are not in Writes, BytesWritten or
	// Syncs.
	PreallocBytes uint64
	PreallocSyncs uint64
}

// AvgEntriesPerSync returns the mean number of records made durable by one
// group-commit sync.
func (s Stats) AvgEntriesPerSync() float64 {
	if s.GroupSyncs == 0 {
		return 0
	}
	return float64(s.SyncedEntries) / float64(s.GroupSyncs)
}

// segment is one segment file of the log.
type segment struct {
	first uint64 // seq of its first record (in its name and header)
	path  string
	// size is the offset after its last whole written record: stored by the
	// writer after each write, loaded by Replay.
	size atomic.Int64
	// synced is how many bytes are durable. Guarded by Log.flushMu.
	synced int64
	// phys is the size of the file: the end of its records, or past it
	// when zeros were written ahead (preallocation). Set by walk and
	// createSegment; for the active segment, Log.pa tracks it.
	phys int64
	// unchecked is set for a sealed segment whose records Open never read
	// (OpenFrom skips the segments before its seq): size, synced and phys
	// are unknown, and Replay reads it to the end of the file, zero tail
	// allowed, as walk would have. Set before the Log is returned, never
	// changed.
	unchecked bool
}

// batch is what the callers of one group-commit round wait on: the round
// of records appended while the previous round was writing and syncing. One
// of its callers receives lead and becomes the leader that writes and syncs
// it. A batch exists only if someone waits: a caller that finds no leader
// leads at once, with no batch and no allocation.
type batch struct {
	done chan struct{} // closed when the round is over; err is then set
	lead chan struct{} // capacity 1: the leader token, handed over by the previous leader
	err  error
	// Guarded by Log.mu.
	leadSent bool
	finished bool
}

func newBatch() *batch {
	return &batch{done: make(chan struct{}), lead: make(chan struct{}, 1)}
}

// finishLocked ends the round with err and wakes its callers.
func (b *batch) finishLocked(err error) {
	b.err = err
	b.finished = true
	close(b.done)
}

// Log is a segmented append-only log with group commit. All methods are
// safe for concurrent use. See the package documentation for the format and
// the recovery rules.
type Log struct {
	cfg    Config
	fs     FS
	logger *slog.Logger
	torn   *TornTail

	st counters

	mu struct {
		sync.Mutex
		buf       []byte // frames of the records not yet handed to a leader
		spare     []byte // the other buffer, while no leader holds it
		cur       *batch // callers waiting for the records in buf, or nil
		inflight  *batch // callers waiting for the round a leader is writing, or nil
		inflLast  uint64 // last seq of the round a leader is writing
		writing   bool   // a leader is writing and syncing a round
		nextSeq   uint64 // seq of the next record
		takenSeq  uint64 // last seq handed to a leader
		syncedSeq uint64 // every record up to it is durable
		flushing  bool   // a leader exists (is writing, or holds the token)
		failed    error  // sticky; wraps ErrFailed
		closed    bool
	}

	// flushMu is held by the leader while it writes and syncs, and by Close
	// and Crash while they close the active file. It guards active, file and
	// segment.synced.
	flushMu sync.Mutex
	active  *segment
	file    File // the active segment, opened for append; nil once closed

	// segMu guards segs (appended to on rollover, trimmed by Compact).
	segMu sync.Mutex
	segs  []*segment

	// compactMu keeps Compact from removing segments under a Replay.
	compactMu sync.RWMutex

	// pa is the preallocation state of the active segment.
	pa struct {
		sync.Mutex
		cond      sync.Cond // signalled when an extension ends
		extending bool      // zeros are being written at [alloc, phys)
		alloc     int64     // bytes [0, alloc) of the file exist durably (records or synced zeros)
		phys      int64     // size of the file (or what it will be when the extension ends)
		err       error     // a failed extension; wraps ErrFailed
	}
}

type counters struct {
	appends, entries, batches, writes, bytes, syncs  atomic.Uint64
	syncedEntries, groupSyncs, maxPerSync, rollovers atomic.Uint64
	preallocBytes, preallocSyncs                     atomic.Uint64
}

// Open opens the log in cfg.Dir, creating it if needed. It reads every
// segment and checks every record; a torn tail of the last segment is cut
// (made durable before Open returns) and appends continue after the last
// whole record. Corruption fails Open with a *CorruptionError naming the
// segment file and offset. Open makes everything it found durable (it syncs
// the last segment and the directory), so records it lets Replay see
// survive a power loss even if the process before never synced them.
func Open(cfg Config) (*Log, error) {
	return openLog(cfg, 0, nil)
}

// OpenFrom is Open and ReplayFromNoCopy(from, fn) in one pass, for a
// restart from a snapshot that covers the records before from: each
// segment is read once, and the segments before the one holding from not
// at all.
//
// The sealed segments all of whose records are below from (known from the
// segment file names: a segment ends where the next begins) are not read:
// only their headers are checked (a header must name the seq of its file
// name). Their records are checked by a later Replay, as Open would have:
// damage in them does not fail OpenFrom. The segments from the one holding
// from on are read and checked as Open reads them (torn tail, zero tail,
// corruption), and fn is called, during that read, for every valid record
// with Seq >= from, in order; Record.Data is valid only during the call
// (as with ReplayFromNoCopy). An error of fn stops OpenFrom, which returns
// it as is. Every record fn sees is durable, as with Open then Replay:
// OpenFrom syncs the last segment and the directory before it reads
// (Open syncs them after; OpenFrom syncs the last segment again only if
// it cuts a torn tail). The rest of what Open does after reading the
// segments (cutting a torn tail, preallocating) it does after the last
// call to fn. With Config.ReadOnly nothing is synced, as with Open.
//
// fn may have seen records when OpenFrom fails: with corruption (a
// *CorruptionError, found after records before it were handed over), an
// error of fn, or a failure after the read. They are the caller's to
// discard; on any error, no Log is returned and nothing is left open.
//
// from 0 means 1. If the log's oldest kept segment starts after from (the
// records from..FirstSeq-1 are gone: compacted, or removed), OpenFrom
// fails with a *MissingError before calling fn and before changing
// anything on disk. If the log ends before from, fn is not called (LastSeq
// tells the caller so).
func OpenFrom(cfg Config, from uint64, fn func(Record) error) (*Log, error) {
	return openLog(cfg, max(from, 1), fn)
}

// openLog is Open, and with fn not nil OpenFrom of from.
func openLog(cfg Config, from uint64, fn func(Record) error) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l := &Log{cfg: cfg, fs: cfg.FS, logger: cfg.Logger.With("wal", cfg.Dir)}
	l.pa.cond.L = &l.pa.Mutex
	var visit func(string, int64, recordFrame) error
	if fn != nil {
		visit = func(_ string, _ int64, fr recordFrame) error {
			if fr.seq < from {
				return nil
			}
			return fn(Record{Seq: fr.seq, Type: fr.typ, Data: fr.data})
		}
	}
	if err := l.open(from, visit); err != nil {
		return nil, err
	}
	return l, nil
}

// open recovers the log (see Open). The segments before the one holding
// seq from are not read (see walk); visit sees the records read.
func (l *Log) open(from uint64, visit func(string, int64, recordFrame) error) error {
	fsys, dir := l.fs, l.cfg.Dir
	listing, err := listDir(fsys, dir)
	if err != nil && (l.cfg.ReadOnly || !isNotExist(err)) {
		return err
	}
	if len(listing.firsts) > 0 && listing.firsts[0] > from && from > 0 {
		return &MissingError{Dir: dir, From: from, First: listing.firsts[0]}
	}
	if err != nil { // the directory does not exist: create it, durably
		if err := fsys.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("wal: create %s: %w", dir, err)
		}
		if err := fsys.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			return fmt.Errorf("wal: sync parent of %s: %w", dir, err)
		}
	}
	if !l.cfg.ReadOnly && len(listing.tmps) > 0 {
		// Leftovers of a segment creation that crashed before its rename:
		// never part of the log.
		for _, name := range listing.tmps {
			if err := fsys.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("wal: remove leftover: %w", err)
			}
			l.logger.Info("wal: removed leftover temporary file", "file", name)
		}
		if err := fsys.SyncDir(dir); err != nil {
			return fmt.Errorf("wal: sync dir: %w", err)
		}
	}
	// early is, for OpenFrom, the last segment, synced with the directory
	// before the walk: visit hands records over as the walk reads them,
	// and what the previous process wrote may still be only in the page
	// cache. Synced first, every record handed over is durable, as Open
	// promises of what Replay sees. (Every other segment was synced when
	// it was sealed.) The walk reads what was synced: nothing else writes.
	var early File
	if visit != nil && !l.cfg.ReadOnly && len(listing.firsts) > 0 {
		path := filepath.Join(dir, SegmentName(listing.firsts[len(listing.firsts)-1]))
		if early, err = fsys.OpenFile(path, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("wal: open active segment: %w", err)
		}
		if err := early.Sync(); err != nil {
			early.Close()
			return fmt.Errorf("wal: sync active segment: %w", err)
		}
		if err := fsys.SyncDir(dir); err != nil {
			early.Close()
			return fmt.Errorf("wal: sync dir: %w", err)
		}
	}
	res, err := walk(fsys, dir, listing.firsts, from, l.cfg.MaxRecordSize, visit)
	if err != nil {
		if early != nil {
			early.Close()
		}
		return err
	}
	l.torn = res.torn
	l.logger.Info("wal: opened", "segments", len(res.segs), "unread_segments", res.skip,
		"next_seq", res.next, "read_only", l.cfg.ReadOnly)
	l.mu.nextSeq = res.next
	l.mu.takenSeq = res.next - 1
	l.mu.syncedSeq = res.next - 1
	l.segs = res.segs
	if l.cfg.ReadOnly {
		if t := res.torn; t != nil {
			l.logger.Warn("wal: torn tail (read-only: not repaired)", "segment", t.Segment,
				"offset", t.Offset, "size", t.Size, "reason", t.Reason)
		}
		if len(l.segs) > 0 {
			l.active = l.segs[len(l.segs)-1]
		}
		return nil
	}
	if len(l.segs) == 0 {
		seg, f, err := l.createSegment(res.next)
		if err != nil {
			return err
		}
		l.segs = []*segment{seg}
		l.active, l.file = seg, f
		l.pa.alloc, l.pa.phys = seg.phys, seg.phys
		return nil
	}
	l.active = l.segs[len(l.segs)-1]
	f := early
	if f == nil {
		if f, err = fsys.OpenFile(l.active.path, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("wal: open active segment: %w", err)
		}
	}
	if t := res.torn; t != nil {
		if err := f.Truncate(t.Offset); err != nil {
			f.Close()
			return fmt.Errorf("wal: cut torn tail: %w", err)
		}
		l.active.phys = t.Offset
		l.logger.Warn("wal: cut torn tail", "segment", t.Segment, "offset", t.Offset,
			"bytes", t.Size-t.Offset, "seq", t.Seq, "reason", t.Reason)
	}
	// What the previous process wrote may still be only in the page cache:
	// make it durable before anyone acts on it, with the directory entries
	// (OpenFrom did before the walk: then only a cut needs a sync).
	if early == nil || res.torn != nil {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("wal: sync active segment: %w", err)
		}
	}
	if early == nil {
		if err := fsys.SyncDir(dir); err != nil {
			f.Close()
			return fmt.Errorf("wal: sync dir: %w", err)
		}
	}
	// Any zeros past the records (a preallocated tail walk accepted) are
	// durable now too.
	l.file = f
	l.pa.alloc, l.pa.phys = l.active.phys, l.active.phys
	if l.cfg.PreallocSize > 0 {
		// Extend now rather than make the first append wait for it.
		l.flushMu.Lock()
		err := l.maybeExtendLocked(true)
		l.flushMu.Unlock()
		if errors.Is(err, syscall.ENOSPC) {
			// A full disk (e.g. the zeros a clean stop gave back are
			// taken): preallocation is only a speed-up. Cut what was
			// written of the zeros and go on without it; nothing else was
			// written, so the log has not failed.
			if err = f.Truncate(l.active.phys); err == nil {
				err = f.Sync()
			}
			l.pa.err, l.pa.alloc, l.pa.phys = nil, l.active.phys, l.active.phys
			l.mu.failed = nil
			l.noPrealloc(syscall.ENOSPC)
		}
		if err != nil {
			f.Close()
			l.file = nil
			return fmt.Errorf("wal: preallocate: %w", err)
		}
	}
	return nil
}

// noPrealloc turns preallocation off for the rest of this Log's life.
func (l *Log) noPrealloc(cause error) {
	l.cfg.PreallocSize = 0
	l.logger.Warn("wal: preallocation off: the disk is full", "err", cause)
}

// createSegment creates the segment whose first record will have seq first,
// crash-safely: the header is written and synced under a temporary name,
// renamed, and the directory synced. A crash leaves either no segment or a
// whole, durable, empty one (and maybe a temporary file, removed by Open).
func (l *Log) createSegment(first uint64) (*segment, File, error) {
	path := filepath.Join(l.cfg.Dir, SegmentName(first))
	tmp := path + tmpSuffix
	f, err := l.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("create segment: %w", err)
	}
	fail := func(op string, err error) (*segment, File, error) {
		f.Close()
		// Leave no half-written temporary file behind (Open would remove
		// it, but a start that fails here may never be retried).
		if rerr := l.fs.Remove(tmp); rerr == nil {
			_ = l.fs.SyncDir(l.cfg.Dir)
		}
		return nil, nil, fmt.Errorf("create segment %s: %s: %w", path, op, err)
	}
	h := encodeSegmentHeader(first)
	if n, err := f.WriteAt(h[:], 0); err != nil || n != len(h) {
		if err == nil {
			err = io.ErrShortWrite
		}
		return fail("write header", err)
	}
	phys := int64(SegmentHeaderSize)
	if l.cfg.PreallocSize > 0 {
		// The first chunk of zeros goes in with the header, under the
		// temporary name and with the same sync.
		to := min(phys+l.cfg.PreallocSize, l.cfg.SegmentSize)
		switch err := writeZeros(f, phys, to); {
		case errors.Is(err, syscall.ENOSPC):
			// A full disk: preallocation is only a speed-up. Give the
			// zeros back and go on without it.
			if err := f.Truncate(phys); err != nil {
				return fail("preallocate: give back", err)
			}
			l.noPrealloc(err)
		case err != nil:
			return fail("preallocate", err)
		default:
			l.st.preallocBytes.Add(uint64(to - phys))
			phys = max(phys, to)
		}
	}
	l.st.syncs.Add(1)
	if err := f.Sync(); err != nil {
		return fail("sync", err)
	}
	if err := l.fs.Rename(tmp, path); err != nil {
		return fail("rename", err)
	}
	if err := l.fs.SyncDir(l.cfg.Dir); err != nil {
		return fail("sync dir", err)
	}
	seg := &segment{first: first, path: path, synced: SegmentHeaderSize, phys: phys}
	seg.size.Store(SegmentHeaderSize)
	return seg, f, nil
}

// Append appends entries as consecutive records and returns when they are
// durable (written and fdatasync'ed), with the seq of the last one.
// Concurrent calls share one write and one fdatasync (group commit). The
// entries of one call are contiguous. An invalid entry (type 0, data over
// MaxRecordSize) fails the call with ErrInvalidEntry and appends nothing.
// Append with no entries is Sync. An error wrapping ErrFailed means the log
// is dead (see ErrFailed); the records of the failed call may or may not be
// in the log after a restart.
func (l *Log) Append(entries ...Entry) (lastSeq uint64, err error) {
	return l.append(entries, true)
}

// AppendNoSync appends entries like Append but returns once they are in
// the log's buffer: they become durable with a later Append or Sync (of any
// caller), or are lost in a crash before that. Appending past
// Config.BufferSize of buffered data blocks until the buffer is written and
// synced.
func (l *Log) AppendNoSync(entries ...Entry) (lastSeq uint64, err error) {
	return l.append(entries, false)
}

func (l *Log) append(entries []Entry, force bool) (uint64, error) {
	if len(entries) == 0 {
		if !force {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.mu.nextSeq - 1, l.checkLocked()
		}
		return l.sync()
	}
	for i, e := range entries {
		if e.Type == 0 {
			return 0, fmt.Errorf("%w: entry %d has type 0", ErrInvalidEntry, i)
		}
		if len(e.Data) > l.cfg.MaxRecordSize {
			return 0, fmt.Errorf("%w: entry %d has %d bytes of data, MaxRecordSize is %d",
				ErrInvalidEntry, i, len(e.Data), l.cfg.MaxRecordSize)
		}
	}
	l.mu.Lock()
	if err := l.checkLocked(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	buf, seq := l.mu.buf, l.mu.nextSeq
	for _, e := range entries {
		buf = appendRecord(buf, seq, e.Type, e.Data)
		seq++
	}
	l.mu.buf, l.mu.nextSeq = buf, seq
	last := seq - 1
	l.st.appends.Add(1)
	l.st.entries.Add(uint64(len(entries)))
	if !force && len(buf) < l.cfg.BufferSize {
		l.mu.Unlock()
		return last, nil
	}
	if err := l.commitLocked(); err != nil {
		return 0, err
	}
	return last, nil
}

// Sync makes every record appended so far durable.
func (l *Log) Sync() error {
	_, err := l.sync()
	return err
}

func (l *Log) sync() (uint64, error) {
	l.mu.Lock()
	if err := l.checkLocked(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	target := l.mu.nextSeq - 1
	return target, l.syncLocked()
}

// syncLocked makes every record appended so far durable. l.mu is held on
// entry and released on return.
func (l *Log) syncLocked() error {
	target := l.mu.nextSeq - 1
	if l.mu.syncedSeq >= target {
		l.mu.Unlock()
		return nil
	}
	if l.mu.writing && l.mu.inflLast >= target {
		// The round being written covers everything: wait for it.
		b := l.mu.inflight
		if b == nil {
			b = newBatch()
			l.mu.inflight = b
		}
		l.mu.Unlock()
		<-b.done
		return b.err
	}
	return l.commitLocked()
}

// checkLocked returns why nothing may be appended, if so.
func (l *Log) checkLocked() error {
	switch {
	case l.mu.closed:
		return ErrClosed
	case l.cfg.ReadOnly:
		return ErrReadOnly
	case l.mu.failed != nil:
		return l.mu.failed
	}
	return nil
}

// commitLocked waits until every record appended so far is durable: it
// leads the next round itself if no leader exists, or waits for the current
// leader to hand it the token or for another caller to lead the round.
// l.mu is held on entry and released on return.
func (l *Log) commitLocked() error {
	b := l.mu.cur
	if !l.mu.flushing {
		l.mu.flushing = true
		return l.leadLocked(b)
	}
	if b == nil {
		b = newBatch()
		l.mu.cur = b
	}
	l.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-b.lead:
		l.mu.Lock()
		return l.leadLocked(b)
	}
}

// maxSpareBuffer is the largest batch buffer kept for reuse.
const maxSpareBuffer = 8 << 20

// leadLocked writes and syncs the records appended so far (the round whose
// waiters are b, which may be nil), then wakes b's callers and hands the
// leader token to the next round if anyone waits for it. The caller owns
// the leader role; l.mu is held on entry and released on return.
func (l *Log) leadLocked(b *batch) error {
	if b != nil && b.finished { // ended by Crash while the token was on its way
		l.mu.flushing = false
		l.mu.Unlock()
		return b.err
	}
	if b != l.mu.cur {
		panic("wal: leader of a round that is not the current one")
	}
	data := l.mu.buf
	l.mu.buf, l.mu.spare = l.mu.spare[:0], nil
	last := l.mu.nextSeq - 1
	l.mu.takenSeq = last
	l.mu.cur = nil
	l.mu.inflight, l.mu.inflLast, l.mu.writing = b, last, true
	l.mu.Unlock()

	err := l.flush(data)

	l.mu.Lock()
	l.st.batches.Add(1)
	b = l.mu.inflight // Sync may have attached itself
	l.mu.inflight, l.mu.writing = nil, false
	if cap(data) <= maxSpareBuffer {
		l.mu.spare = data[:0]
	}
	if err == nil && last > l.mu.syncedSeq {
		n := last - l.mu.syncedSeq
		l.mu.syncedSeq = last
		l.st.syncedEntries.Add(n)
		l.st.groupSyncs.Add(1)
		if n > l.st.maxPerSync.Load() {
			l.st.maxPerSync.Store(n)
		}
	}
	if err != nil {
		if errors.Is(err, ErrFailed) && l.mu.failed == nil {
			l.mu.failed = err
			l.logger.Error("wal: log failed; no more appends", "err", err)
		}
		if b != nil {
			b.finishLocked(err)
		}
		// Nothing after a failed write or sync is durable: fail the callers
		// of the next round too, and drop its records.
		if next := l.mu.cur; next != nil {
			next.finishLocked(err)
			l.mu.cur = nil
		}
		l.mu.buf = l.mu.buf[:0]
		l.mu.flushing = false
		l.mu.Unlock()
		return err
	}
	if b != nil {
		b.finishLocked(nil)
	}
	if next := l.mu.cur; next != nil {
		next.leadSent = true
		next.lead <- struct{}{}
	} else {
		l.mu.flushing = false
	}
	l.mu.Unlock()
	return nil
}

// flush writes the frames in data to the active segment, rolling over to
// new segments at record boundaries as needed, and syncs. Errors of writes
// and syncs wrap ErrFailed.
func (l *Log) flush(data []byte) error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	if l.file == nil {
		return ErrClosed
	}
	for len(data) > 0 {
		size := l.active.size.Load()
		n := len(data)
		if room := l.cfg.SegmentSize - size; int64(n) > room {
			n = fitFrames(data, room)
			if n == 0 && size == SegmentHeaderSize {
				n = frameSize(data) // a record larger than a segment: alone in one
			}
			if n == 0 {
				if err := l.rollLocked(frameSeq(data)); err != nil {
					return err
				}
				continue
			}
		}
		if err := l.writeLocked(data[:n]); err != nil {
			return err
		}
		data = data[n:]
		if len(data) > 0 {
			if err := l.rollLocked(frameSeq(data)); err != nil {
				return err
			}
		}
	}
	if l.active.synced < l.active.size.Load() {
		if err := l.syncFileLocked(); err != nil {
			return err
		}
	}
	return l.maybeExtendLocked(l.cfg.inlinePrealloc)
}

// zeros returns a buffer of zeros for preallocation (allocated once, on
// first use).
var zeros = sync.OnceValue(func() []byte { return make([]byte, 1<<20) })

// writeZeros writes zeros to f at [from, to).
func writeZeros(f File, from, to int64) error {
	for off := from; off < to; {
		z := zeros()
		n := int(min(to-off, int64(len(z))))
		w, err := f.WriteAt(z[:n], off)
		if err == nil && w < n {
			err = io.ErrShortWrite
		}
		if err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// maybeExtendLocked starts writing the next chunk of zeros past the end of
// the active segment if less than half a chunk of durable room is left
// after its records, and the segment may grow: in a goroutine, or, if
// inline, before it returns. The caller holds flushMu.
func (l *Log) maybeExtendLocked(inline bool) error {
	if l.cfg.PreallocSize <= 0 || l.file == nil {
		return nil
	}
	size := l.active.size.Load()
	l.pa.Lock()
	if l.pa.extending || l.pa.err != nil || l.pa.phys >= l.cfg.SegmentSize ||
		l.pa.alloc-size >= l.cfg.PreallocSize/2 {
		err := l.pa.err
		l.pa.Unlock()
		return err
	}
	from := l.pa.phys
	to := min(from+l.cfg.PreallocSize, l.cfg.SegmentSize)
	l.pa.extending, l.pa.phys = true, to
	l.pa.Unlock()
	if inline {
		return l.extend(l.file, l.active.path, from, to)
	}
	go l.extend(nil, l.active.path, from, to)
	return nil
}

// extend writes zeros at [from, to) of the active segment and syncs them,
// through f, or (f nil, in the background) through a file of its own, so
// that a failed sync is also reported to the leader's next sync. It may
// run concurrently with a leader writing records below from: a leader
// that needs room past the durable zeros waits for it (waitRoom). A
// failure stops the log.
func (l *Log) extend(f File, path string, from, to int64) error {
	err := func() error {
		own := f == nil
		if own {
			var err error
			if f, err = l.fs.OpenFile(path, os.O_RDWR, 0); err != nil {
				return err
			}
		}
		err := writeZeros(f, from, to)
		l.st.preallocBytes.Add(uint64(to - from))
		if err == nil {
			l.st.preallocSyncs.Add(1)
			err = f.Sync()
		}
		if own {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		return err
	}()
	if err != nil {
		err = failedError("preallocate "+path, err)
	}
	l.pa.Lock()
	l.pa.extending = false
	if err == nil {
		l.pa.alloc = to
	} else if l.pa.err == nil {
		l.pa.err = err
	}
	l.pa.cond.Broadcast()
	l.pa.Unlock()
	if err != nil {
		l.mu.Lock()
		if l.mu.failed == nil {
			l.mu.failed = err
			l.logger.Error("wal: log failed; no more appends", "err", err)
		}
		l.mu.Unlock()
	}
	return err
}

// waitRoom reserves the active segment up to end for a write of records:
// it waits for an extension in progress if the write would reach into it.
func (l *Log) waitRoom(end int64) error {
	l.pa.Lock()
	defer l.pa.Unlock()
	for l.pa.extending && end > l.pa.alloc {
		l.pa.cond.Wait()
	}
	if l.pa.err != nil {
		return l.pa.err
	}
	l.pa.phys = max(l.pa.phys, end)
	return nil
}

// waitExtension waits until no extension is in progress.
func (l *Log) waitExtension() {
	l.pa.Lock()
	for l.pa.extending {
		l.pa.cond.Wait()
	}
	l.pa.Unlock()
}

// trimLocked cuts the zeros past the records of the active segment, if
// any, and syncs (the sync also makes pending records durable). It is how
// a segment is sealed whole. The caller holds flushMu; no extension runs.
func (l *Log) trimLocked() error {
	size := l.active.size.Load()
	l.pa.Lock()
	phys := l.pa.phys
	l.pa.Unlock()
	if phys <= size {
		if l.active.synced < size {
			return l.syncFileLocked()
		}
		return nil
	}
	if err := l.file.Truncate(size); err != nil {
		return failedError("truncate "+l.active.path, err)
	}
	l.pa.Lock()
	l.pa.phys, l.pa.alloc = size, min(l.pa.alloc, size)
	l.pa.Unlock()
	if l.active.synced < size {
		return l.syncFileLocked()
	}
	l.st.preallocSyncs.Add(1)
	if err := l.file.Sync(); err != nil {
		return failedError("sync "+l.active.path, err)
	}
	return nil
}

// frameSize returns the size of the frame at the start of data.
func frameSize(data []byte) int {
	length, _ := frameLength(data)
	return RecordHeaderSize + int(length)
}

// fitFrames returns the size of the longest run of whole frames at the
// start of data that fits in room bytes.
func fitFrames(data []byte, room int64) int {
	n := 0
	for n < len(data) {
		s := frameSize(data[n:])
		if int64(n+s) > room {
			break
		}
		n += s
	}
	return n
}

func (l *Log) writeLocked(p []byte) error {
	off := l.active.size.Load()
	if err := l.waitRoom(off + int64(len(p))); err != nil {
		return err
	}
	n, err := l.file.WriteAt(p, off)
	l.active.size.Add(int64(n))
	l.st.writes.Add(1)
	l.st.bytes.Add(uint64(n))
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return failedError("write "+l.active.path, err)
	}
	return nil
}

func (l *Log) syncFileLocked() error {
	size := l.active.size.Load()
	l.st.syncs.Add(1)
	if err := l.file.Sync(); err != nil {
		return failedError("sync "+l.active.path, err)
	}
	l.active.synced = size
	return nil
}

// rollLocked seals the active segment (cutting its preallocated zeros and
// syncing it first, so a segment that is not the last is always whole) and
// starts a new one for seq first.
func (l *Log) rollLocked(first uint64) error {
	l.waitExtension()
	if err := l.trimLocked(); err != nil {
		return err
	}
	f := l.file
	l.file = nil
	if err := f.Close(); err != nil {
		return failedError("close "+l.active.path, err)
	}
	seg, nf, err := l.createSegment(first)
	if err != nil {
		return failedError("roll over", err)
	}
	l.active, l.file = seg, nf
	l.pa.Lock()
	l.pa.alloc, l.pa.phys = seg.phys, seg.phys
	l.pa.Unlock()
	l.segMu.Lock()
	l.segs = append(l.segs, seg)
	l.segMu.Unlock()
	l.st.rollovers.Add(1)
	return nil
}

// LastSeq returns the seq of the last record appended (durable or not), or
// the one before the first seq of an empty log.
func (l *Log) LastSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.nextSeq - 1
}

// DurableSeq returns the seq up to which every record is known durable.
func (l *Log) DurableSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.syncedSeq
}

// FirstSeq returns the seq of the first record of the oldest kept segment.
func (l *Log) FirstSeq() uint64 {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	if len(l.segs) == 0 {
		return 1
	}
	return l.segs[0].first
}

// TornTail returns the torn tail Open found (and, unless ReadOnly, cut).
func (l *Log) TornTail() (TornTail, bool) {
	if l.torn == nil {
		return TornTail{}, false
	}
	return *l.torn, true
}

// Stats returns the counters of the log. It only loads atomics.
func (l *Log) Stats() Stats {
	return Stats{
		Appends:           l.st.appends.Load(),
		Entries:           l.st.entries.Load(),
		Batches:           l.st.batches.Load(),
		Writes:            l.st.writes.Load(),
		BytesWritten:      l.st.bytes.Load(),
		Syncs:             l.st.syncs.Load(),
		SyncedEntries:     l.st.syncedEntries.Load(),
		GroupSyncs:        l.st.groupSyncs.Load(),
		MaxEntriesPerSync: l.st.maxPerSync.Load(),
		Rollovers:         l.st.rollovers.Load(),
		PreallocBytes:     l.st.preallocBytes.Load(),
		PreallocSyncs:     l.st.preallocSyncs.Load(),
	}
}

// Close makes every appended record durable, cuts the preallocated zeros
// after them, and closes the log. After a failure it closes the files and
// returns the failure.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	var err error
	switch {
	case l.cfg.ReadOnly:
		l.mu.closed = true
		l.mu.Unlock()
	case l.mu.failed != nil:
		l.mu.closed = true
		err = l.mu.failed
		l.mu.Unlock()
	default:
		l.mu.closed = true
		err = l.syncLocked()
	}
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.waitExtension()
	if l.file != nil && err == nil && !l.cfg.ReadOnly {
		err = l.trimLocked()
	}
	if l.file != nil {
		if cerr := l.file.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("wal: close: %w", cerr)
		}
		l.file = nil
	}
	return err
}

// Crash stops the log as a process crash would, for simulations on a real
// disk: records not yet written are dropped, callers waiting for them get
// ErrClosed, and the active segment is truncated to its durable length, so
// the directory holds only what a power loss could not have taken. A new
// Open of the directory then recovers the log. (A write or sync in progress
// finishes first; its callers learn its outcome.)
func (l *Log) Crash() error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.mu.closed = true
	l.mu.buf = l.mu.buf[:0]
	if b := l.mu.cur; b != nil {
		if b.leadSent {
			l.mu.flushing = false
		}
		b.finishLocked(ErrClosed)
		l.mu.cur = nil
	}
	l.mu.Unlock()

	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.waitExtension()
	if l.file == nil {
		return nil
	}
	var err error
	l.pa.Lock()
	phys := l.pa.phys
	l.pa.Unlock()
	if l.active.synced < l.active.size.Load() || phys > l.active.synced {
		if err = l.file.Truncate(l.active.synced); err != nil {
			err = fmt.Errorf("wal: crash: truncate: %w", err)
		}
		l.active.size.Store(l.active.synced)
	}
	l.file.Close()
	l.file = nil
	return err
}
