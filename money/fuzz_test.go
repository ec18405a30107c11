package money

import (
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// FuzzParse checks that Parse and ParseSigned never panic, that every error
// is a *ParseError with a reason, and that every accepted text has the exact
// value math/big gives it and prints back to an equal amount. The seed corpus
// is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"9.99", "10", "10.5", "0.01", "-0.50", "", "-", "+1", "1.234",
		"1e3", " 1", "1.", ".5", "007", "92233720368547758.07", "-92233720368547758.08",
		"92233720368547758.08", "1,5", "1\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, signed := range []bool{false, true} {
			c, err := parse(s, signed)
			if err != nil {
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Reason == "" {
					t.Fatalf("parse(%q, %v): error %v is not a *ParseError with a reason", s, signed, err)
				}
				if errors.Is(err, ErrSyntax) == errors.Is(err, ErrOverflow) {
					t.Fatalf("parse(%q): error %v must wrap exactly one of ErrSyntax, ErrOverflow", s, err)
				}
				continue
			}
			if !signed && c < 0 {
				t.Fatalf("Parse(%q) = %d < 0", s, c)
			}
			exact, ok := new(big.Rat).SetString(s)
			if !ok {
				t.Fatalf("parse(%q) = %d, but big.Rat rejects it", s, c)
			}
			if exact.Cmp(bigCents(c)) != 0 {
				t.Fatalf("parse(%q) = %d, big says %v", s, c, exact.FloatString(4))
			}
			back, err := ParseSigned(c.String())
			if err != nil || back != c {
				t.Fatalf("round trip of %q: %q -> %d, %v", s, c.String(), back, err)
			}
			// The JSON string and, when it is a JSON number, the literal agree.
			var fromString Cents
			q, _ := json.Marshal(s)
			if err := fromString.UnmarshalJSON(q); err != nil || fromString != c {
				t.Fatalf("UnmarshalJSON(%s) = %d, %v; want %d", q, fromString, err, c)
			}
		}
		// A JSON number literal with at most two decimals parses like its text.
		if json.Valid([]byte(s)) && s != "" && (s[0] == '-' || isDigit(s[0])) && !strings.ContainsAny(s, " \t\r\n") {
			var fromNumber Cents
			errNumber := fromNumber.UnmarshalJSON([]byte(s))
			want, errWant := ParseSigned(s)
			if (errNumber == nil) != (errWant == nil) || fromNumber != want && errWant == nil {
				t.Fatalf("UnmarshalJSON(%s) = %d, %v; ParseSigned = %d, %v", s, fromNumber, errNumber, want, errWant)
			}
		}
	})
}
