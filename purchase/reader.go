package purchase

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxLineBytes is the longest line a Reader made by NewReader accepts.
const DefaultMaxLineBytes = 64 << 10

// ErrLineTooLong is wrapped by the error of a line longer than the Reader's
// limit. The line is skipped and reading goes on with the next one.
var ErrLineTooLong = errors.New("line too long")

// Line is one non-blank input line: its request, or why it has none.
type Line struct {
	// No is the line's number in the input, counting from 1 and counting
	// blank lines, so that it matches what an editor shows.
	No int
	// Req is the decoded request when Err is nil. When Err is not nil it is
	// zero except, maybe, TxID (see DecodeLine).
	Req Request
	// Err is nil, an error wrapping ErrLineTooLong, a *SyntaxError or a
	// *FieldError. Callers show it as "line <No>: <Err>".
	Err error
}

// Reader reads requests from JSON Lines, one request a line:
//
//	r := purchase.NewReader(f)
//	for r.Scan() {
//		l := r.Line()
//		...
//	}
//	if err := r.Err(); err != nil { ... } // reading failed
//
// Lines end with "\n" or "\r\n"; the last line needs no newline. Lines that
// hold only spaces, tabs or a '\r' are skipped. A UTF-8 byte order mark at
// the very start is skipped. A bad line, including a too long one, is
// returned with its error and the stream goes on: only an error of the
// underlying io.Reader stops it.
type Reader struct {
	br   *bufio.Reader
	max  int
	no   int
	line Line
	err  error
	done bool
}

// NewReader returns a Reader with a line limit of DefaultMaxLineBytes.
func NewReader(r io.Reader) *Reader { return NewReaderSize(r, DefaultMaxLineBytes) }

// NewReaderSize returns a Reader that accepts lines of at most maxLine bytes,
// not counting the line end. A maxLine <= 0 means DefaultMaxLineBytes. The
// Reader buffers maxLine+2 bytes.
func NewReaderSize(r io.Reader, maxLine int) *Reader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	return &Reader{br: bufio.NewReaderSize(r, maxLine+2), max: maxLine}
}

// Scan reads up to the next non-blank line and decodes it. It returns false
// at the end of the input or when reading fails (see Err).
func (r *Reader) Scan() bool {
	for !r.done {
		data, err := r.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			r.no++
			for errors.Is(err, bufio.ErrBufferFull) { // discard the rest of the line
				_, err = r.br.ReadSlice('\n')
			}
			if !r.finish(err) {
				return false
			}
			r.line = Line{No: r.no, Err: r.tooLong()}
			return true
		}
		if !r.finish(err) || len(data) == 0 {
			return false
		}
		r.no++
		data = bytes.TrimSuffix(data, []byte("\n"))
		data = bytes.TrimSuffix(data, []byte("\r"))
		if r.no == 1 {
			data = bytes.TrimPrefix(data, []byte("\uFEFF"))
		}
		if len(data) > r.max {
			r.line = Line{No: r.no, Err: r.tooLong()}
			return true
		}
		if blank(data) {
			continue
		}
		req, err := DecodeLine(data)
		r.line = Line{No: r.no, Req: req, Err: err}
		return true
	}
	return false
}

// finish takes the error of a read: nil or io.EOF (the input ends after
// this line) let the line through, any other error stops the Reader.
func (r *Reader) finish(err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF):
		r.done = true
		return true
	default:
		r.done = true
		r.err = err
		return false // a line cut by a read error is not a line
	}
}

func (r *Reader) tooLong() error {
	return fmt.Errorf("%w (limit %d bytes)", ErrLineTooLong, r.max)
}

func blank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// Line returns the line that the last call to Scan read.
func (r *Reader) Line() Line { return r.line }

// Err returns the error that stopped reading, or nil at the end of the input.
func (r *Reader) Err() error { return r.err }
