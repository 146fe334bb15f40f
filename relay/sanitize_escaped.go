package relay

import (
	"bytes"
	"slices"
)

// maxUnescape is how many levels of JSON escaping are undone when looking
// for a key: one for a JSON string, one more for JSON quoted inside a JSON
// string (an error message that carries another service's JSON answer).
const maxUnescape = 2

// keyMask is one stretch to replace, in the coordinates of the text it was
// found in until it is carried back to the original bytes.
type keyMask struct {
	start, end int
	with       string
}

// sanitizeEscaped is sanitize for a body with escapes. It searches the body
// as written and as a JSON decoder would read it (each level of unescaping
// in turn), carries every find back to the original bytes, and replaces
// those whole, escapes included. A body with no find is returned as is.
func sanitizeEscaped(raw []byte, secrets []string) []byte {
	levels := [][]byte{raw}
	for len(levels) <= maxUnescape {
		prev := levels[len(levels)-1]
		if bytes.IndexByte(prev, '\\') < 0 {
			break
		}
		levels = append(levels, unescape(prev))
	}
	var found []keyMask
	for l := len(levels) - 1; l >= 0; l-- {
		ms := findKeys(levels[l], secrets)
		for k := l; k >= 1; k-- {
			toOuter(levels[k-1], ms)
		}
		found = append(found, ms...)
	}
	if len(found) == 0 {
		return raw
	}
	found = mergeMasks(found)
	out := make([]byte, 0, len(raw))
	at := 0
	for _, m := range found {
		out = append(out, raw[at:m.start]...)
		out = append(out, m.with...)
		at = m.end
	}
	return append(out, raw[at:]...)
}

// findKeys finds the secrets and the sk-/rk- key fragments in text (the
// rules of sanitize and maskKeyFragments), sorted and not overlapping.
func findKeys(text []byte, secrets []string) []keyMask {
	var ms []keyMask
	for _, s := range secrets {
		if len(s) < 6 {
			continue
		}
		for i := 0; ; {
			j := bytes.Index(text[i:], []byte(s))
			if j < 0 {
				break
			}
			ms = append(ms, keyMask{i + j, i + j + len(s), "[redacted]"})
			i += j + len(s)
		}
	}
	for i := 0; i < len(text); {
		j := bytes.Index(text[i:], []byte("k-"))
		if j < 0 {
			break
		}
		k := i + j
		i = k + 2
		if k == 0 || (text[k-1] != 's' && text[k-1] != 'r') || keyCharBefore(text, k-1) {
			continue
		}
		end := k + 2
		for end < len(text) && (isKeyChar(text[end]) || text[end] == '*' || text[end] == '.') {
			end++
		}
		if end-(k+2) >= 3 {
			ms = append(ms, keyMask{k - 1, end, string(text[k-1]) + "k-***"})
		}
		i = end
	}
	return mergeMasks(ms)
}

// mergeMasks sorts masks by start and joins overlapping ones (the first,
// longest, keeps its replacement).
func mergeMasks(ms []keyMask) []keyMask {
	slices.SortFunc(ms, func(a, b keyMask) int {
		if a.start != b.start {
			return a.start - b.start
		}
		return b.end - a.end
	})
	out := ms[:0]
	for _, m := range ms {
		if n := len(out); n > 0 && m.start < out[n-1].end {
			out[n-1].end = max(out[n-1].end, m.end)
			continue
		}
		out = append(out, m)
	}
	return out
}

// toOuter moves sorted, non-overlapping masks from the coordinates of
// unescape(outer) to those of outer: each decoded byte is one unit of
// outer (a byte or a whole escape).
func toOuter(outer []byte, ms []keyMask) {
	i, v := 0, 0
	at := func(target int) int {
		for v < target {
			_, n := unescapeUnit(outer, i)
			i += n
			v++
		}
		return i
	}
	for k := range ms {
		ms[k].start = at(ms[k].start)
		ms[k].end = at(ms[k].end)
	}
}

// unescape decodes JSON escapes anywhere in b (inside strings or not: a
// key must not survive in any spelling). Each unit becomes one byte; a
// \u escape of a non-ASCII character becomes 0xFF, which no key contains.
func unescape(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		c, n := unescapeUnit(b, i)
		out = append(out, c)
		i += n
	}
	return out
}

// unescapeUnit decodes the unit at b[i]: a JSON escape (\" \\ \/ \b \f
// \n \r \t \uXXXX, hex in either case) or a single byte (a backslash that
// starts no escape stands for itself).
func unescapeUnit(b []byte, i int) (byte, int) {
	c := b[i]
	if c != '\\' || i+1 >= len(b) {
		return c, 1
	}
	switch e := b[i+1]; e {
	case '"', '\\', '/':
		return e, 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		if i+6 <= len(b) {
			r := 0
			for _, h := range b[i+2 : i+6] {
				d := hexDigit(h)
				if d < 0 {
					return c, 1
				}
				r = r<<4 | d
			}
			if r < 0x80 {
				return byte(r), 6
			}
			return 0xFF, 6
		}
	}
	return c, 1
}

func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
