// Package money holds amounts of money exactly, as a whole number of minor
// units (cents), and converts them to and from decimal text. No amount ever
// passes through a float.
//
// # Text form
//
// Parse accepts exactly this grammar and nothing else:
//
//	amount = digits [ "." digit [ digit ] ]
//	digits = digit { digit }
//
// So "10", "10.5", "9.99", "0.01" and "007.50" are accepted (leading zeros
// are harmless in a decimal amount and are allowed). Everything else is
// rejected with a reason that says what is wrong:
//
//	""                      empty
//	"-1"                    must not be negative (ParseSigned accepts a leading '-')
//	"+1"                    plus sign not allowed
//	"1.234"                 more than two decimal places
//	"1."                    missing digits after the decimal point
//	".5"                    missing digits before the decimal point
//	"1e3"                   exponent notation not allowed
//	" 1"                    contains whitespace
//	"1,00"                  invalid character ','
//	"99999999999999999999"  out of range (beyond 92233720368547758.07)
//
// "1.50" and "1.5" are the same amount; "1.500" is rejected: an amount has at
// most two decimal places, whatever the digits.
//
// String prints the canonical form: an optional '-', the whole units without
// leading zeros, '.', and exactly two decimals ("450.05", "-0.50", "0.00").
// Parse(c.String()) == c for every c >= 0, and ParseSigned(c.String()) == c
// for every c.
//
// # JSON
//
// A Cents marshals as a JSON string holding its canonical text ("450.05"), so
// that no JSON reader turns it into a float. It unmarshals from a JSON string
// or a JSON number literal; both are parsed exactly from their text with
// ParseSigned (a number literal with an exponent is rejected).
package money

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Cents is an amount of money in minor units: Cents(450_05) is 450.05.
type Cents int64

// The range of Cents.
const (
	Max Cents = math.MaxInt64 // 92233720368547758.07
	Min Cents = math.MinInt64 // -92233720368547758.08
)

var (
	// ErrSyntax is wrapped by every *ParseError for text that is not an amount.
	ErrSyntax = errors.New("money: invalid amount")
	// ErrOverflow is wrapped by every error for an amount outside [Min, Max]:
	// a *ParseError for text, and the errors of Add, Sub and Mul.
	ErrOverflow = errors.New("money: amount out of range")
)

// ParseError reports text that is not a valid amount.
type ParseError struct {
	// Input is the rejected text, cut to its first 40 bytes.
	Input string
	// Reason says what is wrong, in a few words fit to show a user
	// ("more than two decimal places"); see the package doc for the list.
	Reason string
	// Err is ErrSyntax or ErrOverflow.
	Err error
}

func (e *ParseError) Error() string {
	return "money: invalid amount " + strconv.Quote(e.Input) + ": " + e.Reason
}

func (e *ParseError) Unwrap() error { return e.Err }

// Reasons of a *ParseError.
const (
	reasonEmpty        = "empty"
	reasonNegative     = "must not be negative"
	reasonPlus         = "plus sign not allowed"
	reasonNoDigits     = "no digits"
	reasonDecimals     = "more than two decimal places"
	reasonAfterPoint   = "missing digits after the decimal point"
	reasonBeforePoint  = "missing digits before the decimal point"
	reasonExponent     = "exponent notation not allowed"
	reasonWhitespace   = "contains whitespace"
	reasonInvalidUTF8  = "invalid UTF-8"
	reasonOutOfRange   = "out of range"
	maxInputInError    = 40
	maxCanonicalLength = 21 // len("-92233720368547758.08")
)

// Parse parses a non-negative amount in the strict form described in the
// package doc. Errors are *ParseError.
func Parse(s string) (Cents, error) { return parse(s, false) }

// ParseSigned is Parse that also accepts a leading '-'.
func ParseSigned(s string) (Cents, error) { return parse(s, true) }

func parse(s string, signed bool) (Cents, error) {
	if s == "" {
		return 0, syntaxError(s, reasonEmpty)
	}
	i, neg := 0, false
	switch s[0] {
	case '-':
		if !signed {
			return 0, syntaxError(s, reasonNegative)
		}
		neg, i = true, 1
	case '+':
		return 0, syntaxError(s, reasonPlus)
	}
	// The magnitude may reach MaxInt64+1 for a negative amount.
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	var u uint64
	overflow := false
	add := func(d byte) {
		v := uint64(d - '0')
		if u > (limit-v)/10 {
			overflow = true
			return
		}
		u = u*10 + v
	}

	start := i
	for i < len(s) && isDigit(s[i]) && !overflow {
		add(s[i])
		i++
	}
	for i < len(s) && isDigit(s[i]) { // only after an overflow: skip the rest
		i++
	}
	if i == start {
		switch {
		case i < len(s) && s[i] == '.':
			return 0, syntaxError(s, reasonBeforePoint)
		case i == len(s):
			return 0, syntaxError(s, reasonNoDigits)
		default:
			return 0, syntaxError(s, badChar(s[i:]))
		}
	}
	decimals := 0
	if i < len(s) && s[i] == '.' {
		i++
		fracStart := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		decimals = i - fracStart
		switch {
		case decimals == 0 && i == len(s):
			return 0, syntaxError(s, reasonAfterPoint)
		case decimals == 0:
			return 0, syntaxError(s, badChar(s[i:]))
		case decimals > 2:
			return 0, syntaxError(s, reasonDecimals)
		}
		for j := fracStart; j < i && !overflow; j++ {
			add(s[j])
		}
	}
	if i < len(s) {
		return 0, syntaxError(s, badChar(s[i:]))
	}
	for ; decimals < 2 && !overflow; decimals++ {
		add('0')
	}
	if overflow {
		return 0, &ParseError{Input: clip(s), Reason: reasonOutOfRange, Err: ErrOverflow}
	}
	if neg {
		return Cents(-u), nil // -(MaxInt64+1) wraps to MinInt64, as wanted
	}
	return Cents(u), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// badChar names the problem with the first character of rest.
func badChar(rest string) string {
	switch c := rest[0]; c {
	case 'e', 'E':
		return reasonExponent
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return reasonWhitespace
	}
	r, size := utf8.DecodeRuneInString(rest)
	if r == utf8.RuneError && size == 1 {
		return reasonInvalidUTF8
	}
	return "invalid character " + strconv.QuoteRune(r)
}

func syntaxError(s, reason string) error {
	return &ParseError{Input: clip(s), Reason: reason, Err: ErrSyntax}
}

// clip copies at most maxInputInError bytes of s, so that an error neither
// holds a large input nor keeps the caller's string alive.
func clip(s string) string {
	if len(s) > maxInputInError {
		s = s[:maxInputInError]
	}
	return strings.Clone(s)
}

// String returns the canonical text of c: "450.05", "-0.50", "0.00".
func (c Cents) String() string {
	var buf [maxCanonicalLength]byte
	return string(c.appendText(buf[:0]))
}

// AppendText appends the canonical text of c to b. It never fails; it
// implements encoding.TextAppender.
func (c Cents) AppendText(b []byte) ([]byte, error) { return c.appendText(b), nil }

func (c Cents) appendText(b []byte) []byte {
	u := uint64(c)
	if c < 0 {
		b = append(b, '-')
		u = -u // correct for Min too: two's complement
	}
	b = strconv.AppendUint(b, u/100, 10)
	frac := u % 100
	return append(b, '.', byte('0'+frac/10), byte('0'+frac%10))
}

// MarshalText returns the canonical text of c.
func (c Cents) MarshalText() ([]byte, error) { return c.appendText(nil), nil }

// UnmarshalText parses text with ParseSigned.
func (c *Cents) UnmarshalText(text []byte) error {
	v, err := ParseSigned(string(text))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// MarshalJSON returns the canonical text of c as a JSON string: "450.05".
func (c Cents) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, maxCanonicalLength+2)
	b = append(b, '"')
	b = c.appendText(b)
	return append(b, '"'), nil
}

// UnmarshalJSON accepts a JSON string or a JSON number literal and parses its
// text with ParseSigned, never through a float. As is the convention for
// json.Unmarshaler, a JSON null leaves c unchanged.
func (c *Cents) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	var text string
	if len(data) > 0 && data[0] == '"' {
		// A plain string literal is used as is; one with escapes is unquoted
		// by encoding/json (which also rejects a malformed literal).
		inner := data[1:]
		if n := len(inner); n > 0 && inner[n-1] == '"' && !containsAny(inner[:n-1], `"\`) {
			text = string(inner[:n-1])
		} else if err := json.Unmarshal(data, &text); err != nil {
			return fmt.Errorf("money: invalid JSON string: %w", err)
		}
	} else {
		text = string(data)
	}
	v, err := ParseSigned(text)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

func containsAny(b []byte, chars string) bool {
	for _, c := range b {
		if strings.IndexByte(chars, c) >= 0 {
			return true
		}
	}
	return false
}

// Add returns a+b, or an error wrapping ErrOverflow.
func Add(a, b Cents) (Cents, error) {
	s := a + b
	if (s > a) != (b > 0) {
		return 0, fmt.Errorf("%w: %v + %v", ErrOverflow, a, b)
	}
	return s, nil
}

// Sub returns a-b, or an error wrapping ErrOverflow.
func Sub(a, b Cents) (Cents, error) {
	d := a - b
	if (d < a) != (b > 0) {
		return 0, fmt.Errorf("%w: %v - %v", ErrOverflow, a, b)
	}
	return d, nil
}

// Mul returns c*q (a unit price times a quantity), or an error wrapping
// ErrOverflow.
func Mul(c Cents, q int64) (Cents, error) {
	if c == 0 || q == 0 {
		return 0, nil
	}
	p := int64(c) * q
	if p/q != int64(c) || (q == -1 && c == Min) {
		return 0, fmt.Errorf("%w: %v * %d", ErrOverflow, c, q)
	}
	return Cents(p), nil
}
