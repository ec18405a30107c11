package purchase

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

var (
	_ encoding.BinaryMarshaler   = (*Request)(nil)
	_ encoding.BinaryAppender    = (*Request)(nil)
	_ encoding.BinaryUnmarshaler = (*Request)(nil)
)

// goodBinary is the binary form of goodRequest.
const goodBinary = "02" + // version
	"02" + "7431" + // "t1"
	"02" + "7531" + // "u1"
	"01" + // one line
	"02" + "6931" + // "i1"
	"02" + // quantity 2
	"e707" + // price 999
	"31313131" + // last4
	"0c" + // month 12
	"ed0f" // year 2029

// goodBinaryV1 is the binary form of goodRequest in version 1.
const goodBinaryV1 = "01" + // version
	"02" + "7431" + // "t1"
	"02" + "7531" + // "u1"
	"02" + "6931" + // "i1"
	"02" + // quantity 2
	"e707" + // price 999
	"31313131" + // last4
	"0c" + // month 12
	"ed0f" // year 2029

// goodMultiBinary is the binary form of goodMultiRequest.
const goodMultiBinary = "02" + "02" + "7431" + "02" + "7531" +
	"03" + // three lines
	"02" + "6931" + "02" + "e707" + // i1, 2 at 9.99
	"02" + "6932" + "01" + "32" + // i2, 1 at 0.50
	"02" + "6930" + "03" + "904e" + // i0, 3 at 100.00
	"31313131" + "0c" + "ed0f"

func TestBinaryGolden(t *testing.T) {
	for _, tt := range []struct {
		name string
		req  Request
		want string
	}{
		{"one item", goodRequest, goodBinary},
		{"one item, single-item form", Request{TxID: "t1", UserID: "u1", ItemID: "i1", Quantity: 2, Price: 999, Amount: 1998,
			Card: goodRequest.Card}, goodBinary},
		{"one item, items only", Request{TxID: "t1", UserID: "u1", Items: goodRequest.Items, Amount: 1998,
			Card: goodRequest.Card}, goodBinary},
		{"three items", goodMultiRequest, goodMultiBinary},
	} {
		got, err := tt.req.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if hex.EncodeToString(got) != tt.want {
			t.Fatalf("%s: MarshalBinary = %x, want %s", tt.name, got, tt.want)
		}
	}
	for _, tt := range []struct {
		name, data string
		want       Request
	}{
		{"version 2", goodBinary, goodRequest},
		{"version 1", goodBinaryV1, goodRequest},
		{"three items", goodMultiBinary, goodMultiRequest},
	} {
		data, _ := hex.DecodeString(tt.data)
		var r Request
		if err := r.UnmarshalBinary(data); err != nil || !reflect.DeepEqual(r, tt.want) {
			t.Fatalf("%s: UnmarshalBinary = %+v, %v", tt.name, r, err)
		}
	}
	// AppendBinary appends.
	b, _ := goodRequest.AppendBinary([]byte("xy"))
	if string(b[:2]) != "xy" || hex.EncodeToString(b[2:]) != goodBinary {
		t.Errorf("AppendBinary = %x", b)
	}
}

// appendBinaryV1 is the encoder of version 1, for tests: logs written by
// earlier releases hold it.
func appendBinaryV1(b []byte, r *Request) []byte {
	b = append(b, 1)
	b = appendString(b, r.TxID)
	b = appendString(b, r.UserID)
	b = appendLine(b, r.ItemID, r.Quantity, r.Price)
	b = append(b, r.Card.Last4...)
	b = append(b, byte(r.Card.ExpMonth))
	return binary.AppendUvarint(b, uint64(r.Card.ExpYear))
}

func TestBinaryV1(t *testing.T) {
	lines := generate(t, 500, 5, bigWorld(50, 50), GenOptions{OutOfStock: 0.1})
	for _, l := range lines {
		r, err := DecodeLine([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		var back Request
		if err := back.UnmarshalBinary(appendBinaryV1(nil, &r)); err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("version 1 of %+v: %+v, %v", r, back, err)
		}
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	lines := generate(t, 2000, 5, bigWorld(50, 50), GenOptions{Insufficient: 0.1, OutOfStock: 0.1, MultiItem: 0.3, MaxItems: 10})
	long := strings.Repeat("é", MaxIDBytes/2)
	most := Request{TxID: long, UserID: long, Card: Card{Last4: "0000", ExpMonth: 1, ExpYear: 2000}}
	for i := range MaxItems {
		id := strings.Repeat("é", 62) + "-" + strconv.Itoa(i)
		most.Items = append(most.Items, LineItem{ItemID: id, Quantity: MaxQuantity / 2, Price: MaxPrice})
		most.Amount += MaxQuantity / 2 * MaxPrice
	}
	extra := []Request{
		single(Request{TxID: long, UserID: long, ItemID: long, Quantity: MaxQuantity, Price: MaxPrice, Amount: MaxQuantity * MaxPrice,
			Card: Card{Last4: "0000", ExpMonth: 1, ExpYear: 2000}}),
		single(Request{TxID: "x", UserID: "y", ItemID: "z", Quantity: 1, Price: 1, Amount: 1, Card: Card{Last4: "9999", ExpMonth: 12, ExpYear: 2099}}),
		most,
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
		if err := back.UnmarshalBinary(data); err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip of %+v: %+v, %v", r, back, err)
		}
	}
}

func TestMarshalBinaryInvalid(t *testing.T) {
	r := goodRequest
	r.Amount = 1
	if _, err := r.MarshalBinary(); err == nil || err.Error() != "amount: must equal the sum of quantity × price over items" {
		t.Errorf("MarshalBinary of a bad request: %v", err)
	}
	r = goodRequest
	r.Card = Card{}
	b, err := r.AppendBinary([]byte("keep"))
	if err == nil || string(b) != "keep" {
		t.Errorf("AppendBinary of a bad request: %q, %v", b, err)
	}
	r = goodMultiRequest
	r.Items = append([]LineItem{}, r.Items...)
	r.Items[2].ItemID = "i1"
	if _, err := r.MarshalBinary(); err == nil || err.Error() != "items[2].item_id: same as items[0].item_id" {
		t.Errorf("MarshalBinary with the same item twice: %v", err)
	}
}

func TestUnmarshalBinaryErrors(t *testing.T) {
	good, _ := hex.DecodeString(goodBinaryV1) // the errors of version 1 …
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
		{"unknown version", h("03"), "purchase: malformed binary request: unknown version 3"},
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
		{"quantity 0", h("01 02 7431 02 7531 02 6931 00 e707 31313131 0c ed0f"), "purchase: malformed binary request: items[0].quantity: must be between 1 and 1000000"},
		{"quantity huge", h("01 02 7431 02 7531 02 6931 ffffffffffffffff7f e707 31313131 0c ed0f"), "purchase: malformed binary request: quantity, price or exp_year out of range"},
		{"price 0", h("01 02 7431 02 7531 02 6931 02 00 31313131 0c ed0f"), "purchase: malformed binary request: items[0].price: must be greater than 0"},
		{"last4 letters", h("01 02 7431 02 7531 02 6931 02 e707 3131313a 0c ed0f"), "purchase: malformed binary request: card.last4: must be 4 digits"},
		{"month 13", h("01 02 7431 02 7531 02 6931 02 e707 31313131 0d ed0f"), "purchase: malformed binary request: card.exp_month: must be between 1 and 12"},
		{"year 29", h("01 02 7431 02 7531 02 6931 02 e707 31313131 0c 1d"), "purchase: malformed binary request: card.exp_year: must be between 2000 and 2099"},

		// … and those of version 2.
		{"v2 no count", h("02 02 7431 02 7531"), "purchase: malformed binary request: items truncated at offset 7"},
		{"v2 count 0", h("02 02 7431 02 7531 00 31313131 0c ed0f"), "purchase: malformed binary request: items count 0 not in 1..100 at offset 7"},
		{"v2 count 101", h("02 02 7431 02 7531 65 02 6931 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: items count 101 not in 1..100 at offset 7"},
		{"v2 count huge", h("02 02 7431 02 7531 ffffffffffffffffff01"), "purchase: malformed binary request: items count 18446744073709551615 not in 1..100 at offset 7"},
		{"v2 count non-minimal", h("02 02 7431 02 7531 8100 02 6931 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: items not in shortest form at offset 7"},
		{"v2 fewer lines than counted", h("02 02 7431 02 7531 02 02 6931 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: item_id truncated at offset 15"},
		{"v2 more lines than counted", h("02 02 7431 02 7531 01 02 6931 02 e707 02 6932 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: 7 bytes after the end"},
		{"v2 second item empty", h("02 02 7431 02 7531 02 02 6931 02 e707 00 02 e707 31313131 0c ed0f"), "purchase: malformed binary request: items[1].item_id: must not be empty"},
		{"v2 second quantity 0", h("02 02 7431 02 7531 02 02 6931 02 e707 02 6932 00 e707 31313131 0c ed0f"), "purchase: malformed binary request: items[1].quantity: must be between 1 and 1000000"},
		{"v2 second price huge", h("02 02 7431 02 7531 02 02 6931 02 e707 02 6932 02 ffffffffffffffff7f 31313131 0c ed0f"), "purchase: malformed binary request: quantity, price or exp_year out of range"},
		{"v2 same item twice", h("02 02 7431 02 7531 02 02 6931 02 e707 02 6931 01 e707 31313131 0c ed0f"), "purchase: malformed binary request: items[1].item_id: same as items[0].item_id"},
		{"v2 total too large", func() []byte {
			b := h("02 02 7431 02 7531 5d") // 93 lines
			for i := range 93 {
				b = appendLine(b, "i"+strconv.Itoa(i), MaxQuantity, MaxPrice)
			}
			return append(b, h("31313131 0c ed0f")...)
		}(), "purchase: malformed binary request: items: total amount is more than 92233720368547758.07"},
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
	if !errors.As(err, &fe) || fe.Field != "items[0].quantity" {
		t.Errorf("errors.As(%v, *FieldError) = %v", err, fe)
	}
	// Every prefix of a valid encoding is refused.
	for _, s := range []string{goodBinaryV1, goodBinary, goodMultiBinary} {
		good := h(s)
		for n := range len(good) {
			if err := new(Request).UnmarshalBinary(good[:n]); err == nil {
				t.Errorf("prefix of %d bytes of %s accepted", n, s)
			}
		}
	}
}

// TestUnmarshalBinaryAllocs checks that decoding allocates no more than its
// input for the request's strings, and Items, whatever lengths the input
// claims.
func TestUnmarshalBinaryAllocs(t *testing.T) {
	var r Request
	for _, s := range []string{goodBinary, goodBinaryV1, goodMultiBinary} {
		good, _ := hex.DecodeString(s)
		if n := testing.AllocsPerRun(100, func() { _ = r.UnmarshalBinary(good) }); n > 2 {
			t.Errorf("UnmarshalBinary(%s) allocates %v times, want 2 (the strings, Items)", s, n)
		}
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

func TestBinaryCache(t *testing.T) {
	enc := func(tx string) []byte {
		r := Request{TxID: tx, UserID: "u", ItemID: "i", Quantity: 2, Price: 150, Amount: 300,
			Card: Card{Last4: "4242", ExpMonth: 1, ExpYear: 2099}}
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var c BinaryCache
	a, b := enc("a"), enc("b")
	for _, tc := range []struct {
		op   []byte
		want string
	}{{a, "a"}, {a, "a"}, {b, "b"}, {append([]byte(nil), a...), "a"}, {[]byte{9}, ""}, {b, "b"}} {
		r, err := c.Decode(tc.op)
		if tc.want == "" {
			if err == nil {
				t.Fatalf("Decode(%x): no error", tc.op)
			}
			continue
		}
		if err != nil || r.TxID != tc.want {
			t.Fatalf("Decode: got %q, %v; want %q", r.TxID, err, tc.want)
		}
	}
}
