package purchase

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/dtx-dev/dtx/money"
)

// The seed corpora of these targets are in testdata/fuzz/<target>.
// Run one with: go test -run XXX -fuzz FuzzDecodeLine ./purchase/

// FuzzDecodeLine checks that DecodeLine never panics; that it refuses what
// encoding/json refuses (and refuses more only for invalid UTF-8, lone
// surrogates and deep nesting); and that a request it accepts keeps every
// rule and agrees with what encoding/json reads from the same line.
func FuzzDecodeLine(f *testing.F) {
	f.Add([]byte(goodLine))
	f.Add([]byte(goodMultiLine))
	for _, tt := range decodeErrorTests[:20] {
		f.Add([]byte(tt.line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := DecodeLine(line)
		valid := json.Valid(line)
		if err != nil {
			checkDecodeError(t, line, valid, req, err)
			return
		}
		if !valid || !utf8.Valid(line) {
			t.Fatalf("accepted a line that is not JSON: %q", line)
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted %q, but the request breaks a rule: %v", line, err)
		}
		checkAgainstEncodingJSON(t, line, req)
	})
}

func checkDecodeError(t *testing.T, line []byte, valid bool, req Request, err error) {
	var se *SyntaxError
	var fe *FieldError
	switch {
	case errors.As(err, &se):
		if se.Offset < 0 || se.Offset > len(line) || se.Reason == "" {
			t.Fatalf("%q: bad syntax error %+v", line, se)
		}
		if valid {
			switch se.Reason {
			case "invalid UTF-8 in string", "lone surrogate in \\u escape", "nested deeper than 64 levels":
			default:
				t.Fatalf("%q: encoding/json accepts it, but DecodeLine says %v", line, err)
			}
		}
		if !reflect.DeepEqual(req, Request{}) {
			t.Fatalf("%q: syntax error %v with a request %+v", line, err, req)
		}
	case errors.As(err, &fe):
		if !valid {
			t.Fatalf("%q: encoding/json refuses it, but DecodeLine says %v", line, err)
		}
		if fe.Reason == "" {
			t.Fatalf("%q: field error without a reason: %+v", line, fe)
		}
		if req.TxID != "" && checkID(req.TxID) != "" {
			t.Fatalf("%q: error %v with an invalid TxID %q", line, err, req.TxID)
		}
		if req.UserID != "" || req.ItemID != "" || req.Quantity != 0 || req.Price != 0 || req.Amount != 0 || req.Card != (Card{}) || req.Items != nil {
			t.Fatalf("%q: error %v with a request %+v", line, err, req)
		}
	default:
		t.Fatalf("%q: error %T %v is neither a *SyntaxError nor a *FieldError", line, err, err)
	}
}

// checkAgainstEncodingJSON reads line with encoding/json (exact numbers) and
// checks that it finds what DecodeLine found.
func checkAgainstEncodingJSON(t *testing.T, line []byte, req Request) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%q: encoding/json: %v", line, err)
	}
	str := func(v any, field string) string {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("%q: %s is %T for encoding/json", line, field, v)
		}
		return s
	}
	if str(m["transaction_id"], "transaction_id") != req.TxID ||
		str(m["user_id"], "user_id") != req.UserID {
		t.Fatalf("%q: ids differ from encoding/json: %+v", line, req)
	}
	// The lines: items, or the single-item fields.
	lines := []map[string]any{m}
	if v, ok := m["items"]; ok {
		for _, k := range []string{"item_id", "quantity", "price"} {
			if _, ok := m[k]; ok {
				t.Fatalf("%q: accepted with both items and %s", line, k)
			}
		}
		arr, ok := v.([]any)
		if !ok {
			t.Fatalf("%q: items is %T", line, v)
		}
		lines = nil
		for _, e := range arr {
			obj, ok := e.(map[string]any)
			if !ok {
				t.Fatalf("%q: an entry of items is %T", line, e)
			}
			lines = append(lines, obj)
		}
	}
	if len(lines) != len(req.Items) || len(lines) > MaxItems {
		t.Fatalf("%q: %d lines for encoding/json, %d for DecodeLine", line, len(lines), len(req.Items))
	}
	var sum money.Cents
	ids := map[string]bool{}
	for i, l := range lines {
		it := req.Items[i]
		if str(l["item_id"], "item_id") != it.ItemID || ids[it.ItemID] {
			t.Fatalf("%q: item %d: id differs from encoding/json, or repeats: %+v", line, i, it)
		}
		ids[it.ItemID] = true
		if q, ok := l["quantity"].(json.Number); !ok || string(q) != strconv.FormatInt(it.Quantity, 10) {
			t.Fatalf("%q: item %d: quantity %v for encoding/json, %d for DecodeLine", line, i, l["quantity"], it.Quantity)
		}
		var priceText string
		switch v := l["price"].(type) {
		case string:
			priceText = v
		case json.Number:
			priceText = string(v)
		default:
			t.Fatalf("%q: item %d: price is %T", line, i, v)
		}
		if p, err := money.ParseSigned(priceText); err != nil || p != it.Price {
			t.Fatalf("%q: item %d: price %q, DecodeLine says %v", line, i, priceText, it.Price)
		}
		amount, err := money.Mul(it.Price, it.Quantity)
		if err == nil {
			sum, err = money.Add(sum, amount)
		}
		if err != nil {
			t.Fatalf("%q: amount overflows", line)
		}
	}
	if sum != req.Amount {
		t.Fatalf("%q: amount %v, want %v", line, req.Amount, sum)
	}
	if one := len(req.Items) == 1; one && (req.ItemID != req.Items[0].ItemID || req.Quantity != req.Items[0].Quantity || req.Price != req.Items[0].Price) ||
		!one && (req.ItemID != "" || req.Quantity != 0 || req.Price != 0) {
		t.Fatalf("%q: not normalized: %+v", line, req)
	}
	pd, ok := m["payment_details"].(map[string]any)
	if !ok {
		t.Fatalf("%q: payment_details is %T", line, m["payment_details"])
	}
	var digits []byte
	for _, c := range []byte(str(pd["card_number"], "card_number")) {
		switch {
		case isDigit(c):
			digits = append(digits, c)
		case c == ' ' || c == '-':
		default:
			t.Fatalf("%q: card number with %q", line, c)
		}
	}
	if len(digits) < 12 || len(digits) > 19 || !luhn(digits) || string(digits[len(digits)-4:]) != req.Card.Last4 {
		t.Fatalf("%q: card number %s, last4 %q", line, digits, req.Card.Last4)
	}
	exp := str(pd["expiry"], "expiry")
	if len(exp) != 5 || exp[:2] != twoDigits(req.Card.ExpMonth) || exp[2] != '/' || exp[3:] != twoDigits(req.Card.ExpYear-2000) {
		t.Fatalf("%q: expiry %q, card %+v", line, exp, req.Card)
	}
	if cvv := str(pd["cvv"], "cvv"); len(cvv) < 3 || len(cvv) > 4 || !allDigits(cvv) {
		t.Fatalf("%q: cvv %q", line, cvv)
	}
}

func twoDigits(v int) string { return string([]byte{byte('0' + v/10), byte('0' + v%10)}) }

// luhn is the check, written the other way round from DecodeLine's.
func luhn(digits []byte) bool {
	sum := 0
	double := len(digits)%2 == 0
	for _, c := range digits {
		v := int(c - '0')
		if double {
			v = v * 2 % 9
			if c == '9' {
				v = 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}

func TestLuhnHelper(t *testing.T) {
	for _, n := range []string{"4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "79927398713"} {
		if !luhn([]byte(n)) {
			t.Errorf("luhn(%s) = false", n)
		}
	}
	for _, n := range []string{"4111111111111112", "79927398710", "4111111111111121"} {
		if luhn([]byte(n)) {
			t.Errorf("luhn(%s) = true", n)
		}
	}
}

// FuzzBinary checks that UnmarshalBinary never panics, and that whatever it
// accepts is a valid, normalized request whose encoding is exactly the
// input (one encoding per request and version; version 1 is re-encoded
// with the encoder of version 1 that it had).
func FuzzBinary(f *testing.F) {
	for _, s := range []string{goodBinary, goodBinaryV1, goodMultiBinary} {
		good, _ := hex.DecodeString(s)
		f.Add(good)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Request
		if err := r.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrBadBinary) {
				t.Fatalf("%x: error %v does not wrap ErrBadBinary", data, err)
			}
			if !reflect.DeepEqual(r, Request{}) {
				t.Fatalf("%x: error %v, and the request changed", data, err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("%x: accepted, but %v", data, err)
		}
		if len(r.Items) == 0 || len(r.Items) == 1 && r.ItemID == "" || len(r.Items) > 1 && r.ItemID != "" {
			t.Fatalf("%x: not normalized: %+v", data, r)
		}
		var back []byte
		var err error
		if data[0] == 1 {
			if len(r.Items) != 1 {
				t.Fatalf("%x: version 1 with %d items", data, len(r.Items))
			}
			back = appendBinaryV1(nil, &r)
		} else {
			back, err = r.MarshalBinary()
		}
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("%x: decodes to %+v, which encodes to %x, %v", data, r, back, err)
		}
	})
}

// FuzzBinaryRoundTrip checks that every valid request encodes, and decodes
// back to itself (normalized), and that an invalid one does not encode.
// The request has one line (item, qty, price) in the single-item form when
// n is 0; otherwise Items has n lines (at most MaxItems+1), the first being
// (item, qty, price) and the others (item2+index, qty2, price2), with the
// line at index dup, if any, a copy of the first.
func FuzzBinaryRoundTrip(f *testing.F) {
	f.Add("t1", "u1", "i1", int64(2), int64(999), "1111", 12, 2029, uint8(0), "", int64(0), int64(0), uint8(0))
	f.Add("é", "😀", "x", int64(MaxQuantity), int64(MaxPrice), "0000", 1, 2000, uint8(0), "", int64(0), int64(0), uint8(0))
	f.Add("", "u", "i", int64(0), int64(-1), "12", 13, 29, uint8(0), "", int64(0), int64(0), uint8(0))
	f.Add("t1", "u1", "i1", int64(2), int64(999), "1111", 12, 2029, uint8(3), "j", int64(1), int64(50), uint8(0))
	f.Add("t1", "u1", "i1", int64(2), int64(999), "1111", 12, 2029, uint8(100), "j", int64(MaxQuantity), int64(MaxPrice), uint8(0))
	f.Add("t1", "u1", "i1", int64(2), int64(999), "1111", 12, 2029, uint8(3), "j", int64(1), int64(50), uint8(2))
	f.Fuzz(func(t *testing.T, tx, user, item string, qty, price int64, last4 string, month, year int,
		n uint8, item2 string, qty2, price2 int64, dup uint8) {
		r := Request{TxID: tx, UserID: user, Card: Card{Last4: last4, ExpMonth: month, ExpYear: year}}
		if n == 0 {
			r.ItemID, r.Quantity, r.Price = item, qty, money.Cents(price)
		} else {
			r.Items = []LineItem{{ItemID: item, Quantity: qty, Price: money.Cents(price)}}
			for i := 1; i < min(int(n), MaxItems+1); i++ {
				r.Items = append(r.Items, LineItem{ItemID: item2 + strconv.Itoa(i), Quantity: qty2, Price: money.Cents(price2)})
			}
			if int(dup) > 0 && int(dup) < len(r.Items) {
				r.Items[dup] = r.Items[0]
			}
		}
		for _, it := range r.Lines() { // an overflow makes an invalid request
			amount, _ := money.Mul(it.Price, it.Quantity)
			r.Amount, _ = money.Add(r.Amount, amount)
		}
		data, err := r.MarshalBinary()
		if r.Validate() != nil {
			if err == nil {
				t.Fatalf("%+v: invalid, but encodes", r)
			}
			return
		}
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		want := r
		if n == 0 {
			want.Items = r.Lines()
		} else if len(r.Items) == 1 {
			want.ItemID, want.Quantity, want.Price = item, qty, money.Cents(price)
		}
		var back Request
		if err := back.UnmarshalBinary(data); err != nil || !reflect.DeepEqual(back, want) {
			t.Fatalf("%+v: round trip gives %+v, %v", r, back, err)
		}
	})
}

// FuzzParseWorld checks that ParseWorld never panics, and that a world it
// accepts is valid and survives MarshalJSON.
func FuzzParseWorld(f *testing.F) {
	data, _ := ExampleWorld().MarshalJSON()
	f.Add(data)
	f.Add([]byte(`{"items":{"i1":{"stock":1}},"accounts":{"u1":{"balance":1.5}}}`))
	f.Add([]byte(`{"items":{"i1":{"stock":1,"stock":2}},"accounts":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseWorld(data)
		if err != nil {
			var se *SyntaxError
			var fe *FieldError
			if !errors.As(err, &se) && !errors.As(err, &fe) {
				t.Fatalf("%q: error %T %v", data, err, err)
			}
			if errors.As(err, &se) && json.Valid(data) && se.Reason != "invalid UTF-8 in string" &&
				se.Reason != "lone surrogate in \\u escape" && se.Reason != "nested deeper than 64 levels" {
				t.Fatalf("%q: encoding/json accepts it, but %v", data, err)
			}
			return
		}
		if err := w.Validate(); err != nil {
			t.Fatalf("%q: accepted, but %v", data, err)
		}
		out, _ := w.MarshalJSON()
		back, err := ParseWorld(out)
		if err != nil || !reflect.DeepEqual(back, w) {
			t.Fatalf("%q: round trip through %s: %+v, %v", data, out, back, err)
		}
	})
}
