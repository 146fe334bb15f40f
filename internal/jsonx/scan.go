package jsonx

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// Scanner reads one JSON document front to back and validates every token
// as it goes (RFC 8259 grammar; strings may hold invalid UTF-8, as gjson
// and most parsers allow), so that a caller reads the few members it needs
// and skips the rest in a single pass, with no tree, no callback and no
// allocation. Nesting is bounded by Max: it recurses at most that deep,
// only in Skip.
//
// Errors are sticky: after the first one, Err is true, every read returns
// its zero value and every loop ends, so a caller checks Err once, at the
// end (after End), and discards what it read on the way.
//
// A caller walks an object as
//
//	if s.BeginObject() {
//		for s.NextMember() {
//			key, _ := s.Key()
//			... read or s.Skip() the value
//		}
//	}
//
// and an array with BeginArray and NextElement likewise.
type Scanner struct {
	b     []byte
	i     int
	depth int
	max   int
	first bool // the container just opened: no comma before its first entry
	// Err reports that the document is not valid JSON, nests deeper than
	// the maximum, or was not read the way its grammar requires.
	Err bool
}

// Reset starts a scan of b allowing max levels of nesting (0: MaxDepth).
func (s *Scanner) Reset(b []byte, max int) {
	if max <= 0 {
		max = MaxDepth
	}
	*s = Scanner{b: b, max: max}
}

// ResumeObject continues a scan of b inside its top-level object at
// offset at, just after a member's value, as if b[:at] had been read (the
// caller knows it to be valid: the same bytes were scanned before). The
// next call is NextMember.
func (s *Scanner) ResumeObject(b []byte, max, at int) {
	s.Reset(b, max)
	s.i, s.depth = at, 1
}

// Enter consumes lit when the document continues with it (after space)
// and reports whether it did. lit must be the valid start of a value
// that opens n arrays and objects, the last of them just opened, such as
// `[{"index":0,"delta":{`: the caller then reads that last one's entries.
// It spares a caller reading, token by token, bytes it expects.
func (s *Scanner) Enter(lit string, n int) bool {
	s.space()
	if s.Err || len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit || s.depth+n > s.max {
		return false
	}
	s.i += len(lit)
	s.depth += n
	s.first = true
	return true
}

// Offset is where the scan stands: after Peek, where the next token
// starts; after a read, just past the value read. A caller that keeps a
// value's bytes takes the offsets around its read.
func (s *Scanner) Offset() int { return s.i }

// Since is the document's bytes from offset start to where the scan stands.
func (s *Scanner) Since(start int) []byte { return s.b[start:s.i] }

func (s *Scanner) fail() {
	s.Err = true
	s.i = len(s.b) // every later read sees the end
}

func (s *Scanner) space() {
	// Every byte of space is at most ' ': compact JSON leaves after one
	// comparison.
	for s.i < len(s.b) && s.b[s.i] <= ' ' {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// Peek is the first byte of the next token, or 0 at the end.
func (s *Scanner) Peek() byte {
	if s.i < len(s.b) && s.b[s.i] > ' ' {
		return s.b[s.i] // compact JSON: no space to skip
	}
	s.space()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// BeginObject consumes "{" and reports whether the next value is an object
// (false without consuming anything when it is another value).
func (s *Scanner) BeginObject() bool { return s.begin('{') }

// BeginArray consumes "[" likewise.
func (s *Scanner) BeginArray() bool { return s.begin('[') }

func (s *Scanner) begin(c byte) bool {
	if s.Peek() != c {
		return false
	}
	s.i++
	if s.depth++; s.depth > s.max {
		s.fail()
		return false
	}
	s.first = true
	return true
}

// NextMember reports whether the object holds another member, consuming
// the comma before it, or the closing brace when there is none.
func (s *Scanner) NextMember() bool {
	c := s.Peek()
	switch {
	case c == '}':
		s.i++
		s.depth--
		s.first = false
		return false
	case s.first:
		s.first = false
	case c == ',':
		s.i++
		c = s.Peek()
	default:
		s.fail()
		return false
	}
	if c != '"' {
		s.fail() // a key must follow "{" or ","
		return false
	}
	return true
}

// NextElement reports whether the array holds another element, likewise.
func (s *Scanner) NextElement() bool { return s.next(']') }

func (s *Scanner) next(end byte) bool {
	if s.Err {
		return false
	}
	switch c := s.Peek(); {
	case c == end:
		s.i++
		s.depth--
		s.first = false
		return false
	case s.first:
		s.first = false
		return true
	case c == ',':
		s.i++
		if p := s.Peek(); p == end || p == 0 {
			s.fail() // a trailing comma
			return false
		}
		return true
	}
	s.fail()
	return false
}

// Key reads a member's key and the colon after it; see String.
func (s *Scanner) Key() ([]byte, StringFlags) {
	k, f := s.String()
	if s.i < len(s.b) && s.b[s.i] == ':' {
		s.i++
		return k, f
	}
	if s.Peek() != ':' {
		s.fail()
		return nil, 0
	}
	s.i++
	return k, f
}

// StringFlags describe a string's raw content.
type StringFlags uint8

const (
	// Escaped: the content holds a backslash escape.
	Escaped StringFlags = 1 << iota
	// Rewritten: decoding the content and encoding it again with
	// AppendString would not give the same bytes: an escape other than
	// \" \\ \n \r \t, a byte not ASCII that is invalid UTF-8 or begins
	// U+2028 or U+2029. Only set when the content has such a byte or escape;
	// see Verbatim.
	rewritten
	// nonASCII: the content holds a byte above 0x7f, not yet checked.
	nonASCII
)

// Verbatim reports whether raw, a string's content with flags from
// String, is exactly what AppendString writes between the quotes for the
// decoded string, so that it can be copied as it stands.
func Verbatim(raw []byte, f StringFlags) bool {
	if f&rewritten != 0 {
		return false
	}
	if f&nonASCII == 0 {
		return true
	}
	for i := 0; i < len(raw); {
		c := raw[i]
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && n == 1 || r == '\u2028' || r == '\u2029' {
			return false
		}
		i += n
	}
	return true
}

// String reads a string and returns its content between the quotes, as it
// stands (escapes not decoded), valid as long as the document is.
func (s *Scanner) String() ([]byte, StringFlags) {
	if s.Peek() != '"' {
		s.fail()
		return nil, 0
	}
	b := s.b
	start := s.i + 1
	i := start
	var f StringFlags
	var high uint64
	for {
		// Eight bytes at a time up to the first quote, backslash or
		// control byte; bytes past it may be marked too, never looked at.
		for i+8 <= len(b) {
			w := binary.LittleEndian.Uint64(b[i:])
			high |= w
			if m := stringSpecial(w); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				goto special
			}
			i += 8
		}
		for i < len(b) {
			c := b[i]
			if c == '"' || c == '\\' || c < 0x20 {
				goto special
			}
			high |= uint64(c)
			i++
		}
		s.fail() // unterminated
		return nil, 0
	special:
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			if high&highs != 0 {
				f |= nonASCII
			}
			return b[start:i], f
		case c == '\\':
			f |= Escaped
			if i+1 >= len(b) {
				s.fail()
				return nil, 0
			}
			switch b[i+1] {
			case '"', '\\', 'n', 'r', 't':
				i += 2
			case '/', 'b', 'f':
				f |= rewritten
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					s.fail()
					return nil, 0
				}
				f |= rewritten
				i += 6
			default:
				s.fail()
				return nil, 0
			}
		default:
			s.fail() // a control byte must be escaped
			return nil, 0
		}
	}
}

// stringSpecial has the high bit set in the lowest byte of w (little
// endian) that is a quote, a backslash or below 0x20; bytes above it may be
// marked falsely (a borrow).
func stringSpecial(w uint64) uint64 {
	q := w ^ ('"' * ones)
	s := w ^ ('\\' * ones)
	return ((q-ones)&^q | (s-ones)&^s | (w-0x20*ones)&^w) & highs
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Number reads a number and returns its bytes.
func (s *Scanner) Number() []byte {
	s.space()
	b, start := s.b, s.i
	i := start
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		s.fail()
		return nil
	}
	if i < len(b) && b[i] == '.' {
		if i++; i >= len(b) || b[i] < '0' || b[i] > '9' {
			s.fail()
			return nil
		}
		i = digits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			s.fail()
			return nil
		}
		i = digits(b, i)
	}
	s.i = i
	return b[start:i]
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// Literal reads true, false or null and returns its first byte ('t', 'f',
// 'n'), or 0 when the next token is none of them.
func (s *Scanner) Literal() byte {
	c := s.Peek()
	var lit string
	switch c {
	case 't':
		lit = "true"
	case 'f':
		lit = "false"
	case 'n':
		lit = "null"
	default:
		s.fail()
		return 0
	}
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		s.fail()
		return 0
	}
	s.i += len(lit)
	return c
}

// Skip reads one value of any kind.
func (s *Scanner) Skip() {
	switch c := s.Peek(); {
	case c == '{':
		s.BeginObject()
		for s.NextMember() {
			s.Key()
			s.Skip()
		}
	case c == '[':
		s.BeginArray()
		for s.NextElement() {
			s.Skip()
		}
	case c == '"':
		s.String()
	case c == '-' || '0' <= c && c <= '9':
		s.Number()
	default:
		s.Literal()
	}
}

// End reports whether the document was read whole and valid: nothing but
// space follows, every container was closed, and no error came on the way.
func (s *Scanner) End() bool {
	if s.space(); s.Err || s.depth != 0 || s.i < len(s.b) {
		s.fail()
		return false
	}
	return true
}
