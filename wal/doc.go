// Package wal is dtx's write-ahead log: a segmented, append-only file of
// checksummed records with group commit, replay after a crash, torn-tail
// repair and compaction. Every participant and the coordinator force their
// protocol records through it ("force before you speak": a record is
// durable before anyone hears of what it decides) and rebuild their state
// from it on restart.
//
// # Use
//
//	log, err := wal.Open(wal.DefaultConfig(dir)) // recovers; *CorruptionError on corruption
//	err = log.Replay(func(r wal.Record) error { ... })
//	// or, after loading a snapshot of the records up to seq n, both in one pass:
//	log, err = wal.OpenFrom(wal.DefaultConfig(dir), n+1, func(r wal.Record) error { ... })
//	seq, err := log.Append(wal.Entry{Type: recPrepared, Data: b}) // durable on return
//	err = log.Compact(snapshotSeq)
//
// Append returns once the record is durable: written and fdatasync'ed.
// Concurrent callers share one write and one fdatasync: the records that
// arrive while a round is writing and syncing form the next round, led by
// one of its callers (leader/follower group commit, no extra goroutine).
// AppendNoSync returns without waiting; a later Append or Sync makes its
// records durable. A failed write or sync is final: the log refuses every
// later append with an error wrapping ErrFailed and the cause, never
// retries an fsync, and every caller whose round failed gets the error. The
// process is expected to crash and recover from the log.
//
// # Files
//
// A log is a directory of segment files. A segment is named after the seq
// of its first record, as 16 lower-case hex digits and ".wal":
//
//	0000000000000001.wal   seqs 1..41872
//	000000000000a391.wal   seqs 41873..
//
// Only the last segment (the active one) is ever written; the others are
// whole and synced.
//
// With Config.PreallocSize (on in DefaultConfig) the active segment is
// preallocated: zeros are written and synced ahead of its records, in
// chunks, up to SegmentSize at most, and records are written at the
// logical end (after the last record), overwriting them. An fdatasync then
// finds no size change to commit. The first chunk is written with the new
// segment's header; later ones in the background when less than half a
// chunk of room is left (an append that needs room the running chunk is
// writing waits for it; past the zeros it just grows the file). The zeros
// are cut (truncate, then sync) when a segment is sealed at a rollover —
// before the next segment is created — and on Close. Files named "<segment name>.tmp" are leftovers of a
// crashed segment creation, removed by Open (a creation that fails without
// a crash removes its own). Other files are ignored.
//
// A full disk (ENOSPC) while preallocating at Open or when creating a
// segment is not an error: the zeros written are given back and the Log
// goes on without preallocation (a warning says so), so that a log
// stopped cleanly, whose zeros were cut, restarts on a disk that filled
// up meanwhile. A full disk while writing records still fails the log.
//
// # Segment format (version 1)
//
// All integers are little-endian. CRC is CRC-32C (Castagnoli). A segment is
// a header followed by records packed back to back, with no padding or
// alignment, up to the end of the file or up to a zero tail:
//
//	segment header, 32 bytes
//	+--------+---------+----------+-----------+----------+--------+
//	| magic  | version | reserved | first seq | reserved |  CRC   |
//	|   8    |    4    |    4     |     8     |    4     |   4    |
//	+--------+---------+----------+-----------+----------+--------+
//	magic = "DTX-WAL\x00", version = 1, reserved = 0,
//	CRC over bytes 0..27; first seq must match the file name.
//
//	record, 20 bytes of header + length bytes of data
//	+-------+--------+---------+------+----------+-----------------+
//	|  CRC  | length |   seq   | type | reserved |      data       |
//	|   4   |   4    |    8    |  1   |    3     |     length      |
//	+-------+--------+---------+------+----------+-----------------+
//	CRC over bytes 4..(20+length): length, seq, type, reserved and data,
//	so a flipped bit anywhere in a record is caught. type is 1..255;
//	reserved = 0; length <= MaxRecordSize (checked before anything is read
//	or allocated for the data).
//
// A zero tail is zero bytes from the end of the last record to the end of
// the file: preallocated room. No record is all zeros (its type is not 0),
// so where a record is expected and every byte from there to the end of the
// file is zero, the segment ends cleanly.
//
// Seqs are dense: the first record of a segment has the seq in its name,
// each next record the seq after, and each next segment begins where the
// one before ends. A segment grows to Config.SegmentSize; a round of
// records is split at record boundaries across the rollover (a record
// larger than a segment gets a segment of its own).
//
// # Reading and recovery
//
// Open reads every segment in order and checks the header, each record's
// length cap, checksum, type and seq. Where a record is bad and every byte
// from it to the end of the file is zero, that is a zero tail: the end of
// the segment, not damage — no torn tail, no warning, nothing cut (in a
// segment that is not the last, only a crash in the middle of a rollover
// written by another implementation could leave one; a record lost there
// still shows as a seq gap at the next segment). Otherwise:
//
//   - in a segment that is not the last: corruption;
//   - with a valid checksum but the wrong seq (or an invalid type):
//     corruption — no torn write produces that;
//   - in the last segment: Open scans every later byte offset of the file
//     for a valid record with a seq at or after the expected one (jumping
//     over runs of zeros, where no record header can start). If one
//     exists, the bad record is damage in the middle of the log:
//     corruption — zeros followed by a valid later record included. If
//     none does, everything from the bad record on is a torn tail — a
//     partial last record or garbage, possibly followed by zeros — and is
//     cut (then the segment is preallocated again).
//
// Corruption is never skipped or repaired: Open fails with a
// *CorruptionError (wrapping ErrCorrupt) that names the segment file, the
// byte offset and the expected seq. A gap in seqs between segments, a bad
// segment header and a header whose first seq disagrees with the file name
// are corruption too.
//
// The rule rests on how a torn write looks: a crash keeps a prefix of the
// bytes written after the last completed sync (possibly followed by zeros
// or garbage), never a later record without the ones before it. A device
// that persists unsynced pages out of order can leave a hole before a valid
// record; Open then reports corruption rather than guess — a false alarm
// that fails safe, never a silently lost acknowledged record. Likewise a
// damaged last record is indistinguishable from a torn write and is cut;
// Open logs every cut (Config.Logger) and reports it with Log.TornTail. A
// record whose data itself contains a valid frame of the next seq could
// make a torn tail look like corruption, in the same safe direction.
//
// OpenFrom(cfg, from, fn) recovers the same way but reads only the
// segments from the one holding seq from on, once, handing fn the records
// from from on as it checks them (records before corruption is found
// included: a caller that gets an error discards what fn built). The
// segments before (sealed, and by their names holding only records below
// from) get their header checked and nothing else: their records are
// checked by a later Replay, which reads such a segment to the end of its
// file and, as Open would, takes zeros from a bad record to the end for
// the segment's end. A log whose oldest segment starts after from fails
// OpenFrom with a *MissingError.
//
// With Config.ReadOnly (the dump command, see Dump), Open changes nothing:
// a torn tail is reported by TornTail and left on disk, and Replay stops
// before it; a zero tail is just the end.
//
// # Crash safety
//
// The disk may lose or tear anything not yet synced; what a sync covered
// survives. Each step that changes the directory, and what a crash at any
// point of it leaves:
//
//   - Append: the round is written with one write, then fdatasync'ed; only
//     then does any caller of the round hear success. A crash before the
//     sync returns leaves any prefix of the round (cut as a torn tail) —
//     none of it was acknowledged. A crash after leaves all of it. In a
//     preallocated segment the rest of the durable zeros stays after it.
//   - Preallocation: zeros are written past every byte a record was or is
//     being written to, through a file descriptor of their own (so that a
//     failed sync of theirs cannot hide an error from the next record sync)
//     and synced; a failure stops the log. A crash leaves a zero tail, or
//     a shorter file.
//   - Rollover: the full segment is cut to its records and synced first,
//     so a segment that is not the last is always whole (a crash before
//     the new segment exists leaves the old one last, zero tail or not). The new segment is created as
//     "<name>.tmp", its header written and synced, renamed to "<name>",
//     and the directory synced; only then are records written to it. A
//     crash before the rename leaves a temporary file (removed by Open);
//     after the rename, either that or a durable, empty, valid segment,
//     which Open takes as the active one.
//   - Open: a torn tail is truncated and the truncation synced; a crash in
//     between shows the same tail again and it is cut again. A zero tail is
//     kept (and synced with the rest) as preallocated room. Open then
//     syncs the active segment and the directory, so records written but
//     not synced by the previous process are durable before Replay lets
//     anyone act on them. OpenFrom, which hands records over while it
//     reads, syncs them before it reads (and the active segment again if
//     it cuts a torn tail).
//   - Compact: segments are removed oldest first with a directory sync
//     after each, so a crash leaves a contiguous run of segments and a
//     restarted Replay begins at the oldest one still there.
//   - A failed write or sync stops the log (ErrFailed). The data of the
//     failed round is in an unknown state: it may or may not appear after
//     the restart, and no caller was told it is durable.
//
// # Testing aids
//
// The disk is the FS interface. OSFS is the real one (File.Sync is
// fdatasync on Linux). MemFS is an in-memory FS that knows what was synced:
// it can crash keeping only durable data (or a torn part of the rest),
// halt at any call, and fail the nth call of any kind. Log.Crash simulates
// a process crash on the real disk.
package wal
