package wal

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for i := range 50 {
		e := testEntry(i)
		buf := appendRecord([]byte("prefix"), uint64(i+1), e.Type, e.Data)
		fr, st, reason := decodeRecord(buf[6:], DefaultMaxRecordSize)
		if st != frameOK {
			t.Fatalf("entry %d: %s", i, reason)
		}
		if fr.seq != uint64(i+1) || fr.typ != e.Type || !bytes.Equal(fr.data, e.Data) || fr.size != len(buf)-6 {
			t.Fatalf("entry %d: decoded %+v", i, fr)
		}
		// Every cut of the frame is short, never a record.
		for cut := range len(buf) - 6 {
			if _, st, _ := decodeRecord(buf[6:6+cut], DefaultMaxRecordSize); st == frameOK {
				t.Fatalf("entry %d cut at %d decodes", i, cut)
			}
		}
	}
}

func TestRecordChecksumCoversEveryByte(t *testing.T) {
	buf := appendRecord(nil, 7, 3, []byte("hello"))
	for bit := range len(buf) * 8 {
		b := bytes.Clone(buf)
		b[bit/8] ^= 1 << (bit % 8)
		if fr, st, _ := decodeRecord(b, DefaultMaxRecordSize); st == frameOK {
			t.Fatalf("bit %d flipped: decoded %+v", bit, fr)
		}
	}
}

func TestRecordLengthCap(t *testing.T) {
	buf := appendRecord(nil, 1, 1, make([]byte, 100))
	if _, st, _ := decodeRecord(buf, 99); st != frameTooLarge {
		t.Fatalf("status %d, want frameTooLarge", st)
	}
	binary.LittleEndian.PutUint32(buf[4:8], 0xffffffff)
	if _, st, _ := decodeRecord(buf, MaxRecordSizeLimit); st != frameTooLarge {
		t.Fatalf("status %d, want frameTooLarge", st)
	}
}

func TestSegmentHeader(t *testing.T) {
	h := encodeSegmentHeader(0xa391)
	if first, reason := decodeSegmentHeader(h[:]); reason != "" || first != 0xa391 {
		t.Fatalf("decoded %d %q", first, reason)
	}
	for bit := range SegmentHeaderSize * 8 {
		b := h
		b[bit/8] ^= 1 << (bit % 8)
		if _, reason := decodeSegmentHeader(b[:]); reason == "" {
			t.Fatalf("bit %d flipped: header accepted", bit)
		}
	}
	if _, reason := decodeSegmentHeader(h[:31]); reason == "" {
		t.Fatal("short header accepted")
	}
}

func TestSegmentName(t *testing.T) {
	if got := SegmentName(1); got != "0000000000000001.wal" {
		t.Fatalf("SegmentName(1) = %q", got)
	}
	for _, first := range []uint64{1, 0xa391, 1<<64 - 1} {
		if got, ok := parseSegmentName(SegmentName(first)); !ok || got != first {
			t.Fatalf("parse(%q) = %d, %v", SegmentName(first), got, ok)
		}
	}
	for _, bad := range []string{"0000000000000000.wal", "000000000000001.wal", "000000000000000G.wal",
		"000000000000000A.wal", "0000000000000001.wal.tmp", "0000000000000001.log", "x"} {
		if _, ok := parseSegmentName(bad); ok {
			t.Fatalf("parse(%q) accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := []Config{DefaultConfig("/d"), {Dir: "d"}, {Dir: "d", SegmentSize: MinSegmentSize, MaxRecordSize: 1}}
	for _, c := range good {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := []Config{{}, {Dir: "d", SegmentSize: 10}, {Dir: "d", SegmentSize: -1}, {Dir: "d", MaxRecordSize: -1},
		{Dir: "d", MaxRecordSize: MaxRecordSizeLimit + 1}, {Dir: "d", BufferSize: -1}}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: valid", c)
		}
		if _, err := Open(c); err == nil {
			t.Errorf("%+v: Open succeeded", c)
		}
	}
}
