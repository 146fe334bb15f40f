package jsonx

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// MaxDepth is how deeply arrays and objects may nest in a JSON document
// the relay parses: request bodies, WebSocket messages, upstream answers,
// events and error bodies. gjson validates recursively, one stack frame per
// level, so an unchecked document of a few million brackets overflows the
// goroutine stack, which no recover catches. Real Responses documents nest
// a few dozen levels (tool schemas included).
const MaxDepth = 512

// DepthExceeds reports whether b nests arrays and objects more than max
// levels deep: {} and [] are one level, a scalar none. max 0 means
// MaxDepth; a negative max turns the check off (false).
//
// It neither recurses nor allocates, and it is meant to run before any
// recursive parser sees untrusted bytes: one scan, after a vectorized
// count of opening brackets that spares it when there are no more than
// max. Brackets inside strings (escaped quotes included) do not count. It
// does not validate:
// on invalid JSON it counts what a parser would have to descend through
// before it failed, ignoring a closing bracket with none open, so a
// document it passes never takes a parser deeper than max.
func DepthExceeds(b []byte, max int) bool {
	if max == 0 {
		max = MaxDepth
	} else if max < 0 {
		return false
	}
	// Each level takes an opening bracket: a document with few of them
	// needs no scan (most events are shorter than max; counting is
	// vectorized and much faster than the scan).
	if len(b) <= max || bytes.Count(b, openBracket)+bytes.Count(b, openBrace) <= max {
		return false
	}
	return scanDepth(b, max)
}

// scanDepth is DepthExceeds' scan.
func scanDepth(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			end := stringEnd(b, i+1)
			if end < 0 {
				return false // unterminated: no structure follows
			}
			i = end
		case '[', '{':
			depth++
			if depth > max {
				return true
			}
		case ']', '}':
			if depth > 0 {
				depth--
			}
		}
	}
	return false
}

var openBracket, openBrace = []byte("["), []byte("{")

// stringEnd is the index of the quote that closes the string whose
// contents start at b[start], or -1.
func stringEnd(b []byte, start int) int {
	// Most strings (keys, types, ids) are short: eight bytes at a time
	// find their end before a call to IndexByte would have paid for itself.
	i := start
	for n := min(len(b), start+shortString); i+8 <= n; {
		m := quoteOrBackslash(binary.LittleEndian.Uint64(b[i:]))
		if m == 0 {
			i += 8
			continue
		}
		i += bits.TrailingZeros64(m) >> 3
		if b[i] == '"' {
			return i
		}
		i += 2 // a backslash and the byte it escapes
	}
	if i >= len(b) {
		return -1
	}
	// A quote is escaped when an odd run of backslashes precedes it; each
	// backslash is looked at once, so the scan stays linear.
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		k := i - 1
		for k >= start && b[k] == '\\' {
			k--
		}
		if (i-1-k)%2 == 0 {
			return i
		}
		i++
	}
}

// shortString is how far stringEnd looks eight bytes at a time.
const shortString = 64

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// quoteOrBackslash has the high bit set in the lowest byte of w (little
// endian) that is a quote or a backslash; bytes above it may be marked
// falsely (a borrow), which the caller never looks at.
func quoteOrBackslash(w uint64) uint64 {
	q := w ^ ('"' * ones)
	s := w ^ ('\\' * ones)
	return ((q-ones)&^q | (s-ones)&^s) & highs
}

// Members calls fn for each member of the top-level object in b, in
// order, with the key as it stands between its quotes (escapes not
// decoded) and the value's bytes, and checks the nesting depth in the same
// pass, as DepthExceeds does with max. It reports whether the depth
// exceeds max; fn may then have seen only some members. The members are
// meaningful only when b is valid JSON, which the caller checks after
// (its parser is then safe to run); fn is not called when the top level
// is not an object.
func Members(b []byte, max int, fn func(key, value []byte)) bool {
	if max == 0 {
		max = MaxDepth
	} else if max < 0 {
		max = int(^uint(0) >> 1)
	}
	depth := 0
	obj := false     // the top level is an object
	keyNext := false // at depth 1, the next string is a key
	var key []byte
	val := -1 // where the current member's value starts, or -1
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			end := stringEnd(b, i+1)
			if end < 0 {
				return false
			}
			if keyNext && depth == 1 {
				key, keyNext = b[i+1:end], false
			}
			i = end
		case '[', '{':
			depth++
			if depth > max {
				return true
			}
			if depth == 1 {
				obj = c == '{'
				keyNext = obj
			}
		case ']', '}':
			if depth == 1 && val >= 0 {
				fn(key, trimSpace(b[val:i]))
				val = -1
			}
			if depth > 0 {
				depth--
			}
		case ':':
			if depth == 1 && obj && val < 0 && key != nil {
				val = i + 1
			}
		case ',':
			if depth == 1 && obj {
				if val >= 0 {
					fn(key, trimSpace(b[val:i]))
					val = -1
				}
				key, keyNext = nil, true
			}
		}
	}
	return false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Complete reports whether b is one whole JSON object or array as far as
// its structure goes: brackets balance outside strings, every string ends,
// nothing but space follows the last bracket, and it nests at most max
// levels (0: MaxDepth). It does not check the tokens between (a bare word
// where a value should be passes); it is the cheap check for bytes whose
// fields are read one by one and whose strings are re-encoded, where a
// truncated document is the realistic fault.
func Complete(b []byte, max int) bool {
	if max == 0 {
		max = MaxDepth
	}
	b = trimSpace(b)
	if len(b) == 0 || b[0] != '{' && b[0] != '[' {
		return false
	}
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			end := stringEnd(b, i+1)
			if end < 0 {
				return false
			}
			i = end
		case '[', '{':
			if depth++; depth > max {
				return false
			}
		case ']', '}':
			if depth--; depth < 0 {
				return false
			}
			if depth == 0 && i != len(b)-1 {
				return false // something follows the document
			}
		}
	}
	return depth == 0
}
