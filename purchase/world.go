package purchase

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/dtx-dev/dtx/money"
)

// Limits of a world.
const (
	// MaxStock bounds an item's stock.
	MaxStock = 1_000_000_000
	// MaxBalance bounds an account's balance.
	MaxBalance money.Cents = 1_000_000_000_000_00
)

// World is the starting state of the example services: the stock of every
// item (inventory) and the balance of every account (payment). Its JSON form:
//
//	{
//	  "items": {
//	    "i1": {"stock": 100}
//	  },
//	  "accounts": {
//	    "u1": {"balance": "500.00"}
//	  }
//	}
//
// Both "items" and "accounts" are required (either may be empty). Keys follow
// the id rules of a request. A stock is a JSON integer in 0..MaxStock; a
// balance a JSON string or number in the money text form, 0..MaxBalance.
// Unlike a request, a world rejects unknown fields: a typo in a world file
// must not pass unnoticed.
type World struct {
	Items    map[string]Item
	Accounts map[string]Account
}

// Item is an item's state in a World.
type Item struct {
	Stock int64
}

// Account is an account's state in a World.
type Account struct {
	Balance money.Cents
}

var (
	reasonStockRange = "must be between 0 and " + strconv.Itoa(MaxStock)
	reasonBalanceMax = "must be at most " + MaxBalance.String()
)

const reasonNotNegative = "must not be negative"

func checkBalance(c money.Cents) string {
	switch {
	case c < 0:
		return reasonNotNegative
	case c > MaxBalance:
		return reasonBalanceMax
	}
	return ""
}

// Validate checks the rules ParseWorld enforces. Errors are *FieldError.
func (w World) Validate() error {
	for _, id := range slices.Sorted(maps.Keys(w.Items)) {
		path := entryPath("items", id)
		if reason := checkID(id); reason != "" {
			return &FieldError{Field: path, Reason: reason}
		}
		if st := w.Items[id].Stock; st < 0 || st > MaxStock {
			return &FieldError{Field: path + ".stock", Reason: reasonStockRange}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(w.Accounts)) {
		path := entryPath("accounts", id)
		if reason := checkID(id); reason != "" {
			return &FieldError{Field: path, Reason: reason}
		}
		if reason := checkBalance(w.Accounts[id].Balance); reason != "" {
			return &FieldError{Field: path + ".balance", Reason: reason}
		}
	}
	return nil
}

// entryPath names an entry of a world section in an error: items["i1"].
func entryPath(section, id string) string {
	if len(id) > 40 {
		id = id[:40] + "…"
	}
	return section + "[" + strconv.Quote(id) + "]"
}

// ParseWorld parses and checks the JSON form of a World. Errors are
// prefixed "world: " and wrap a *SyntaxError or a *FieldError.
func ParseWorld(data []byte) (World, error) {
	// Check the syntax first, so that a syntax error anywhere is reported
	// before a field error; then read the fields.
	s := scanner{data: data}
	if err := s.skipValue(); err != nil {
		return World{}, fmt.Errorf("world: %w", err)
	}
	if err := s.end(); err != nil {
		return World{}, fmt.Errorf("world: %w", err)
	}
	s = scanner{data: data}
	w, err := parseWorld(&s)
	if err != nil {
		return World{}, fmt.Errorf("world: %w", err)
	}
	return w, nil
}

func parseWorld(s *scanner) (World, error) {
	w := World{}
	if k := s.peek(); k != kindObject {
		return w, &FieldError{Reason: "expected a JSON object, got " + k.String()}
	}
	err := eachMember(s, func(key string) error {
		switch key {
		case "items":
			if w.Items != nil {
				return &FieldError{Field: key, Reason: reasonDuplicate}
			}
			w.Items = map[string]Item{}
			return eachEntry(s, key, func(id, path string) error {
				if _, dup := w.Items[id]; dup {
					return &FieldError{Field: path, Reason: reasonDuplicate}
				}
				st, err := parseStock(s, path)
				w.Items[id] = Item{Stock: st}
				return err
			})
		case "accounts":
			if w.Accounts != nil {
				return &FieldError{Field: key, Reason: reasonDuplicate}
			}
			w.Accounts = map[string]Account{}
			return eachEntry(s, key, func(id, path string) error {
				if _, dup := w.Accounts[id]; dup {
					return &FieldError{Field: path, Reason: reasonDuplicate}
				}
				bal, err := parseBalance(s, path)
				w.Accounts[id] = Account{Balance: bal}
				return err
			})
		}
		return &FieldError{Reason: "unknown field " + quoteKey(key)}
	})
	if err != nil {
		return World{}, err
	}
	if w.Items == nil {
		return World{}, &FieldError{Field: "items", Reason: reasonMissing}
	}
	if w.Accounts == nil {
		return World{}, &FieldError{Field: "accounts", Reason: reasonMissing}
	}
	return w, nil
}

func quoteKey(key string) string {
	if len(key) > 40 {
		key = key[:40] + "…"
	}
	return strconv.Quote(key)
}

// eachMember reads the object at s (already checked to be one) and calls fn
// with each key, positioned before the member's value; fn must read the
// value.
func eachMember(s *scanner, fn func(key string) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	for first := true; ; first = false {
		raw, escaped, more, err := s.member(first)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if err := fn(string(text(raw, escaped, nil))); err != nil {
			return err
		}
	}
	s.depth--
	return nil
}

// eachEntry reads the object that maps ids to entries at section.
func eachEntry(s *scanner, section string, fn func(id, path string) error) error {
	if k := s.peek(); k != kindObject {
		return &FieldError{Field: section, Reason: mustBe("an object", k)}
	}
	return eachMember(s, func(id string) error {
		path := entryPath(section, id)
		if reason := checkID(id); reason != "" {
			return &FieldError{Field: path, Reason: reason}
		}
		return fn(id, path)
	})
}

// entryField reads the object of one entry, which has the single field name,
// and calls value positioned before that field's value.
func entryField(s *scanner, path, name string, value func(field string) error) error {
	if k := s.peek(); k != kindObject {
		return &FieldError{Field: path, Reason: mustBe("an object", k)}
	}
	seen := false
	err := eachMember(s, func(key string) error {
		if key != name {
			return &FieldError{Field: path, Reason: "unknown field " + quoteKey(key)}
		}
		if seen {
			return &FieldError{Field: path + "." + name, Reason: reasonDuplicate}
		}
		seen = true
		return value(path + "." + name)
	})
	if err == nil && !seen {
		err = &FieldError{Field: path + "." + name, Reason: reasonMissing}
	}
	return err
}

func parseStock(s *scanner, path string) (int64, error) {
	var stock int64
	err := entryField(s, path, "stock", func(field string) error {
		k := s.peek()
		if k != kindNumber {
			return &FieldError{Field: field, Reason: mustBe("an integer", k)}
		}
		lit, err := s.readNumber()
		if err != nil {
			return err
		}
		for _, c := range lit {
			if c == '.' || c == 'e' || c == 'E' {
				return &FieldError{Field: field, Reason: reasonInteger}
			}
		}
		if lit[0] == '-' && string(lit) != "-0" || len(lit) > 10 {
			return &FieldError{Field: field, Reason: reasonStockRange}
		}
		v, err := strconv.ParseInt(string(lit), 10, 64)
		if err != nil || v < 0 || v > MaxStock {
			return &FieldError{Field: field, Reason: reasonStockRange}
		}
		stock = v
		return nil
	})
	return stock, err
}

func parseBalance(s *scanner, path string) (money.Cents, error) {
	var bal money.Cents
	err := entryField(s, path, "balance", func(field string) error {
		var txt []byte
		switch k := s.peek(); k {
		case kindNumber:
			lit, err := s.readNumber()
			if err != nil {
				return err
			}
			txt = lit
		case kindString:
			raw, escaped, err := s.readString()
			if err != nil {
				return err
			}
			txt = text(raw, escaped, nil)
		default:
			return &FieldError{Field: field, Reason: mustBe("a number or a string", k)}
		}
		c, reason := parseAmount(txt, reasonNotNegative, checkBalance)
		if reason != "" {
			return &FieldError{Field: field, Reason: reason}
		}
		bal = c
		return nil
	})
	return bal, err
}

// MarshalJSON returns the canonical JSON form of w: keys in byte order, one
// entry a line, balances as strings. ExampleWorld's form is the bundled
// examples/world.json.
func (w World) MarshalJSON() ([]byte, error) {
	b := []byte("{\n  \"items\": {")
	for i, id := range slices.Sorted(maps.Keys(w.Items)) {
		b = entryStart(b, i, id)
		b = append(b, `{"stock": `...)
		b = strconv.AppendInt(b, w.Items[id].Stock, 10)
		b = append(b, '}')
	}
	b = sectionEnd(b, len(w.Items))
	b = append(b, ",\n  \"accounts\": {"...)
	for i, id := range slices.Sorted(maps.Keys(w.Accounts)) {
		b = entryStart(b, i, id)
		b = append(b, `{"balance": "`...)
		b, _ = w.Accounts[id].Balance.AppendText(b)
		b = append(b, `"}`...)
	}
	b = sectionEnd(b, len(w.Accounts))
	return append(b, "\n}\n"...), nil
}

func entryStart(b []byte, i int, id string) []byte {
	if i > 0 {
		b = append(b, ',')
	}
	b = append(b, "\n    "...)
	b = appendJSONString(b, id)
	return append(b, ": "...)
}

func sectionEnd(b []byte, n int) []byte {
	if n > 0 {
		b = append(b, "\n  "...)
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string literal. Invalid UTF-8 becomes
// U+FFFD, as with encoding/json.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, `\u00`...)
				b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// ExampleWorld returns the world of the bundled examples (examples/world.json
// holds exactly its MarshalJSON form). Each call returns new maps.
func ExampleWorld() World {
	return World{
		Items: map[string]Item{
			"book":   {Stock: 12},
			"lamp":   {Stock: 3},
			"mug":    {Stock: 40},
			"poster": {Stock: 0},
		},
		Accounts: map[string]Account{
			"alice": {Balance: 500_00},
			"bob":   {Balance: 45_50},
			"carol": {Balance: 1200_00},
			"dave":  {Balance: 0},
		},
	}
}
