package purchase

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/dtx-dev/dtx/money"
)

// Binary form of a Request, the business operation that travels inside a
// 2PC PREPARE and is logged with a participant's PREPARED record:
//
//	version   1 byte    binaryVersion (1)
//	tx_id     uvarint length, then the bytes
//	user_id   uvarint length, then the bytes
//	item_id   uvarint length, then the bytes
//	quantity  uvarint
//	price     uvarint   cents
//	last4     4 bytes   ASCII digits
//	exp_month 1 byte    1..12
//	exp_year  uvarint   2000..2099
//
// Amount is not stored: it is Quantity*Price, computed again on decoding. A
// uvarint must use its shortest form, and nothing may follow exp_year, so
// that every request has exactly one encoding. There is no card number and
// no CVV: a Request holds neither. Framing and checksums belong to the
// carrier (the log record or the message).

const binaryVersion = 1

// ErrBadBinary is wrapped by every error of UnmarshalBinary.
var ErrBadBinary = errors.New("purchase: malformed binary request")

// AppendBinary appends the binary form of r to b. It fails, with a
// *FieldError, when r breaks a rule of Validate. It implements
// encoding.BinaryAppender.
func (r *Request) AppendBinary(b []byte) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return b, err
	}
	b = append(b, binaryVersion)
	b = appendString(b, r.TxID)
	b = appendString(b, r.UserID)
	b = appendString(b, r.ItemID)
	b = binary.AppendUvarint(b, uint64(r.Quantity))
	b = binary.AppendUvarint(b, uint64(r.Price))
	b = append(b, r.Card.Last4...)
	b = append(b, byte(r.Card.ExpMonth))
	b = binary.AppendUvarint(b, uint64(r.Card.ExpYear))
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// MarshalBinary returns the binary form of r; see AppendBinary.
func (r *Request) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, 64))
}

// UnmarshalBinary decodes the binary form of a request into r. It rejects
// any other input with an error wrapping ErrBadBinary (and the *FieldError of
// a rule the decoded request breaks), and leaves r unchanged then. It never
// allocates more than len(data) bytes for the request's strings.
func (r *Request) UnmarshalBinary(data []byte) error {
	d := binReader{data: data}
	if v := d.u8("version"); d.err == nil && v != binaryVersion {
		return fmt.Errorf("%w: unknown version %d", ErrBadBinary, v)
	}
	var spans [3]span
	for i, name := range [3]string{"transaction_id", "user_id", "item_id"} {
		spans[i] = d.bytes(name, MaxIDBytes)
	}
	quantity := d.uvarint("quantity")
	price := d.uvarint("price")
	last4 := d.fixed("last4", 4)
	month := d.u8("exp_month")
	year := d.uvarint("exp_year")
	if d.err != nil {
		return d.err
	}
	if d.pos != len(data) {
		return fmt.Errorf("%w: %d bytes after the end", ErrBadBinary, len(data)-d.pos)
	}
	if quantity > MaxQuantity || price > uint64(MaxPrice) || year > 9999 {
		return fmt.Errorf("%w: quantity, price or exp_year out of range", ErrBadBinary)
	}
	// The strings share one allocation, no larger than data.
	all := string(data[spans[0].start:last4.end])
	base := spans[0].start
	sub := func(sp span) string { return all[sp.start-base : sp.end-base] }
	amount, _ := money.Mul(money.Cents(price), int64(quantity)) // within the limits just checked
	req := Request{
		TxID:     sub(spans[0]),
		UserID:   sub(spans[1]),
		ItemID:   sub(spans[2]),
		Quantity: int64(quantity),
		Price:    money.Cents(price),
		Amount:   amount,
		Card:     Card{Last4: sub(last4), ExpMonth: int(month), ExpYear: int(year)},
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadBinary, err)
	}
	*r = req
	return nil
}

// binReader reads the fields of the binary form; after the first error
// every read returns zero and err keeps that first error.
type binReader struct {
	data []byte
	pos  int
	err  error
}

func (d *binReader) fail(field, problem string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s %s at offset %d", ErrBadBinary, field, problem, d.pos)
	}
}

func (d *binReader) u8(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.pos >= len(d.data) {
		d.fail(field, "truncated")
		return 0
	}
	d.pos++
	return d.data[d.pos-1]
}

func (d *binReader) uvarint(field string) uint64 {
	v, problem := d.readUvarint()
	if problem != "" {
		d.fail(field, problem)
	}
	return v
}

// readUvarint reads a uvarint, or returns what is wrong with it.
func (d *binReader) readUvarint() (uint64, string) {
	if d.err != nil {
		return 0, ""
	}
	v, n := binary.Uvarint(d.data[d.pos:])
	switch {
	case n == 0:
		return 0, "truncated"
	case n < 0:
		return 0, "overflows 64 bits"
	case n > 1 && d.data[d.pos+n-1] == 0:
		return 0, "not in shortest form"
	}
	d.pos += n
	return v, ""
}

// fixed reads n bytes and returns where they are.
func (d *binReader) fixed(field string, n int) span {
	if d.err != nil {
		return span{}
	}
	if len(d.data)-d.pos < n {
		d.fail(field, "truncated")
		return span{}
	}
	d.pos += n
	return span{d.pos - n, d.pos}
}

// bytes reads a uvarint length of at most max, then that many bytes.
func (d *binReader) bytes(field string, max int) span {
	n, problem := d.readUvarint()
	switch {
	case d.err != nil:
		return span{}
	case problem != "":
		d.fail(field+" length", problem)
		return span{}
	case n > uint64(max):
		d.fail(field, "longer than "+strconv.Itoa(max)+" bytes")
		return span{}
	}
	return d.fixed(field, int(n))
}
