package purchase

import (
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/dtx-dev/dtx/money"
)

// Limits of a request. Each is checked by DecodeLine and Request.Validate.
const (
	// MaxIDBytes bounds transaction_id, user_id and item_id, in bytes.
	MaxIDBytes = 128
	// MaxQuantity bounds quantity; the least quantity is 1.
	MaxQuantity = 1_000_000
	// MaxPrice bounds price (per item); the least price is 0.01. With
	// MaxQuantity it keeps every amount far below money.Max.
	MaxPrice money.Cents = 1_000_000_000_00
)

// Request is one purchase: user UserID buys Quantity of item ItemID at Price
// each, paying Amount with Card. TxID is the caller's idempotency key.
type Request struct {
	TxID     string
	UserID   string
	ItemID   string
	Quantity int64
	Price    money.Cents // per item
	Amount   money.Cents // Quantity * Price
	Card     Card
}

// Card is what dtx keeps of the payment details. The full card number and
// the CVV are checked when a request is decoded and then dropped: they are
// never stored, logged or sent.
type Card struct {
	Last4    string // the last four digits of the card number
	ExpMonth int    // 1..12
	ExpYear  int    // four digits: expiry "12/29" is month 12 of 2029
}

// FieldError reports a field of a request or world that breaks a rule.
type FieldError struct {
	// Field names the field as written in the input: "price",
	// "payment_details.card_number", `items["i1"].stock`. It is empty for a
	// problem with the whole value ("expected a JSON object, got array").
	Field string
	// Reason says what is wrong, fit to show a user:
	// "more than two decimal places", "missing", "duplicate key".
	Reason string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Reasons shared by the request and world formats.
const (
	reasonMissing   = "missing"
	reasonDuplicate = "duplicate key"
	reasonEmpty     = "must not be empty"
	reasonSpace     = "contains whitespace or control characters"
	reasonUTF8      = "invalid UTF-8"
	reasonInteger   = "must be an integer"
	reasonPositive  = "must be greater than 0"
	reasonLuhn      = "fails the Luhn check"
	reasonCardChars = "must contain only digits, spaces and dashes"
	reasonCardLen   = "must have 12 to 19 digits"
	reasonExpiry    = "must be MM/YY"
	reasonMonth     = "month must be between 01 and 12"
	reasonCVV       = "must be 3 or 4 digits"
)

var (
	reasonIDLength      = "longer than " + strconv.Itoa(MaxIDBytes) + " bytes"
	reasonQuantityRange = "must be between 1 and " + strconv.Itoa(MaxQuantity)
	reasonPriceMax      = "must be at most " + MaxPrice.String()
)

func mustBe(what string, got kind) string { return "must be " + what + ", got " + got.String() }

// checkID returns why s is not a valid id, or "". An id is 1 to MaxIDBytes
// bytes of UTF-8 with no whitespace, control or format characters, so that
// it prints on one line and reads the same to everyone.
func checkID(s string) string {
	switch {
	case len(s) == 0:
		return reasonEmpty
	case len(s) > MaxIDBytes:
		return reasonIDLength
	case !utf8.ValidString(s):
		return reasonUTF8
	}
	for _, r := range s {
		if badIDRune(r) {
			return reasonSpace
		}
	}
	return ""
}

// checkIDBytes is checkID for a []byte, without a copy.
func checkIDBytes(b []byte) string {
	switch {
	case len(b) == 0:
		return reasonEmpty
	case len(b) > MaxIDBytes:
		return reasonIDLength
	case !utf8.Valid(b):
		return reasonUTF8
	}
	for _, r := range string(b) { // does not allocate
		if badIDRune(r) {
			return reasonSpace
		}
	}
	return ""
}

func badIDRune(r rune) bool {
	if r < utf8.RuneSelf {
		return r <= ' ' || r == 0x7f
	}
	return unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}

// Validate checks every rule DecodeLine enforces on the fields a Request
// keeps, and that Amount is Quantity * Price. Errors are *FieldError, named
// like the input fields; the card's fields are "card.last4",
// "card.exp_month" and "card.exp_year".
func (r *Request) Validate() error {
	for _, f := range [...]struct{ name, v string }{
		{"transaction_id", r.TxID}, {"user_id", r.UserID}, {"item_id", r.ItemID},
	} {
		if reason := checkID(f.v); reason != "" {
			return &FieldError{Field: f.name, Reason: reason}
		}
	}
	if r.Quantity < 1 || r.Quantity > MaxQuantity {
		return &FieldError{Field: "quantity", Reason: reasonQuantityRange}
	}
	if reason := checkPrice(r.Price); reason != "" {
		return &FieldError{Field: "price", Reason: reason}
	}
	if amount, err := money.Mul(r.Price, r.Quantity); err != nil || amount != r.Amount {
		return &FieldError{Field: "amount", Reason: "must equal quantity × price"}
	}
	if len(r.Card.Last4) != 4 || !allDigits(r.Card.Last4) {
		return &FieldError{Field: "card.last4", Reason: "must be 4 digits"}
	}
	if r.Card.ExpMonth < 1 || r.Card.ExpMonth > 12 {
		return &FieldError{Field: "card.exp_month", Reason: "must be between 1 and 12"}
	}
	if r.Card.ExpYear < 2000 || r.Card.ExpYear > 2099 {
		return &FieldError{Field: "card.exp_year", Reason: "must be between 2000 and 2099"}
	}
	return nil
}

func checkPrice(c money.Cents) string {
	switch {
	case c <= 0:
		return reasonPositive
	case c > MaxPrice:
		return reasonPriceMax
	}
	return ""
}

func allDigits[T string | []byte](s T) bool {
	for i := range len(s) {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
