package purchase

import (
	"bytes"
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
	fieldItems // never missing: item_id, quantity and price are
	numFields
)

var fieldNames = [numFields]string{
	"transaction_id", "user_id", "item_id", "quantity", "price", "payment_details", "items",
}

// isSingle tells the fields of the single-item form, which items replaces.
func isSingle(f int) bool { return f == fieldItem || f == fieldQuantity || f == fieldPrice }

// Fields of an entry of items.
const (
	lineItem = iota
	lineQuantity
	linePrice
	numLineFields
)

var lineKeys = [numLineFields]string{"item_id", "quantity", "price"}

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

// lineSpan is a decoded entry of items, its id in the buffer of DecodeLine.
type lineSpan struct {
	id       span
	quantity int64
	price    money.Cents
}

// decoder decodes one request line. It keeps the first field error and goes
// on to the end of the line, so that a syntax error anywhere wins over a
// field error, and so that the transaction id is found wherever it is.
type decoder struct {
	s   scanner
	err *FieldError
	// line is the index of the entry of items being read, or -1 outside
	// items. Inside, field names are relative to the entry ("price" stands
	// for "items[2].price", "" for "items[2]").
	line int

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

	// itemsForm tells that the line has items. Its entries go to a slice
	// that is passed along, like the buffer.
	itemsForm bool
}

func (d *decoder) fail(field, reason string) {
	if d.err == nil {
		if d.line >= 0 {
			field = itemField(d.line, field)
		}
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
	var lineArr [8]lineSpan // room for the entries of items of most orders
	d := decoder{s: scanner{data: line}, line: -1}
	buf, lines, err := d.decodeLine(arr[:0], lineArr[:0])
	if err != nil {
		return Request{}, err
	}
	if !d.itemsForm {
		lines = append(lines[:0], lineSpan{id: d.spans[fieldItem], quantity: d.quantity, price: d.price})
	}
	var amount money.Cents
	if d.err == nil {
		amount, d.err = lineTotal(lines)
	}
	if d.err != nil {
		var req Request
		if d.txOK {
			sp := d.spans[fieldTxID]
			req.TxID = string(buf[sp.start:sp.end])
		}
		return req, d.err
	}
	all := string(buf)
	sub := func(sp span) string { return all[sp.start:sp.end] }
	d.card.Last4 = sub(d.last4)
	items := make([]LineItem, len(lines))
	for i, l := range lines {
		items[i] = LineItem{ItemID: sub(l.id), Quantity: l.quantity, Price: l.price}
	}
	req := Request{
		TxID:   sub(d.spans[fieldTxID]),
		UserID: sub(d.spans[fieldUser]),
		Items:  items,
		Amount: amount,
		Card:   d.card,
	}
	if len(items) == 1 {
		req.ItemID, req.Quantity, req.Price = items[0].ItemID, items[0].Quantity, items[0].Price
	}
	return req, nil
}

// lineTotal is total for decoded lines.
func lineTotal(lines []lineSpan) (money.Cents, *FieldError) {
	var sum money.Cents
	for _, l := range lines {
		amount, _ := money.Mul(l.price, l.quantity) // within MaxQuantity and MaxPrice
		var err error
		if sum, err = money.Add(sum, amount); err != nil {
			return 0, &FieldError{Field: "items", Reason: reasonTotalMax}
		}
	}
	return sum, nil
}

// decodeLine appends the decoded strings to buf and the entries of items to
// lines. It returns syntax errors; field errors go to d.err.
func (d *decoder) decodeLine(buf []byte, lines []lineSpan) ([]byte, []lineSpan, error) {
	s := &d.s
	k := s.peek()
	if k == kindNone {
		return buf, lines, s.unexpected("a JSON object")
	}
	if k != kindObject {
		if err := s.skipValue(); err != nil {
			return buf, lines, err
		}
		if err := s.end(); err != nil {
			return buf, lines, err
		}
		d.fail("", "expected a JSON object, got "+k.String())
		return buf, lines, nil
	}
	_ = s.enter() // depth 0: cannot fail
	var seen [numFields]bool
	for first := true; ; first = false {
		key, escaped, more, err := s.member(first)
		if err != nil {
			return buf, lines, err
		}
		if !more {
			break
		}
		f := lookup(key, escaped, fieldNames[:])
		if f < 0 {
			if err := s.skipValue(); err != nil {
				return buf, lines, err
			}
			continue
		}
		if seen[f] {
			d.fail(fieldNames[f], reasonDuplicate)
			if err := s.skipValue(); err != nil {
				return buf, lines, err
			}
			continue
		}
		seen[f] = true
		if d.bothForms(f, &seen) {
			if err := s.skipValue(); err != nil {
				return buf, lines, err
			}
			continue
		}
		switch f {
		case fieldTxID, fieldUser, fieldItem:
			var sp span
			var ok bool
			if buf, sp, ok, err = d.id(fieldNames[f], buf); ok {
				d.spans[f] = sp
				d.txOK = d.txOK || f == fieldTxID
			}
		case fieldQuantity:
			d.quantity, err = d.decodeQuantity(fieldNames[f])
		case fieldPrice:
			d.price, err = d.decodePrice(fieldNames[f])
		case fieldPayment:
			buf, err = d.payment(buf)
		case fieldItems:
			buf, lines, err = d.items(buf, lines)
		}
		if err != nil {
			return buf, lines, err
		}
	}
	if err := s.end(); err != nil {
		return buf, lines, err
	}
	for f, ok := range seen {
		if !ok && f != fieldItems && !(isSingle(f) && seen[fieldItems]) {
			d.fail(fieldNames[f], reasonMissing)
		}
	}
	return buf, lines, nil
}

// bothForms reports, as a field error of f, a line that has both items
// and a field of the single-item form.
func (d *decoder) bothForms(f int, seen *[numFields]bool) bool {
	switch {
	case f == fieldItems:
		for _, g := range [...]int{fieldItem, fieldQuantity, fieldPrice} {
			if seen[g] {
				d.fail(fieldNames[f], "cannot be given with "+fieldNames[g])
				return true
			}
		}
	case isSingle(f) && seen[fieldItems]:
		d.fail(fieldNames[f], "cannot be given with items")
		return true
	}
	return false
}

// items reads the array of line items and appends its entries to lines.
func (d *decoder) items(buf []byte, lines []lineSpan) ([]byte, []lineSpan, error) {
	s := &d.s
	if k := s.peek(); k != kindArray {
		d.fail("items", mustBe("an array", k))
		return buf, lines, s.skipValue()
	}
	if err := s.enter(); err != nil {
		return buf, lines, err
	}
	d.itemsForm = true
	n := 0
	for first := true; ; first = false {
		more, err := s.element(first)
		if err != nil {
			return buf, lines, err
		}
		if !more {
			break
		}
		if n == MaxItems {
			d.fail("items", reasonTooManyItems)
			if err := s.skipValue(); err != nil {
				return buf, lines, err
			}
			continue
		}
		d.line = n
		buf, lines, err = d.lineItem(buf, lines)
		d.line = -1
		if err != nil {
			return buf, lines, err
		}
		n++
	}
	s.depth--
	if n == 0 {
		d.fail("items", reasonEmpty)
	}
	return buf, lines, nil
}

// lineItem reads entry d.line of items and appends it to lines.
func (d *decoder) lineItem(buf []byte, lines []lineSpan) ([]byte, []lineSpan, error) {
	s := &d.s
	var l lineSpan
	if k := s.peek(); k != kindObject {
		d.fail("", mustBe("an object", k))
		return buf, append(lines, l), s.skipValue()
	}
	if err := s.enter(); err != nil {
		return buf, lines, err
	}
	var seen [numLineFields]bool
	for first := true; ; first = false {
		key, escaped, more, err := s.member(first)
		if err != nil {
			return buf, lines, err
		}
		if !more {
			break
		}
		f := lookup(key, escaped, lineKeys[:])
		if f < 0 {
			if err := s.skipValue(); err != nil {
				return buf, lines, err
			}
			continue
		}
		if seen[f] {
			d.fail(lineKeys[f], reasonDuplicate)
			if err := s.skipValue(); err != nil {
				return buf, lines, err
			}
			continue
		}
		seen[f] = true
		switch f {
		case lineItem:
			var ok bool
			if buf, l.id, ok, err = d.id(lineKeys[f], buf); ok {
				id := buf[l.id.start:l.id.end]
				for j, prev := range lines {
					if bytes.Equal(buf[prev.id.start:prev.id.end], id) {
						d.fail(lineKeys[f], reasonSameItem(j))
						break
					}
				}
			}
		case lineQuantity:
			l.quantity, err = d.decodeQuantity(lineKeys[f])
		case linePrice:
			l.price, err = d.decodePrice(lineKeys[f])
		}
		if err != nil {
			return buf, lines, err
		}
	}
	s.depth--
	for f, ok := range seen {
		if !ok {
			d.fail(lineKeys[f], reasonMissing)
		}
	}
	return buf, append(lines, l), nil
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

// id reads an id and appends it to buf. When it is a valid id, ok is true
// and sp is where it is in buf.
func (d *decoder) id(field string, buf []byte) (_ []byte, sp span, ok bool, err error) {
	raw, escaped, ok, err := d.str(field)
	if !ok {
		return buf, span{}, false, err
	}
	start := len(buf)
	if escaped {
		buf = unescape(buf, raw)
	} else {
		buf = append(buf, raw...)
	}
	if reason := checkIDBytes(buf[start:]); reason != "" {
		d.fail(field, reason)
		return buf[:start], span{}, false, nil
	}
	return buf, span{start, len(buf)}, true, nil
}

func (d *decoder) decodeQuantity(field string) (int64, error) {
	k := d.s.peek()
	if k != kindNumber {
		d.fail(field, mustBe("an integer", k))
		return 0, d.s.skipValue()
	}
	lit, err := d.s.readNumber()
	if err != nil {
		return 0, err
	}
	q, reason := parseQuantity(lit)
	if reason != "" {
		d.fail(field, reason)
	}
	return q, nil
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

func (d *decoder) decodePrice(field string) (money.Cents, error) {
	var tmp [32]byte
	var txt []byte
	switch k := d.s.peek(); k {
	case kindNumber:
		lit, err := d.s.readNumber()
		if err != nil {
			return 0, err
		}
		txt = lit
	case kindString:
		raw, escaped, err := d.s.readString()
		if err != nil {
			return 0, err
		}
		txt = text(raw, escaped, tmp[:])
	default:
		d.fail(field, mustBe("a number or a string", k))
		return 0, d.s.skipValue()
	}
	p, reason := parsePrice(txt)
	if reason != "" {
		d.fail(field, reason)
	}
	return p, nil
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
