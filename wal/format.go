package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// The on-disk format is described in doc.go; this file is its only encoder
// and decoder.

const (
	// SegmentHeaderSize is the size of the header at the start of every
	// segment file.
	SegmentHeaderSize = 32
	// RecordHeaderSize is the size of the frame header before every record's
	// data.
	RecordHeaderSize = 20
	// FormatVersion is the segment format version this package writes and
	// reads.
	FormatVersion = 1
	// MaxRecordSizeLimit is the largest MaxRecordSize a Config may set: the
	// length field is 32 bits and a reader never trusts more than this.
	MaxRecordSizeLimit = 1 << 30

	segmentSuffix = ".wal"
	tmpSuffix     = ".tmp"
)

// segmentMagic opens every segment file.
var segmentMagic = [8]byte{'D', 'T', 'X', '-', 'W', 'A', 'L', 0}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// zeroRecordHeader is appended to a buffer to reserve room for a header
// without allocating.
var zeroRecordHeader [RecordHeaderSize]byte

// SegmentName returns the file name of the segment whose first record has
// sequence number first: 16 lower-case hex digits and ".wal".
func SegmentName(first uint64) string {
	return fmt.Sprintf("%016x%s", first, segmentSuffix)
}

// parseSegmentName returns the first sequence number a segment file name
// encodes, and whether name is a segment name at all.
func parseSegmentName(name string) (uint64, bool) {
	if len(name) != 16+len(segmentSuffix) || !strings.HasSuffix(name, segmentSuffix) {
		return 0, false
	}
	for _, c := range name[:16] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, false
		}
	}
	first, err := strconv.ParseUint(name[:16], 16, 64)
	if err != nil || first == 0 {
		return 0, false
	}
	return first, true
}

// encodeSegmentHeader returns the header of a segment whose first record has
// sequence number first.
func encodeSegmentHeader(first uint64) [SegmentHeaderSize]byte {
	var h [SegmentHeaderSize]byte
	copy(h[0:8], segmentMagic[:])
	binary.LittleEndian.PutUint32(h[8:12], FormatVersion)
	// h[12:16] reserved, zero.
	binary.LittleEndian.PutUint64(h[16:24], first)
	// h[24:28] reserved, zero.
	binary.LittleEndian.PutUint32(h[28:32], crc32.Checksum(h[0:28], castagnoli))
	return h
}

// decodeSegmentHeader checks a segment header and returns the first sequence
// number it names, or a reason why it is not a valid header.
func decodeSegmentHeader(h []byte) (first uint64, reason string) {
	if len(h) < SegmentHeaderSize {
		return 0, fmt.Sprintf("segment header truncated: %d of %d bytes", len(h), SegmentHeaderSize)
	}
	h = h[:SegmentHeaderSize]
	if [8]byte(h[0:8]) != segmentMagic {
		return 0, fmt.Sprintf("bad segment magic %q", h[0:8])
	}
	if got, want := binary.LittleEndian.Uint32(h[28:32]), crc32.Checksum(h[0:28], castagnoli); got != want {
		return 0, fmt.Sprintf("segment header checksum mismatch: stored %08x, computed %08x", got, want)
	}
	if v := binary.LittleEndian.Uint32(h[8:12]); v != FormatVersion {
		return 0, fmt.Sprintf("unsupported format version %d (this build reads version %d)", v, FormatVersion)
	}
	first = binary.LittleEndian.Uint64(h[16:24])
	if first == 0 {
		return 0, "segment header names first seq 0"
	}
	return first, ""
}

// appendRecord appends the frame of one record to buf and returns the
// extended buffer. It allocates only when buf must grow.
func appendRecord(buf []byte, seq uint64, typ uint8, data []byte) []byte {
	n := len(buf)
	buf = append(buf, zeroRecordHeader[:]...)
	h := buf[n : n+RecordHeaderSize]
	binary.LittleEndian.PutUint32(h[4:8], uint32(len(data)))
	binary.LittleEndian.PutUint64(h[8:16], seq)
	h[16] = typ
	// h[17:20] reserved, zero.
	buf = append(buf, data...)
	binary.LittleEndian.PutUint32(buf[n:n+4], crc32.Checksum(buf[n+4:], castagnoli))
	return buf
}

// frameStatus is the verdict of decodeRecord on the bytes at one offset.
type frameStatus uint8

const (
	// frameOK: a whole, valid record.
	frameOK frameStatus = 1 + iota
	// frameShortHeader: fewer than RecordHeaderSize bytes.
	frameShortHeader
	// frameTooLarge: the length field exceeds the record size cap.
	frameTooLarge
	// frameShortData: the header is whole but the data is cut short.
	frameShortData
	// frameBadChecksum: the stored CRC does not match the frame.
	frameBadChecksum
	// frameBadHeader: the CRC matches, but the type is 0 or reserved bytes
	// are set; no writer of this format produces that.
	frameBadHeader
)

// recordFrame is a decoded record frame. data aliases the decoded bytes.
type recordFrame struct {
	seq  uint64
	typ  uint8
	data []byte
	size int // bytes of the whole frame
}

// frameLength returns the data length stored in a record header, and
// whether b holds a whole header.
func frameLength(b []byte) (int64, bool) {
	if len(b) < RecordHeaderSize {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint32(b[4:8])), true
}

// decodeRecord decodes the record frame at the start of b. It never reads
// past b, never allocates, and rejects a length above maxRecordSize before
// looking at the data.
func decodeRecord(b []byte, maxRecordSize int) (recordFrame, frameStatus, string) {
	if len(b) < RecordHeaderSize {
		return recordFrame{}, frameShortHeader, fmt.Sprintf("truncated record header: %d of %d bytes", len(b), RecordHeaderSize)
	}
	length := int64(binary.LittleEndian.Uint32(b[4:8]))
	if length > int64(maxRecordSize) {
		return recordFrame{}, frameTooLarge, fmt.Sprintf("record length %d exceeds MaxRecordSize %d", length, maxRecordSize)
	}
	size := RecordHeaderSize + length
	if int64(len(b)) < size {
		return recordFrame{}, frameShortData, fmt.Sprintf("truncated record: %d of %d bytes", len(b), size)
	}
	frame := b[:size]
	if got, want := binary.LittleEndian.Uint32(frame[0:4]), crc32.Checksum(frame[4:], castagnoli); got != want {
		return recordFrame{}, frameBadChecksum, fmt.Sprintf("record checksum mismatch: stored %08x, computed %08x", got, want)
	}
	typ := frame[16]
	if typ == 0 || frame[17] != 0 || frame[18] != 0 || frame[19] != 0 {
		return recordFrame{}, frameBadHeader, fmt.Sprintf("invalid record header: type %d, reserved %x", typ, frame[17:20])
	}
	return recordFrame{
		seq:  binary.LittleEndian.Uint64(frame[8:16]),
		typ:  typ,
		data: frame[RecordHeaderSize:],
		size: int(size),
	}, frameOK, ""
}

// frameSeq returns the sequence number stored in the record header at the
// start of b, which must hold a whole header.
func frameSeq(b []byte) uint64 {
	return binary.LittleEndian.Uint64(b[8:16])
}
