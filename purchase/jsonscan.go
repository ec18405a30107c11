package purchase

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds a small JSON scanner (RFC 8259) for the two formats of this
// package. It exists instead of encoding/json because the formats need what
// encoding/json does not give: exact key matching (encoding/json folds case),
// duplicate keys found, invalid UTF-8 and lone surrogates rejected rather
// than silently replaced, number literals kept as text, the type of every
// field checked with a clear reason, and no allocation on the way.
//
// Stricter than encoding/json in three ways, all on purpose: invalid UTF-8
// and \u escapes of lone surrogates are syntax errors, and values may nest at
// most maxDepth deep.

// maxDepth bounds the nesting of arrays and objects, so skipping an unknown
// value recurses a bounded number of times.
const maxDepth = 64

// kind is the type of a JSON value, as seen from its first byte.
type kind uint8

const (
	kindNone kind = iota // not the start of a value, or end of input
	kindObject
	kindArray
	kindString
	kindNumber
	kindBool
	kindNull
)

func (k kind) String() string {
	switch k {
	case kindObject:
		return "object"
	case kindArray:
		return "array"
	case kindString:
		return "string"
	case kindNumber:
		return "number"
	case kindBool:
		return "boolean"
	case kindNull:
		return "null"
	}
	return "nothing"
}

// SyntaxError reports input that is not JSON (RFC 8259, with the exceptions
// in the package doc).
type SyntaxError struct {
	// Offset is the byte offset of the problem in the line or file.
	Offset int
	// Reason says what is wrong: "unexpected end of input",
	// "expected ':' after object key, found '='", "invalid UTF-8 in string"…
	Reason string
}

func (e *SyntaxError) Error() string {
	return "invalid JSON: " + e.Reason + " at offset " + strconv.Itoa(e.Offset)
}

type scanner struct {
	data  []byte
	pos   int
	depth int
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) eof() bool { return s.pos >= len(s.data) }

func (s *scanner) errAt(pos int, reason string) *SyntaxError {
	return &SyntaxError{Offset: pos, Reason: reason}
}

// unexpected reports that want was expected at the current position.
func (s *scanner) unexpected(want string) *SyntaxError {
	if s.eof() {
		return s.errAt(s.pos, "unexpected end of input")
	}
	return s.errAt(s.pos, "expected "+want+", found "+describe(s.data[s.pos:]))
}

// describe names the first character of b for an error message.
func describe(b []byte) string {
	r, size := utf8.DecodeRune(b)
	if r == utf8.RuneError && size == 1 {
		return "byte 0x" + strconv.FormatUint(uint64(b[0]), 16)
	}
	return strconv.QuoteRune(r)
}

// peek skips whitespace and returns the kind of the value that starts there.
func (s *scanner) peek() kind {
	s.ws()
	if s.eof() {
		return kindNone
	}
	switch c := s.data[s.pos]; c {
	case '{':
		return kindObject
	case '[':
		return kindArray
	case '"':
		return kindString
	case 't', 'f':
		return kindBool
	case 'n':
		return kindNull
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return kindNumber
		}
		return kindNone
	}
}

// readString reads a string literal at s.pos (which holds '"'). It returns
// the bytes between the quotes, still escaped, and whether they hold escapes.
func (s *scanner) readString() (raw []byte, escaped bool, err error) {
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			raw = s.data[start:s.pos]
			s.pos++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return nil, false, err
			}
		case c < 0x20:
			return nil, false, s.errAt(s.pos, "unescaped control character in string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size == 1 {
				return nil, false, s.errAt(s.pos, "invalid UTF-8 in string")
			}
			s.pos += size
		}
	}
	return nil, false, s.errAt(s.pos, "unexpected end of input")
}

// escape checks the escape sequence at s.pos (which holds '\\') and moves past it.
func (s *scanner) escape() error {
	start := s.pos
	s.pos++
	if s.eof() {
		return s.errAt(s.pos, "unexpected end of input")
	}
	switch s.data[s.pos] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos++
		return nil
	case 'u':
	default:
		return s.errAt(start, "invalid escape character "+describe(s.data[s.pos:])+" in string")
	}
	r, err := s.hex4(start)
	if err != nil {
		return err
	}
	if !utf16.IsSurrogate(r) {
		return nil
	}
	// A high surrogate must be followed by a \u escape of a low one.
	if r < 0xDC00 && s.pos+1 < len(s.data) && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
		next := s.pos
		s.pos++
		lo, err := s.hex4(next)
		if err != nil {
			return err
		}
		if 0xDC00 <= lo && lo <= 0xDFFF {
			return nil
		}
	}
	return s.errAt(start, "lone surrogate in \\u escape")
}

// hex4 reads the 'u' and four hex digits of a \u escape that starts at start.
func (s *scanner) hex4(start int) (rune, error) {
	s.pos++ // the 'u'
	var r rune
	for range 4 {
		if s.eof() {
			return 0, s.errAt(s.pos, "unexpected end of input")
		}
		c := s.data[s.pos]
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, s.errAt(start, "invalid \\u escape in string")
		}
		r = r<<4 | rune(v)
		s.pos++
	}
	return r, nil
}

// readNumber reads a number literal at s.pos and returns its text.
func (s *scanner) readNumber() ([]byte, error) {
	start := s.pos
	if s.data[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.eof():
		return nil, s.unexpected("a digit")
	case s.data[s.pos] == '0':
		s.pos++
	case isDigit(s.data[s.pos]):
		s.digits()
	default:
		return nil, s.unexpected("a digit")
	}
	if !s.eof() && s.data[s.pos] == '.' {
		s.pos++
		if s.eof() || !isDigit(s.data[s.pos]) {
			return nil, s.unexpected("a digit after the decimal point")
		}
		s.digits()
	}
	if !s.eof() && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if !s.eof() && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.eof() || !isDigit(s.data[s.pos]) {
			return nil, s.unexpected("a digit in the exponent")
		}
		s.digits()
	}
	return s.data[start:s.pos], nil
}

func (s *scanner) digits() {
	for s.pos < len(s.data) && isDigit(s.data[s.pos]) {
		s.pos++
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// literal reads true, false or null at s.pos.
func (s *scanner) literal() error {
	var want string
	switch s.data[s.pos] {
	case 't':
		want = "true"
	case 'f':
		want = "false"
	default:
		want = "null"
	}
	for i := range len(want) {
		if s.eof() {
			return s.unexpected("")
		}
		if s.data[s.pos] != want[i] {
			return s.unexpected("'" + want + "'")
		}
		s.pos++
	}
	return nil
}

// skipValue skips whitespace and one value of any kind, checking its syntax.
func (s *scanner) skipValue() error {
	switch s.peek() {
	case kindObject:
		return s.skipObject()
	case kindArray:
		return s.skipArray()
	case kindString:
		_, _, err := s.readString()
		return err
	case kindNumber:
		_, err := s.readNumber()
		return err
	case kindBool, kindNull:
		return s.literal()
	default:
		return s.unexpected("a value")
	}
}

func (s *scanner) skipObject() error {
	if err := s.enter(); err != nil {
		return err
	}
	for first := true; ; first = false {
		_, _, more, err := s.member(first)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if err := s.skipValue(); err != nil {
			return err
		}
	}
	s.depth--
	return nil
}

func (s *scanner) skipArray() error {
	if err := s.enter(); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := s.element(first)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if err := s.skipValue(); err != nil {
			return err
		}
	}
	s.depth--
	return nil
}

// element moves to the next element of the array being read: past the ']'
// that ends it (more = false), or past the ',' before an element that is
// not the first. first tells whether this is the first call for the array
// (after the '[').
func (s *scanner) element(first bool) (more bool, err error) {
	s.ws()
	if s.eof() {
		return false, s.unexpected("")
	}
	c := s.data[s.pos]
	if c == ']' {
		s.pos++
		return false, nil
	}
	if !first {
		if c != ',' {
			return false, s.unexpected("',' or ']' after array element")
		}
		s.pos++
	}
	return true, nil
}

// enter moves past the '{' or '[' at s.pos, one level deeper.
func (s *scanner) enter() error {
	if s.depth == maxDepth {
		return s.errAt(s.pos, "nested deeper than "+strconv.Itoa(maxDepth)+" levels")
	}
	s.depth++
	s.pos++
	return nil
}

// member moves to the next member of the object being read: past the '}'
// that ends it (more = false), or past the member's key and ':'. first tells
// whether this is the first call for the object (after the '{').
func (s *scanner) member(first bool) (key []byte, escaped, more bool, err error) {
	s.ws()
	if s.eof() {
		return nil, false, false, s.unexpected("")
	}
	c := s.data[s.pos]
	if c == '}' {
		s.pos++
		return nil, false, false, nil
	}
	if !first {
		if c != ',' {
			return nil, false, false, s.unexpected("',' or '}' after object member")
		}
		s.pos++
		s.ws()
	}
	if s.eof() || s.data[s.pos] != '"' {
		if first {
			return nil, false, false, s.unexpected("a string key or '}'")
		}
		return nil, false, false, s.unexpected("a string key")
	}
	key, escaped, err = s.readString()
	if err != nil {
		return nil, false, false, err
	}
	s.ws()
	if s.eof() || s.data[s.pos] != ':' {
		return nil, false, false, s.unexpected("':' after object key")
	}
	s.pos++
	return key, escaped, true, nil
}

// end checks that only whitespace is left.
func (s *scanner) end() error {
	s.ws()
	if !s.eof() {
		return s.unexpected("end of input after the JSON value")
	}
	return nil
}

// unescape appends the string that raw (the checked inside of a string
// literal, as readString returned it) stands for to dst.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := parseHex4(raw[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				r = utf16.DecodeRune(r, parseHex4(raw[i+2:]))
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}

func parseHex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a':
			r = r<<4 | rune(c-'a'+10)
		default:
			r = r<<4 | rune(c-'A'+10)
		}
	}
	return r
}
