package relaytest

import (
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/relaykit/responsesrelay/internal/jsonx"
)

// The fake builds every JSON document by appending to a reused buffer: the
// streaming path writes hundreds of events per turn and must stay cheap
// enough to benchmark a relay against.

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string literal.
func appendString(b []byte, s string) []byte { return jsonx.AppendString(b, s) }

// appendStringOrNull appends s as a JSON string, or null when s is empty.
func appendStringOrNull(b []byte, s string) []byte { return jsonx.AppendStringOrNull(b, s) }

// appendRawOr appends raw JSON taken from the request, or def when absent.
func appendRawOr(b []byte, raw, def string) []byte {
	if raw == "" {
		return append(b, def...)
	}
	return append(b, raw...)
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// compactJSON drops the whitespace between tokens of a valid JSON value, so
// that values echoed from a pretty-printed request fit on one SSE data line.
func compactJSON(raw string) string {
	if !strings.ContainsAny(raw, "\n\r") {
		return raw
	}
	b := make([]byte, 0, len(raw))
	inString, escaped := false, false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// newID returns prefix followed by n hex digits (n <= 32).
func newID(prefix string, n int) string {
	var buf [40]byte
	b := append(buf[:0], prefix...)
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 0; i < n; i++ {
		var v uint64
		if i < 16 {
			v = hi >> (4 * i)
		} else {
			v = lo >> (4 * (i - 16))
		}
		b = append(b, hexDigits[v&0xf])
	}
	return string(b)
}
