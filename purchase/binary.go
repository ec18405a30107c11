package purchase

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/dtx-dev/dtx/money"
)

// Binary form of a Request, the business operation that travels inside a
// 2PC PREPARE and is logged with a participant's PREPARED record:
//
//	version   1 byte    binaryVersion (2)
//	tx_id     uvarint length, then the bytes
//	user_id   uvarint length, then the bytes
//	items     uvarint   the number of lines, 1..MaxItems; then per line:
//	  item_id   uvarint length, then the bytes
//	  quantity  uvarint
//	  price     uvarint   cents
//	last4     4 bytes   ASCII digits
//	exp_month 1 byte    1..12
//	exp_year  uvarint   2000..2099
//
// Amount is not stored: it is the sum of quantity*price, computed again on
// decoding. A uvarint must use its shortest form, and nothing may follow
// exp_year, so that every request has exactly one encoding. There is no
// card number and no CVV: a Request holds neither. Framing and checksums
// belong to the carrier (the log record or the message).
//
// Version 1, the form before multi-item orders, is still decoded, so that
// logs written by earlier releases replay; it is never written. It is
// version 2 with exactly one line and no count:
//
//	version 1, tx_id, user_id, item_id, quantity, price, last4, exp_month, exp_year

const (
	binaryVersion   = 2
	binaryVersionV1 = 1 // one item; read, never written
)

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
	if len(r.Items) == 0 { // the single-item form
		b = binary.AppendUvarint(b, 1)
		b = appendLine(b, r.ItemID, r.Quantity, r.Price)
	} else {
		b = binary.AppendUvarint(b, uint64(len(r.Items)))
		for _, it := range r.Items {
			b = appendLine(b, it.ItemID, it.Quantity, it.Price)
		}
	}
	b = append(b, r.Card.Last4...)
	b = append(b, byte(r.Card.ExpMonth))
	b = binary.AppendUvarint(b, uint64(r.Card.ExpYear))
	return b, nil
}

func appendLine(b []byte, item string, quantity int64, price money.Cents) []byte {
	b = appendString(b, item)
	b = binary.AppendUvarint(b, uint64(quantity))
	return binary.AppendUvarint(b, uint64(price))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// MarshalBinary returns the binary form of r; see AppendBinary.
func (r *Request) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, 64))
}

// binLine is a line as read from the binary form, its id in the input.
type binLine struct {
	id              span
	quantity, price uint64
}

// UnmarshalBinary decodes the binary form of a request (version 2, or 1)
// into r, normalized as DecodeLine's requests are. It rejects any other
// input with an error wrapping ErrBadBinary (and the *FieldError of a rule
// the decoded request breaks), and leaves r unchanged then. It allocates
// twice: the request's strings, in one allocation no larger than
// len(data), and Items.
func (r *Request) UnmarshalBinary(data []byte) error {
	d := binReader{data: data}
	v := d.u8("version")
	if d.err == nil && v != binaryVersion && v != binaryVersionV1 {
		return fmt.Errorf("%w: unknown version %d", ErrBadBinary, v)
	}
	tx := d.bytes("transaction_id", MaxIDBytes)
	user := d.bytes("user_id", MaxIDBytes)
	n := uint64(1)
	if v == binaryVersion {
		at := d.pos
		n = d.uvarint("items")
		if d.err == nil && (n < 1 || n > MaxItems) {
			d.pos = at
			d.fail("items", "count "+strconv.FormatUint(n, 10)+" not in 1.."+strconv.Itoa(MaxItems))
		}
	}
	var lines [MaxItems]binLine
	for i := range n {
		if d.err != nil {
			break
		}
		l := &lines[i]
		l.id = d.bytes("item_id", MaxIDBytes)
		l.quantity = d.uvarint("quantity")
		l.price = d.uvarint("price")
	}
	last4 := d.fixed("last4", 4)
	month := d.u8("exp_month")
	year := d.uvarint("exp_year")
	if d.err != nil {
		return d.err
	}
	if d.pos != len(data) {
		return fmt.Errorf("%w: %d bytes after the end", ErrBadBinary, len(data)-d.pos)
	}
	for _, l := range lines[:n] {
		if l.quantity > MaxQuantity || l.price > uint64(MaxPrice) {
			return fmt.Errorf("%w: quantity, price or exp_year out of range", ErrBadBinary)
		}
	}
	if year > 9999 {
		return fmt.Errorf("%w: quantity, price or exp_year out of range", ErrBadBinary)
	}
	// The strings share one allocation, no larger than data.
	all := string(data[tx.start:last4.end])
	base := tx.start
	sub := func(sp span) string { return all[sp.start-base : sp.end-base] }
	items := make([]LineItem, n)
	for i, l := range lines[:n] {
		items[i] = LineItem{ItemID: sub(l.id), Quantity: int64(l.quantity), Price: money.Cents(l.price)}
	}
	amount, err := total(items) // each line is within the limits just checked
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadBinary, err)
	}
	req := Request{
		TxID:   sub(tx),
		UserID: sub(user),
		Items:  items,
		Amount: amount,
		Card:   Card{Last4: sub(last4), ExpMonth: int(month), ExpYear: int(year)},
	}
	if n == 1 {
		req.ItemID, req.Quantity, req.Price = items[0].ItemID, items[0].Quantity, items[0].Price
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

// BinaryCache remembers the last request it decoded, so that a service that
// reads one operation several times in a row (its lock keys, then its
// prepare) decodes it once. The zero value is ready; it is not safe for
// concurrent use. Requests it returns share memory with each other: treat
// them as read-only.
type BinaryCache struct {
	op  []byte
	req Request
}

// Decode returns op decoded, from the cache when op is the last one seen.
// The cache keeps a reference to op, which must not change afterwards.
func (c *BinaryCache) Decode(op []byte) (Request, error) {
	if c.op != nil && bytes.Equal(op, c.op) {
		return c.req, nil
	}
	var r Request
	if err := r.UnmarshalBinary(op); err != nil {
		return r, err
	}
	c.op, c.req = op, r
	return r, nil
}
