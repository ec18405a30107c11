package purchase

import (
	"errors"

	"github.com/dtx-dev/dtx/money"
)

// Fields of a request line, in the order missing ones are reported.
const (
	fieldTxID = iota
	fieldUser
	fieldItem
	fieldQuantity
	fieldPrice
	fieldPayment
	numFields
)

var fieldNames = [numFields]string{
	"transaction_id", "user_id", "item_id", "quantity", "price", "payment_details",
}

// Fields of payment_details.
const (
	payCard = iota
	payExpiry
	payCVV
	numPayFields
)

var payKeys = [numPayFields]string{"card_number", "expiry", "cvv"}

var payNames = [numPayFields]string{
	"payment_details.card_number", "payment_details.expiry", "payment_details.cvv",
}

// span is where a decoded string sits in the buffer of DecodeLine.
type span struct{ start, end int }

// decoder decodes one request line. It keeps the first field error and goes
// on to the end of the line, so that a syntax error anywhere wins over a
// field error, and so that the transaction id is found wherever it is.
type decoder struct {
	s   scanner
	err *FieldError

	// The decoded ids and the card's last four digits go to one buffer, so
	// that the Request's strings cost one allocation. The buffer lives on
	// the stack of DecodeLine and is passed along rather than kept here: a
	// slice stored through a pointer would move it to the heap.
	spans [numFields]span // in the buffer, of fieldTxID, fieldUser, fieldItem
	last4 span
	txOK  bool

	quantity int64
	price    money.Cents
	card     Card
}

func (d *decoder) fail(field, reason string) {
	if d.err == nil {
		d.err = &FieldError{Field: field, Reason: reason}
	}
}

// DecodeLine decodes one line of the request format (see the package doc).
//
// Errors are a *SyntaxError when the line is not JSON, and otherwise a
// *FieldError for the first field that breaks a rule, in the order of the
// line (a missing field is reported at the end of its object). On error the
// Request is zero, except TxID when the line is JSON and its transaction_id
// is valid, so that the caller can report the failure under that id.
func DecodeLine(line []byte) (Request, error) {
	var arr [3*MaxIDBytes + 4]byte
	d := decoder{s: scanner{data: line}}
	buf, err := d.decodeLine(arr[:0])
	if err != nil {
		return Request{}, err
	}
	if d.err != nil {
		var req Request
		if d.txOK {
			sp := d.spans[fieldTxID]
			req.TxID = string(buf[sp.start:sp.end])
		}
		return req, d.err
	}
	amount, err := money.Mul(d.price, d.quantity)
	if err != nil { // cannot happen within MaxQuantity and MaxPrice
		return Request{}, &FieldError{Field: "amount", Reason: "quantity × price is out of range"}
	}
	all := string(buf)
	sub := func(sp span) string { return all[sp.start:sp.end] }
	d.card.Last4 = sub(d.last4)
	return Request{
		TxID:     sub(d.spans[fieldTxID]),
		UserID:   sub(d.spans[fieldUser]),
		ItemID:   sub(d.spans[fieldItem]),
		Quantity: d.quantity,
		Price:    d.price,
		Amount:   amount,
		Card:     d.card,
	}, nil
}

// decodeLine appends the decoded strings to buf. It returns syntax errors;
// field errors go to d.err.
func (d *decoder) decodeLine(buf []byte) ([]byte, error) {
	s := &d.s
	k := s.peek()
	if k == kindNone {
		return buf, s.unexpected("a JSON object")
	}
	if k != kindObject {
		if err := s.skipValue(); err != nil {
			return buf, err
		}
		if err := s.end(); err != nil {
			return buf, err
		}
		d.fail("", "expected a JSON object, got "+k.String())
		return buf, nil
	}
	_ = s.enter() // depth 0: cannot fail
	var seen [numFields]bool
	for first := true; ; first = false {
		key, escaped, more, err := s.member(first)
		if err != nil {
			return buf, err
		}
		if !more {
			break
		}
		f := lookup(key, escaped, fieldNames[:])
		if f < 0 {
			if err := s.skipValue(); err != nil {
				return buf, err
			}
			continue
		}
		if seen[f] {
			d.fail(fieldNames[f], reasonDuplicate)
			if err := s.skipValue(); err != nil {
				return buf, err
			}
			continue
		}
		seen[f] = true
		switch f {
		case fieldTxID, fieldUser, fieldItem:
			buf, err = d.id(f, buf)
		case fieldQuantity:
			err = d.decodeQuantity()
		case fieldPrice:
			err = d.decodePrice()
		case fieldPayment:
			buf, err = d.payment(buf)
		}
		if err != nil {
			return buf, err
		}
	}
	if err := s.end(); err != nil {
		return buf, err
	}
	for f, ok := range seen {
		if !ok {
			d.fail(fieldNames[f], reasonMissing)
		}
	}
	return buf, nil
}

// lookup returns the index of key in names, or -1.
func lookup(key []byte, escaped bool, names []string) int {
	if escaped {
		// Room for the longest known key with every character escaped.
		var tmp [len(`\u0000`) * len("payment_details")]byte
		if len(key) > len(tmp) {
			return -1
		}
		key = unescape(tmp[:0], key)
	}
	for i, name := range names {
		if string(key) == name {
			return i
		}
	}
	return -1
}

// str reads a string value. Any other value it records as a type error,
// skips, and returns with ok = false.
func (d *decoder) str(field string) (raw []byte, escaped, ok bool, err error) {
	if k := d.s.peek(); k != kindString {
		d.fail(field, mustBe("a string", k))
		return nil, false, false, d.s.skipValue()
	}
	raw, escaped, err = d.s.readString()
	return raw, escaped, err == nil, err
}

// text returns the string raw stands for, using tmp when it holds escapes.
func text(raw []byte, escaped bool, tmp []byte) []byte {
	if !escaped {
		return raw
	}
	return unescape(tmp[:0], raw)
}

func (d *decoder) id(f int, buf []byte) ([]byte, error) {
	raw, escaped, ok, err := d.str(fieldNames[f])
	if !ok {
		return buf, err
	}
	start := len(buf)
	if escaped {
		buf = unescape(buf, raw)
	} else {
		buf = append(buf, raw...)
	}
	if reason := checkIDBytes(buf[start:]); reason != "" {
		d.fail(fieldNames[f], reason)
		return buf[:start], nil
	}
	d.spans[f] = span{start, len(buf)}
	if f == fieldTxID {
		d.txOK = true
	}
	return buf, nil
}

func (d *decoder) decodeQuantity() error {
	const field = "quantity"
	k := d.s.peek()
	if k != kindNumber {
		d.fail(field, mustBe("an integer", k))
		return d.s.skipValue()
	}
	lit, err := d.s.readNumber()
	if err != nil {
		return err
	}
	q, reason := parseQuantity(lit)
	if reason != "" {
		d.fail(field, reason)
	}
	d.quantity = q
	return nil
}

// parseQuantity parses a JSON number literal as a quantity. Only an integer
// literal is an integer: 2.0 and 2e0 are refused, like "2".
func parseQuantity(lit []byte) (int64, string) {
	for _, c := range lit {
		if c == '.' || c == 'e' || c == 'E' {
			return 0, reasonInteger
		}
	}
	if lit[0] == '-' || len(lit) > 7 { // a literal has no leading zeros
		return 0, reasonQuantityRange
	}
	var q int64
	for _, c := range lit {
		q = q*10 + int64(c-'0')
	}
	if q < 1 || q > MaxQuantity {
		return 0, reasonQuantityRange
	}
	return q, ""
}

func (d *decoder) decodePrice() error {
	const field = "price"
	var tmp [32]byte
	var txt []byte
	switch k := d.s.peek(); k {
	case kindNumber:
		lit, err := d.s.readNumber()
		if err != nil {
			return err
		}
		txt = lit
	case kindString:
		raw, escaped, err := d.s.readString()
		if err != nil {
			return err
		}
		txt = text(raw, escaped, tmp[:])
	default:
		d.fail(field, mustBe("a number or a string", k))
		return d.s.skipValue()
	}
	p, reason := parsePrice(txt)
	if reason != "" {
		d.fail(field, reason)
	}
	d.price = p
	return nil
}

// parsePrice parses the text of a price (a number literal or the content of
// a string) with money.ParseSigned and checks its range.
func parsePrice(txt []byte) (money.Cents, string) {
	return parseAmount(txt, reasonPositive, checkPrice)
}

// parseAmount parses txt with money.ParseSigned; a negative value that is out
// of range gets reasonNegative, and a parsed value is checked with check.
func parseAmount(txt []byte, reasonNegative string, check func(money.Cents) string) (money.Cents, string) {
	c, err := money.ParseSigned(string(txt))
	if err != nil {
		var pe *money.ParseError
		switch {
		case errors.Is(err, money.ErrOverflow) && txt[0] == '-':
			return 0, reasonNegative
		case errors.Is(err, money.ErrOverflow):
			return 0, check(money.Max)
		case errors.As(err, &pe):
			return 0, pe.Reason
		default:
			return 0, err.Error()
		}
	}
	if reason := check(c); reason != "" {
		return 0, reason
	}
	return c, ""
}

func (d *decoder) payment(buf []byte) ([]byte, error) {
	s := &d.s
	if k := s.peek(); k != kindObject {
		d.fail("payment_details", mustBe("an object", k))
		return buf, s.skipValue()
	}
	if err := s.enter(); err != nil {
		return buf, err
	}
	var seen [numPayFields]bool
	for first := true; ; first = false {
		key, escaped, more, err := s.member(first)
		if err != nil {
			return buf, err
		}
		if !more {
			break
		}
		f := lookup(key, escaped, payKeys[:])
		if f < 0 {
			if err := s.skipValue(); err != nil {
				return buf, err
			}
			continue
		}
		if seen[f] {
			d.fail(payNames[f], reasonDuplicate)
			if err := s.skipValue(); err != nil {
				return buf, err
			}
			continue
		}
		seen[f] = true
		raw, escaped, ok, err := d.str(payNames[f])
		if err != nil {
			return buf, err
		}
		if !ok {
			continue
		}
		var tmp [64]byte
		txt := text(raw, escaped, tmp[:])
		var reason string
		switch f {
		case payCard:
			buf, reason = d.cardNumber(txt, buf)
		case payExpiry:
			reason = d.expiry(txt)
		case payCVV:
			if (len(txt) != 3 && len(txt) != 4) || !allDigits(txt) {
				reason = reasonCVV
			}
		}
		if reason != "" {
			d.fail(payNames[f], reason)
		}
	}
	s.depth--
	for f, ok := range seen {
		if !ok {
			d.fail(payNames[f], reasonMissing)
		}
	}
	return buf, nil
}

// cardNumber checks a card number and appends its last four digits to buf.
func (d *decoder) cardNumber(txt, buf []byte) ([]byte, string) {
	n := 0
	for _, c := range txt {
		switch {
		case isDigit(c):
			n++
		case c == ' ' || c == '-':
		default:
			return buf, reasonCardChars
		}
	}
	if n < 12 || n > 19 {
		return buf, reasonCardLen
	}
	// Luhn: from the right, double every second digit.
	sum, i := 0, 0
	var last4 [4]byte
	for j := len(txt) - 1; j >= 0; j-- {
		c := txt[j]
		if !isDigit(c) {
			continue
		}
		v := int(c - '0')
		if i < 4 {
			last4[3-i] = c
		}
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		i++
	}
	if sum%10 != 0 {
		return buf, reasonLuhn
	}
	start := len(buf)
	buf = append(buf, last4[:]...)
	d.last4 = span{start, len(buf)}
	return buf, ""
}

// expiry checks "MM/YY" and keeps the month and the year (20YY).
func (d *decoder) expiry(txt []byte) string {
	if len(txt) != 5 || txt[2] != '/' || !allDigits(txt[:2]) || !allDigits(txt[3:]) {
		return reasonExpiry
	}
	month := int(txt[0]-'0')*10 + int(txt[1]-'0')
	if month < 1 || month > 12 {
		return reasonMonth
	}
	d.card.ExpMonth = month
	d.card.ExpYear = 2000 + int(txt[3]-'0')*10 + int(txt[4]-'0')
	return ""
}
