package replica

import (
	"encoding/binary"
	"errors"

	"github.com/dtx-dev/dtx/wal"
)

// A raft entry proposed by a replica's coordinator holds one Ready's
// records:
//
//	term   uint64 (big endian)  the proposer's term  } the proposal's tag: the
//	serial uint64 (big endian)  its proposal number  } proposer finds its own
//	records: type uint8, length uvarint, bytes (twopc.AppendRecord), repeated
//
// An entry of only a tag is a barrier: a new leader proposes one and
// restores its machine once it is applied, so that every record of an
// earlier term is in the log it replays. Raft's own empty entries (a new
// term's first entry) have no data.
const tagSize = 16

// seqShift packs a record's position into a seq for node.Carrier: the raft
// index of its entry, shifted, plus its place in the entry. A Ready holds
// far fewer than 2^20 records.
const seqShift = 20

var errBadEntry = errors.New("replica: malformed raft entry")

// encodeEntry appends the records of es, after a zero tag (filled in by
// the raft loop), to b.
func encodeEntry(b []byte, es []wal.Entry) []byte {
	b = append(b, make([]byte, tagSize)...)
	return appendRecords(b, es)
}

// appendRecords appends the records of es to an entry's data b.
func appendRecords(b []byte, es []wal.Entry) []byte {
	for _, e := range es {
		b = append(b, e.Type)
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

func putTag(b []byte, term, serial uint64) {
	binary.BigEndian.PutUint64(b[0:8], term)
	binary.BigEndian.PutUint64(b[8:16], serial)
}

func tagOf(b []byte) (term, serial uint64, ok bool) {
	if len(b) < tagSize {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint64(b[8:16]), true
}

// eachRecord calls fn with the type and bytes of every record of an
// entry's data (after its tag).
func eachRecord(data []byte, fn func(typ uint8, rec []byte) error) error {
	if len(data) < tagSize {
		return nil
	}
	b := data[tagSize:]
	for len(b) > 0 {
		typ := b[0]
		n, k := binary.Uvarint(b[1:])
		if k <= 0 || uint64(len(b)-1-k) < n {
			return errBadEntry
		}
		if err := fn(typ, b[1+k:1+k+int(n)]); err != nil {
			return err
		}
		b = b[1+k+int(n):]
	}
	return nil
}
