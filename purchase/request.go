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
	// MaxQuantity it keeps the amount of one line far below money.Max.
	MaxPrice money.Cents = 1_000_000_000_00
	// MaxItems bounds the entries of items, the lines of one order.
	MaxItems = 100
)

// Request is one purchase: user UserID buys the line items Items, paying
// Amount with Card. TxID is the caller's idempotency key. The order is
// atomic as a whole: every line is bought, or none.
//
// A request decoded by DecodeLine or UnmarshalBinary is normalized: Items
// holds 1 to MaxItems lines with distinct item ids, and ItemID, Quantity and
// Price repeat Items[0] when the order has exactly one line (whichever form
// the input used) and are zero when it has several. Code that handles only
// one-item orders may keep reading ItemID, Quantity and Price; code that
// handles every order reads Items.
//
// A request built by hand may instead leave Items empty and set ItemID,
// Quantity and Price: the single-item form. Validate, AppendBinary and
// MarshalBinary accept both; the encoding, and so the decoded request, is
// the same.
type Request struct {
	TxID     string
	UserID   string
	Items    []LineItem
	ItemID   string      // Items[0].ItemID of a one-item order, else ""
	Quantity int64       // Items[0].Quantity of a one-item order, else 0
	Price    money.Cents // Items[0].Price of a one-item order, else 0
	Amount   money.Cents // the sum of Quantity * Price over Items
	Card     Card
}

// LineItem is one line of an order: Quantity of item ItemID at Price each.
// Its JSON form is the one of the input format:
// {"item_id":"i1","quantity":2,"price":"9.99"}.
type LineItem struct {
	ItemID   string      `json:"item_id"`
	Quantity int64       `json:"quantity"`
	Price    money.Cents `json:"price"` // per item
}

// Lines returns the lines of the order: Items, or, when Items is empty, the
// one line of the single-item form (ItemID, Quantity, Price). The slice is
// Items itself when Items is not empty; do not modify it.
func (r *Request) Lines() []LineItem {
	if len(r.Items) > 0 {
		return r.Items
	}
	return []LineItem{{ItemID: r.ItemID, Quantity: r.Quantity, Price: r.Price}}
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
	reasonTooManyItems  = "more than " + strconv.Itoa(MaxItems) + " entries"
	reasonTotalMax      = "total amount is more than " + money.Max.String()
)

// reasonSameItem is the reason of an item_id that an earlier line of the
// same order already names.
func reasonSameItem(earlier int) string {
	return "same as items[" + strconv.Itoa(earlier) + "].item_id"
}

// itemField names a field of line i of items: "items[2].price", or the line
// itself ("items[2]") when field is "".
func itemField(i int, field string) string {
	name := "items[" + strconv.Itoa(i) + "]"
	if field != "" {
		name += "." + field
	}
	return name
}

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
// keeps, and that Amount is the sum of Quantity * Price over the lines.
// Errors are *FieldError, named like the input fields: "item_id",
// "quantity" and "price" in the single-item form, "items[2].price" when
// Items is set; the card's fields are "card.last4", "card.exp_month" and
// "card.exp_year".
func (r *Request) Validate() error {
	for _, f := range [...]struct{ name, v string }{
		{"transaction_id", r.TxID}, {"user_id", r.UserID},
	} {
		if reason := checkID(f.v); reason != "" {
			return &FieldError{Field: f.name, Reason: reason}
		}
	}
	var amount money.Cents
	if len(r.Items) == 0 {
		field, reason := checkLine(LineItem{ItemID: r.ItemID, Quantity: r.Quantity, Price: r.Price})
		if reason != "" {
			return &FieldError{Field: field, Reason: reason}
		}
		amount, _ = money.Mul(r.Price, r.Quantity) // within MaxQuantity and MaxPrice
		if amount != r.Amount {
			return &FieldError{Field: "amount", Reason: "must equal quantity × price"}
		}
	} else {
		if len(r.Items) > MaxItems {
			return &FieldError{Field: "items", Reason: reasonTooManyItems}
		}
		for i, it := range r.Items {
			if field, reason := checkLine(it); reason != "" {
				return &FieldError{Field: itemField(i, field), Reason: reason}
			}
			for j := range i {
				if r.Items[j].ItemID == it.ItemID {
					return &FieldError{Field: itemField(i, "item_id"), Reason: reasonSameItem(j)}
				}
			}
		}
		if r.ItemID != "" || r.Quantity != 0 || r.Price != 0 {
			one := LineItem{ItemID: r.ItemID, Quantity: r.Quantity, Price: r.Price}
			if len(r.Items) != 1 || r.Items[0] != one {
				return &FieldError{Field: "items", Reason: "disagrees with item_id, quantity and price, which must be zero or repeat its one entry"}
			}
		}
		var err error
		if amount, err = total(r.Items); err != nil {
			return err
		}
		if amount != r.Amount {
			return &FieldError{Field: "amount", Reason: "must equal the sum of quantity × price over items"}
		}
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

// checkLine returns the field of a line that breaks a rule and why, or "".
func checkLine(it LineItem) (field, reason string) {
	if reason := checkID(it.ItemID); reason != "" {
		return "item_id", reason
	}
	if it.Quantity < 1 || it.Quantity > MaxQuantity {
		return "quantity", reasonQuantityRange
	}
	if reason := checkPrice(it.Price); reason != "" {
		return "price", reason
	}
	return "", ""
}

// total returns the sum of Quantity * Price over lines that keep the limits
// of checkLine, or a *FieldError for items when it is above money.Max (which
// takes more than 92 lines at the limits).
func total(lines []LineItem) (money.Cents, error) {
	var sum money.Cents
	for _, it := range lines {
		amount, _ := money.Mul(it.Price, it.Quantity) // within MaxQuantity and MaxPrice
		var err error
		if sum, err = money.Add(sum, amount); err != nil {
			return 0, &FieldError{Field: "items", Reason: reasonTotalMax}
		}
	}
	return sum, nil
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
