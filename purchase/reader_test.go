package purchase

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// scanAll reads every line of r: "<no> ok <txID>" or "<no> error <text>".
func scanAll(t *testing.T, r *Reader) []string {
	t.Helper()
	var got []string
	for r.Scan() {
		l := r.Line()
		if l.Err != nil {
			got = append(got, fmt.Sprintf("%d error %v", l.No, l.Err))
		} else {
			got = append(got, fmt.Sprintf("%d ok %s", l.No, l.Req.TxID))
		}
	}
	return got
}

func txLine(id string) string { return line("transaction_id", `"`+id+`"`) }

func TestReader(t *testing.T) {
	long := line("transaction_id", `"tl"`, "pad", `"`+strings.Repeat("x", 400)+`"`)
	tests := []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"empty input", "", 0, nil},
		{"only blank lines", "\n \n\t\r\n\r\n  ", 0, nil},
		{"one line", txLine("a") + "\n", 0, []string{"1 ok a"}},
		{"no trailing newline", txLine("a") + "\n" + txLine("b"), 0, []string{"1 ok a", "2 ok b"}},
		{"CRLF", txLine("a") + "\r\n" + txLine("b") + "\r\n", 0, []string{"1 ok a", "2 ok b"}},
		{"CRLF without the last newline", txLine("a") + "\r\n" + txLine("b") + "\r", 0, []string{"1 ok a", "2 ok b"}},
		{"blank lines keep the numbering", "\n" + txLine("a") + "\n   \n\t\n" + txLine("b") + "\n\n", 0,
			[]string{"2 ok a", "5 ok b"}},
		{"byte order mark", "\uFEFF" + txLine("a") + "\n" + txLine("b") + "\n", 0, []string{"1 ok a", "2 ok b"}},
		{"byte order mark only at the start", txLine("a") + "\n\uFEFF" + txLine("b") + "\n", 0,
			[]string{"1 ok a", "2 error invalid JSON: expected a JSON object, found '\\ufeff' at offset 0"}},
		{"bad lines do not stop the stream", txLine("a") + "\n{\n" + line("quantity", "0") + "\n" + txLine("d") + "\n", 0,
			[]string{"1 ok a", "2 error invalid JSON: unexpected end of input at offset 1",
				"3 error quantity: must be between 1 and 1000000", "4 ok d"}},
		{"long line in the middle", txLine("a") + "\n" + long + "\n" + txLine("c") + "\n", 300,
			[]string{"1 ok a", "2 error line too long (limit 300 bytes)", "3 ok c"}},
		{"long line at the end, no newline", txLine("a") + "\n" + long, 300,
			[]string{"1 ok a", "2 error line too long (limit 300 bytes)"}},
		{"long line at the start", long + "\r\n" + txLine("b"), 300,
			[]string{"1 error line too long (limit 300 bytes)", "2 ok b"}},
		{"several long lines", long + "\n" + long + "\n" + long + "\n" + txLine("d"), 300,
			[]string{"1 error line too long (limit 300 bytes)", "2 error line too long (limit 300 bytes)",
				"3 error line too long (limit 300 bytes)", "4 ok d"}},
		{"long blank line", strings.Repeat(" ", 500) + "\n" + txLine("b"), 300,
			[]string{"1 error line too long (limit 300 bytes)", "2 ok b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, and one byte a read, to cross every buffer boundary.
			for _, src := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				r := NewReaderSize(src, tt.max)
				got := scanAll(t, r)
				if err := r.Err(); err != nil {
					t.Fatalf("Err() = %v", err)
				}
				if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
					t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
				if r.Scan() {
					t.Fatal("Scan after the end returned true")
				}
			}
		})
	}
}

// TestReaderLimitEdges checks lines of exactly the limit and one byte more,
// with either line end.
func TestReaderLimitEdges(t *testing.T) {
	base := txLine("a")
	for _, max := range []int{len(base), len(base) + 1, 1000} {
		for _, eol := range []string{"\n", "\r\n"} {
			for delta := -1; delta <= 1; delta++ {
				n := max + delta
				if n < len(base) {
					continue
				}
				l := base + strings.Repeat(" ", n-len(base)) // trailing spaces are JSON whitespace
				r := NewReaderSize(strings.NewReader(l+eol+txLine("b")+"\n"), max)
				got := scanAll(t, r)
				want := "1 ok a"
				if n > max {
					want = fmt.Sprintf("1 error line too long (limit %d bytes)", max)
				}
				if len(got) != 2 || got[0] != want || got[1] != "2 ok b" {
					t.Errorf("max %d, line of %d bytes, end %q: got %q", max, n, eol, got)
				}
			}
		}
	}
}

func TestReaderLineTooLongIs(t *testing.T) {
	r := NewReaderSize(strings.NewReader(strings.Repeat("x", 100)), 10)
	if !r.Scan() {
		t.Fatal("no line")
	}
	if err := r.Line().Err; !errors.Is(err, ErrLineTooLong) {
		t.Errorf("error %v does not wrap ErrLineTooLong", err)
	}
}

func TestReaderDefaultLimit(t *testing.T) {
	in := strings.Repeat(" ", DefaultMaxLineBytes) + txLine("a") + "\n" + txLine("b")
	got := scanAll(t, NewReader(strings.NewReader(in)))
	want := []string{"1 error line too long (limit 65536 bytes)", "2 ok b"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	ok := strings.Repeat(" ", DefaultMaxLineBytes-len(txLine("a"))) + txLine("a")
	if got := scanAll(t, NewReader(strings.NewReader(ok))); len(got) != 1 || got[0] != "1 ok a" {
		t.Errorf("a line of exactly %d bytes: %q", DefaultMaxLineBytes, got)
	}
}

// TestReaderThousandLines reads 1000 generated lines, some with problems.
func TestReaderThousandLines(t *testing.T) {
	var buf bytes.Buffer
	if err := GenerateRequests(&buf, 1000, 1, bigWorld(50, 50), MixedGenOptions()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1000 {
		t.Fatalf("%d lines generated", len(lines))
	}
	r := NewReader(&buf)
	n, bad := 0, 0
	for r.Scan() {
		l := r.Line()
		n++
		if l.No != n {
			t.Fatalf("line number %d, want %d", l.No, n)
		}
		req, err := DecodeLine([]byte(lines[n-1]))
		if (err == nil) != (l.Err == nil) || !reflect.DeepEqual(req, l.Req) {
			t.Fatalf("line %d: Reader gives %+v, %v; DecodeLine %+v, %v", n, l.Req, l.Err, req, err)
		}
		if l.Err != nil {
			bad++
		}
	}
	if err := r.Err(); err != nil || n != 1000 {
		t.Fatalf("read %d lines, error %v", n, err)
	}
	if bad == 0 || bad > 100 {
		t.Errorf("%d bad lines of 1000 with MixedGenOptions", bad)
	}
}

// TestReaderReadError checks that an error of the source stops the Reader
// and is reported, after the whole lines read before it.
func TestReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	in := txLine("a") + "\n" + txLine("b") + "\n" + txLine("c")[:10]
	r := NewReader(io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom)))
	got := scanAll(t, r)
	if strings.Join(got, "|") != "1 ok a|2 ok b" {
		t.Errorf("lines %q", got)
	}
	if !errors.Is(r.Err(), boom) {
		t.Errorf("Err() = %v, want boom", r.Err())
	}

	// Also in the middle of a long line.
	r = NewReaderSize(io.MultiReader(strings.NewReader(strings.Repeat("x", 100)), iotest.ErrReader(boom)), 10)
	if got := scanAll(t, r); len(got) != 0 || !errors.Is(r.Err(), boom) {
		t.Errorf("lines %q, Err() = %v", got, r.Err())
	}
}

func BenchmarkReader(b *testing.B) {
	var buf bytes.Buffer
	const n = 100_000
	if err := GenerateRequests(&buf, n, 1, bigWorld(1000, 1000), GenOptions{}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(data))
		lines := 0
		for r.Scan() {
			if r.Line().Err != nil {
				b.Fatal(r.Line().Err)
			}
			lines++
		}
		if lines != n {
			b.Fatalf("%d lines", lines)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/line")
}
