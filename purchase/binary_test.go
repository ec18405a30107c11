package purchase

import (
	"bytes"
	"encoding"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"testing"
)

var (
	_ encoding.BinaryMarshaler   = (*Request)(nil)
	_ encoding.BinaryAppender    = (*Request)(nil)
	_ encoding.BinaryUnmarshaler = (*Request)(nil)
)

// goodBinary is the binary form of goodRequest.
const goodBinary = "01" + // version
	"02" + "7431" + // "t1"
	"02" + "7531" + // "u1"
	"02" + "6931" + // "i1"
	"02" + // quantity 2
	"e707" + // price 999
	"31313131" + // last4
	"0c" + // month 12
	"ed0f" // year 2029

func TestBinaryGolden(t *testing.T) {
	got, err := goodRequest.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(got) != goodBinary {
		t.Fatalf("MarshalBinary = %x, want %s", got, goodBinary)
	}
	data, _ := hex.DecodeString(goodBinary)
	var r Request
	if err := r.UnmarshalBinary(data); err != nil || r != goodRequest {
		t.Fatalf("UnmarshalBinary = %+v, %v", r, err)
	}
	// AppendBinary appends.
	b, _ := goodRequest.AppendBinary([]byte("xy"))
	if string(b[:2]) != "xy" || hex.EncodeToString(b[2:]) != goodBinary {
		t.Errorf("AppendBinary = %x", b)
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	lines := generate(t, 2000, 5, bigWorld(50, 50), GenOptions{Insufficient: 0.1, OutOfStock: 0.1})
	long := strings.Repeat("é", MaxIDBytes/2)
	extra := []Request{
		{TxID: long, UserID: long, ItemID: long, Quantity: MaxQuantity, Price: MaxPrice, Amount: MaxQuantity * MaxPrice,
			Card: Card{Last4: "0000", ExpMonth: 1, ExpYear: 2000}},
		{TxID: "x", UserID: "y", ItemID: "z", Quantity: 1, Price: 1, Amount: 1, Card: Card{Last4: "9999", ExpMonth: 12, ExpYear: 2099}},
	}
	var reqs []Request
	for _, l := range lines {
		r, err := DecodeLine([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	for _, r := range append(reqs, extra...) {
		data, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary(%+v): %v", r, err)
		}
		var back Request
		if err := back.UnmarshalBinary(data); err != nil || back != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, back, err)
		}
	}
}

func TestMarshalBinaryInvalid(t *testing.T) {
	r := goodRequest
	r.Amount = 1
	if _, err := r.MarshalBinary(); err == nil || err.Error() != "amount: must equal quantity × price" {
		t.Errorf("MarshalBinary of a bad request: %v", err)
	}
	r = goodRequest
	r.Card = Card{}
	b, err := r.AppendBinary([]byte("keep"))
	if err == nil || string(b) != "keep" {
		t.Errorf("AppendBinary of a bad request: %q, %v", b, err)
	}
}

func TestUnmarshalBinaryErrors(t *testing.T) {
	good, _ := hex.DecodeString(goodBinary)
	h := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		data []byte
		err  string
	}{
		{"empty", nil, "purchase: malformed binary request: version truncated at offset 0"},
		{"unknown version", h("02"), "purchase: malformed binary request: unknown version 2"},
		{"version 0", append([]byte{0}, good[1:]...), "purchase: malformed binary request: unknown version 0"},
		{"cut in an id", good[:5], "purchase: malformed binary request: user_id truncated at offset 5"},
		{"cut in last4", good[:13], "purchase: malformed binary request: last4 truncated at offset 13"},
		{"no year", good[:len(good)-2], "purchase: malformed binary request: exp_year truncated at offset 18"},
		{"trailing byte", append(bytes.Clone(good), 0), "purchase: malformed binary request: 1 bytes after the end"},
		{"id too long", h("01 81 01"), "purchase: malformed binary request: transaction_id longer than 128 bytes at offset 3"},
		{"huge length", h("01 ffffffffffffffff7f"), "purchase: malformed binary request: transaction_id longer than 128 bytes at offset 10"},
		{"varint overflow", h("01 ffffffffffffffffff7f"), "purchase: malformed binary request: transaction_id length overflows 64 bits at offset 1"},
		{"non-minimal varint", h("01 8200 7431"), "purchase: malformed binary request: transaction_id length not in shortest form at offset 1"},
		{"empty id", h("01 00 02 7531 02 6931 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: transaction_id: must not be empty"},
		{"id with space", h("01 02 7420 02 7531 02 6931 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: transaction_id: contains whitespace or control characters"},
		{"id invalid UTF-8", h("01 02 74ff 02 7531 02 6931 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: transaction_id: invalid UTF-8"},
		{"quantity 0", h("01 02 7431 02 7531 02 6931 00 e707 31313131 0c ed0f"), "purchase: malformed binary request: quantity: must be between 1 and 1000000"},
		{"quantity huge", h("01 02 7431 02 7531 02 6931 ffffffffffffffff7f e707 31313131 0c ed0f"), "purchase: malformed binary request: quantity, price or exp_year out of range"},
		{"price 0", h("01 02 7431 02 7531 02 6931 02 00 31313131 0c ed0f"), "purchase: malformed binary request: price: must be greater than 0"},
		{"last4 letters", h("01 02 7431 02 7531 02 6931 02 e707 3131313a 0c ed0f"), "purchase: malformed binary request: card.last4: must be 4 digits"},
		{"month 13", h("01 02 7431 02 7531 02 6931 02 e707 31313131 0d ed0f"), "purchase: malformed binary request: card.exp_month: must be between 1 and 12"},
		{"year 29", h("01 02 7431 02 7531 02 6931 02 e707 31313131 0c 1d"), "purchase: malformed binary request: card.exp_year: must be between 2000 and 2099"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Request{TxID: "untouched"}
			err := r.UnmarshalBinary(tt.data)
			if err == nil || err.Error() != tt.err {
				t.Fatalf("UnmarshalBinary(%x) = %v\nwant %s", tt.data, err, tt.err)
			}
			if !errors.Is(err, ErrBadBinary) {
				t.Errorf("error does not wrap ErrBadBinary")
			}
			if r.TxID != "untouched" {
				t.Errorf("the request changed on error: %+v", r)
			}
		})
	}
	// A field error is also there to errors.As.
	var fe *FieldError
	err := new(Request).UnmarshalBinary(h("01 02 7431 02 7531 02 6931 00 e707 31313131 0c ed0f"))
	if !errors.As(err, &fe) || fe.Field != "quantity" {
		t.Errorf("errors.As(%v, *FieldError) = %v", err, fe)
	}
	// Every prefix of a valid encoding is refused.
	for n := range len(good) {
		if err := new(Request).UnmarshalBinary(good[:n]); err == nil {
			t.Errorf("prefix of %d bytes accepted", n)
		}
	}
}

// TestUnmarshalBinaryAllocs checks that decoding allocates no more than its
// input for the request, whatever lengths the input claims.
func TestUnmarshalBinaryAllocs(t *testing.T) {
	good, _ := hex.DecodeString(goodBinary)
	var r Request
	if n := testing.AllocsPerRun(100, func() { _ = r.UnmarshalBinary(good) }); n > 1 {
		t.Errorf("UnmarshalBinary allocates %v times, want 1", n)
	}
	huge := []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	var before, after runtimeMem
	before.read()
	for range 100 {
		_ = r.UnmarshalBinary(huge)
	}
	after.read()
	if per := (after.bytes - before.bytes) / 100; per > 512 {
		t.Errorf("UnmarshalBinary of %d bytes allocates %d bytes", len(huge), per)
	}
}

func BenchmarkMarshalBinary(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = goodRequest.AppendBinary(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalBinary(b *testing.B) {
	data, _ := hex.DecodeString(goodBinary)
	b.ReportAllocs()
	var r Request
	for b.Loop() {
		if err := r.UnmarshalBinary(data); err != nil {
			b.Fatal(err)
		}
	}
}

// runtimeMem reads how many bytes the program has allocated so far.
type runtimeMem struct{ bytes uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.bytes = s.TotalAlloc
}
