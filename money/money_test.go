package money

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/quick"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in     string
		want   Cents
		reason string // "" when valid
	}{
		{"9.99", 999, ""},
		{"10", 1000, ""},
		{"10.5", 1050, ""},
		{"10.50", 1050, ""},
		{"0.01", 1, ""},
		{"0", 0, ""},
		{"0.00", 0, ""},
		{"007", 700, ""},
		{"007.05", 705, ""},
		{"450.05", 45005, ""},
		{"92233720368547758.07", Max, ""},
		{"92233720368547758.08", 0, "out of range"},
		{"92233720368547758.1", 0, "out of range"},
		{"92233720368547759", 0, "out of range"},
		{"99999999999999999999999999", 0, "out of range"},
		{"00000000000000000000000000000001.23", 123, ""},
		{"", 0, "empty"},
		{"-", 0, "must not be negative"},
		{"-1", 0, "must not be negative"},
		{"+1", 0, "plus sign not allowed"},
		{"1.234", 0, "more than two decimal places"},
		{"1.500", 0, "more than two decimal places"},
		{"1.", 0, "missing digits after the decimal point"},
		{".5", 0, "missing digits before the decimal point"},
		{".", 0, "missing digits before the decimal point"},
		{"1e3", 0, "exponent notation not allowed"},
		{"1E3", 0, "exponent notation not allowed"},
		{"1.5e3", 0, "exponent notation not allowed"},
		{" 1", 0, "contains whitespace"},
		{"1 ", 0, "contains whitespace"},
		{"1\n", 0, "contains whitespace"},
		{"1,00", 0, "invalid character ','"},
		{"1.2.3", 0, "invalid character '.'"},
		{"1.x", 0, "invalid character 'x'"},
		{"abc", 0, "invalid character 'a'"},
		{"NaN", 0, "invalid character 'N'"},
		{"1\u00a0", 0, "invalid character '\\u00a0'"},
		{"1€", 0, "invalid character '€'"},
		{"1\xff", 0, "invalid UTF-8"},
		{"99999999999999999999x", 0, "invalid character 'x'"}, // syntax before range
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.reason == "" {
			if err != nil || got != tt.want {
				t.Errorf("Parse(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
			}
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q) = %d, %v; want a *ParseError %q", tt.in, got, err, tt.reason)
			continue
		}
		if pe.Reason != tt.reason {
			t.Errorf("Parse(%q): reason %q, want %q", tt.in, pe.Reason, tt.reason)
		}
		wantErr := ErrSyntax
		if tt.reason == "out of range" {
			wantErr = ErrOverflow
		}
		if !errors.Is(err, wantErr) {
			t.Errorf("Parse(%q): error %v does not wrap %v", tt.in, err, wantErr)
		}
	}
}

func TestParseSigned(t *testing.T) {
	tests := []struct {
		in     string
		want   Cents
		reason string
	}{
		{"-1", -100, ""},
		{"-0.50", -50, ""},
		{"-0", 0, ""},
		{"-0.00", 0, ""},
		{"12.34", 1234, ""},
		{"-92233720368547758.08", Min, ""},
		{"-92233720368547758.09", 0, "out of range"},
		{"92233720368547758.08", 0, "out of range"},
		{"-", 0, "no digits"},
		{"--1", 0, "invalid character '-'"},
		{"-.5", 0, "missing digits before the decimal point"},
		{"+1", 0, "plus sign not allowed"},
		{"- 1", 0, "contains whitespace"},
	}
	for _, tt := range tests {
		got, err := ParseSigned(tt.in)
		if tt.reason == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseSigned(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
			}
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Reason != tt.reason {
			t.Errorf("ParseSigned(%q) = %d, %v; want reason %q", tt.in, got, err, tt.reason)
		}
	}
}

func TestParseErrorText(t *testing.T) {
	_, err := Parse("1.234")
	if got, want := err.Error(), `money: invalid amount "1.234": more than two decimal places`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	_, err = Parse(strings.Repeat("9", 100))
	want := `money: invalid amount "` + strings.Repeat("9", 40) + `": out of range`
	if got := err.Error(); got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		c    Cents
		want string
	}{
		{0, "0.00"},
		{1, "0.01"},
		{10, "0.10"},
		{99, "0.99"},
		{100, "1.00"},
		{45005, "450.05"},
		{-50, "-0.50"},
		{-1, "-0.01"},
		{-12345, "-123.45"},
		{Max, "92233720368547758.07"},
		{Min, "-92233720368547758.08"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("Cents(%d).String() = %q, want %q", int64(tt.c), got, tt.want)
		}
		b, _ := tt.c.AppendText([]byte("x"))
		if string(b) != "x"+tt.want {
			t.Errorf("AppendText = %q", b)
		}
	}
}

// bigCents is c as an exact rational number of units.
func bigCents(c Cents) *big.Rat { return new(big.Rat).SetFrac(big.NewInt(int64(c)), big.NewInt(100)) }

// interesting returns values that favour the edges of the range.
func interesting(r *rand.Rand) int64 {
	switch r.IntN(8) {
	case 0:
		edges := []int64{0, 1, -1, 2, -2, 99, 100, -100, math.MaxInt64, math.MinInt64,
			math.MaxInt64 - 1, math.MinInt64 + 1, math.MaxInt32, math.MinInt32, 3037000499, -3037000500}
		return edges[r.IntN(len(edges))]
	case 1:
		return int64(r.Int32())
	case 2:
		return r.Int64N(20000) - 10000
	default:
		return int64(r.Uint64())
	}
}

// TestStringProperty checks String against math/big and Parse(String(c)).
func TestStringProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		c := Cents(interesting(rng))
		s := c.String()
		if want := bigCents(c).FloatString(2); s != want {
			t.Fatalf("Cents(%d).String() = %q, big says %q", int64(c), s, want)
		}
		back, err := ParseSigned(s)
		if err != nil || back != c {
			t.Fatalf("ParseSigned(%q) = %d, %v; want %d", s, back, err, int64(c))
		}
		if c >= 0 {
			if back, err := Parse(s); err != nil || back != c {
				t.Fatalf("Parse(%q) = %d, %v; want %d", s, back, err, int64(c))
			}
		}
	}
}

// TestParseProperty parses random decimal texts and compares with math/big.
func TestParseProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var sb strings.Builder
	for range 100000 {
		sb.Reset()
		if rng.IntN(2) == 0 {
			sb.WriteByte('-')
		}
		for range 1 + rng.IntN(22) {
			sb.WriteByte(byte('0' + rng.IntN(10)))
		}
		if d := rng.IntN(4); d > 0 {
			sb.WriteByte('.')
			for range d {
				sb.WriteByte(byte('0' + rng.IntN(10)))
			}
		}
		s := sb.String()
		checkAgainstBig(t, s)
	}
}

// checkAgainstBig checks ParseSigned(s) (and Parse(s)) against the exact
// value math/big finds for s, for an s of the form -?digits(.digits)?.
func checkAgainstBig(t *testing.T, s string) {
	t.Helper()
	got, err := ParseSigned(s)
	exact, ok := new(big.Rat).SetString(s)
	if !ok {
		if err == nil {
			t.Fatalf("ParseSigned(%q) = %d, but big.Rat rejects it", s, got)
		}
		return
	}
	cents := new(big.Rat).Mul(exact, big.NewRat(100, 1))
	frac := strings.IndexByte(s, '.')
	tooPrecise := frac >= 0 && len(s)-frac-1 > 2
	switch {
	case tooPrecise:
		if err == nil {
			t.Fatalf("ParseSigned(%q) = %d, want an error (more than two decimals)", s, got)
		}
	case !cents.IsInt() || !cents.Num().IsInt64():
		if !errors.Is(err, ErrOverflow) {
			t.Fatalf("ParseSigned(%q) = %d, %v; want out of range", s, got, err)
		}
	default:
		if want := cents.Num().Int64(); err != nil || int64(got) != want {
			t.Fatalf("ParseSigned(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	if u, uerr := Parse(s); strings.HasPrefix(s, "-") {
		if uerr == nil {
			t.Fatalf("Parse(%q) = %d, want an error", s, u)
		}
	} else if u != got || (uerr == nil) != (err == nil) {
		t.Fatalf("Parse(%q) = %d, %v; ParseSigned gives %d, %v", s, u, uerr, got, err)
	}
}

// TestArithmeticProperty checks Add, Sub and Mul against math/big.
func TestArithmeticProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	minI, maxI := big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
	fits := func(x *big.Int) bool { return x.Cmp(minI) >= 0 && x.Cmp(maxI) <= 0 }
	check := func(name string, a, b int64, got Cents, err error, exact *big.Int) bool {
		if fits(exact) {
			if err != nil || int64(got) != exact.Int64() {
				t.Errorf("%s(%d, %d) = %d, %v; want %v", name, a, b, got, err, exact)
				return false
			}
			return true
		}
		if !errors.Is(err, ErrOverflow) {
			t.Errorf("%s(%d, %d) = %d, %v; want overflow (%v)", name, a, b, got, err, exact)
			return false
		}
		return true
	}
	f := func(seed uint64) bool {
		r := rand.New(rand.NewPCG(seed, rng.Uint64()))
		a, b := interesting(r), interesting(r)
		A, B := big.NewInt(a), big.NewInt(b)
		s, serr := Add(Cents(a), Cents(b))
		d, derr := Sub(Cents(a), Cents(b))
		m, merr := Mul(Cents(a), b)
		return check("Add", a, b, s, serr, new(big.Int).Add(A, B)) &&
			check("Sub", a, b, d, derr, new(big.Int).Sub(A, B)) &&
			check("Mul", a, b, m, merr, new(big.Int).Mul(A, B))
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 200000}); err != nil {
		t.Fatal(err)
	}
}

func TestArithmeticErrors(t *testing.T) {
	_, err := Mul(Max, 2)
	if got, want := err.Error(), "money: amount out of range: 92233720368547758.07 * 2"; got != want {
		t.Errorf("Mul error = %q, want %q", got, want)
	}
	if _, err := Mul(Min, -1); !errors.Is(err, ErrOverflow) {
		t.Errorf("Mul(Min, -1) error = %v, want overflow", err)
	}
	if _, err := Mul(-1, math.MinInt64); !errors.Is(err, ErrOverflow) {
		t.Errorf("Mul(-1, MinInt64) error = %v, want overflow", err)
	}
	if _, err := Add(Max, 1); !errors.Is(err, ErrOverflow) {
		t.Errorf("Add(Max, 1) error = %v", err)
	}
	if _, err := Sub(Min, 1); !errors.Is(err, ErrOverflow) {
		t.Errorf("Sub(Min, 1) error = %v", err)
	}
	if _, err := Sub(0, Min); !errors.Is(err, ErrOverflow) {
		t.Errorf("Sub(0, Min) error = %v", err)
	}
}

func TestJSON(t *testing.T) {
	for _, c := range []Cents{0, 1, -50, 45005, Max, Min} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if want := `"` + c.String() + `"`; string(b) != want {
			t.Errorf("Marshal(%d) = %s, want %s", int64(c), b, want)
		}
		var back Cents
		if err := json.Unmarshal(b, &back); err != nil || back != c {
			t.Errorf("Unmarshal(%s) = %d, %v", b, back, err)
		}
	}

	good := []struct {
		in   string
		want Cents
	}{
		{`"9.99"`, 999},
		{`9.99`, 999},
		{`10`, 1000},
		{`10.5`, 1050},
		{`-0.5`, -50},
		{`"-0.50"`, -50},
		{`"\u0039.99"`, 999},          // escapes are decoded before parsing
		{`0.1`, 10},                   // exact: never 0.1000000000000000055…
		{`92233720368547758.07`, Max}, // beyond float64 precision, still exact
	}
	for _, tt := range good {
		var c Cents
		if err := json.Unmarshal([]byte(tt.in), &c); err != nil || c != tt.want {
			t.Errorf("Unmarshal(%s) = %d, %v; want %d", tt.in, c, err, tt.want)
		}
	}

	bad := []struct{ in, reason string }{
		{`1e3`, "exponent notation not allowed"},
		{`1.234`, "more than two decimal places"},
		{`"1.234"`, "more than two decimal places"},
		{`""`, "empty"},
		{`" 1"`, "contains whitespace"},
		{`"+1"`, "plus sign not allowed"},
		{`1e400`, "exponent notation not allowed"},
		{`92233720368547758.08`, "out of range"},
	}
	for _, tt := range bad {
		var c Cents
		err := json.Unmarshal([]byte(tt.in), &c)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Reason != tt.reason {
			t.Errorf("Unmarshal(%s) error = %v, want reason %q", tt.in, err, tt.reason)
		}
	}
	for _, in := range []string{`true`, `[]`, `{}`} {
		var c Cents
		if err := json.Unmarshal([]byte(in), &c); err == nil {
			t.Errorf("Unmarshal(%s) = %d, want an error", in, c)
		}
	}

	// null leaves the value unchanged, like encoding/json does.
	c := Cents(7)
	if err := json.Unmarshal([]byte(`null`), &c); err != nil || c != 7 {
		t.Errorf("Unmarshal(null) = %d, %v", c, err)
	}

	// Inside a struct.
	var v struct {
		Price Cents `json:"price"`
	}
	if err := json.Unmarshal([]byte(`{"price": 12.3}`), &v); err != nil || v.Price != 1230 {
		t.Errorf("struct: %d, %v", v.Price, err)
	}
	b, _ := json.Marshal(v)
	if string(b) != `{"price":"12.30"}` {
		t.Errorf("struct marshal: %s", b)
	}
}

func TestText(t *testing.T) {
	var c Cents
	if err := c.UnmarshalText([]byte("-3.5")); err != nil || c != -350 {
		t.Errorf("UnmarshalText = %d, %v", c, err)
	}
	if err := c.UnmarshalText([]byte("x")); err == nil {
		t.Error("UnmarshalText(x) succeeded")
	}
	b, _ := Cents(-350).MarshalText()
	if string(b) != "-3.50" {
		t.Errorf("MarshalText = %s", b)
	}
}

func TestStringAllocs(t *testing.T) {
	c := Cents(45005)
	buf := make([]byte, 0, 32)
	if n := testing.AllocsPerRun(100, func() { buf, _ = c.AppendText(buf[:0]) }); n != 0 {
		t.Errorf("AppendText allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Parse("450.05") }); n != 0 {
		t.Errorf("Parse allocates %v times", n)
	}
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		_, _ = Parse("1234.56")
	}
}

func BenchmarkString(b *testing.B) {
	for b.Loop() {
		_ = Cents(123456).String()
	}
}
